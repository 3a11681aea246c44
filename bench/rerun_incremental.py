#!/usr/bin/env python
"""Incremental reruns: what `faceproc run` costs when nothing, or only a little, is new.

In one invocation, on a private copy of the fetched dataset (COPY) and a fresh output (OUT):

1. first run:  `faceproc run --input COPY --output OUT --models cnn,facenet`: everything from
   scratch (preprocess all 118 photos, train both models, evaluate). Only two of the four models,
   to keep the benchmark short; resnet50/resnet50_imagenet would add the same kind of work to every
   run that trains.
2. rerun, nothing new: the same command again.
3. rerun, 5 new photos: 5 training photos (one per person, all with a face in run 1) copied under
   new names with one byte appended after the JPEG end-of-image marker, so each is a new file with
   a new SHA-256 and the same pixels; then the same command.

With `--scale K` the train split holds K copies of each train photo (copy i with i 0x01 bytes
appended after the JPEG end-of-image marker, where the new photos of step 3 get one 0x00: a new
file and SHA-256, the same pixels), so the first run trains on K times the photos while val stays
the 25 fetched ones: what the ratios look like when the data has grown and the 5 new photos are a
smaller share of it.

Each run is a subprocess, timed wall clock end to end (Python imports, Ray start-up, the run, Ray
shut-down), next to the run's own `seconds` from OUT/runs/<run>.json and the CPU seconds of the
run's whole process tree (less sensitive to other jobs on the machine than wall time). Photos
decoded by a run are `processed` from OUT/runs/<run>.preprocess.json; a run with nothing to
preprocess writes no such file, and then its counts in runs/<run>.json must show 0 new and 0
changed: processed = 0. The expected values are 0 and 5 (--new); the script exits 1 when they
differ, and stops when a run fails.

faceproc starts its own local Ray for every run (RAY_ADDRESS=local), so the benchmark never joins
another job's cluster. The machine may be shared: the load average and the cores other processes
took during each run (machine busy cores from /proc/stat minus the CPU time of the run's process
tree) are printed with the numbers.

    .venv/bin/python bench/rerun_incremental.py [--models cnn,facenet] [--new 5] [--scale K]
        [--out /tmp/DIR] [--set K=V]

Results: a table on stdout (and as Markdown), DIR/results.json, logs in DIR/logs/ (DIR = --out).
Write-up: docs/benchmarks.md, "Incremental reruns".
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import machine  # noqa: E402  (bench/machine.py)

ROOT = Path(__file__).resolve().parents[1]
DATASET = ROOT / "data" / "5-celebrity-faces-dataset"
FACEPROC = Path(sys.executable).parent / "faceproc"
ENV = {"RAY_ADDRESS": "local", "TF_CPP_MIN_LOG_LEVEL": "3", "TF_USE_LEGACY_KERAS": "1",
       "PYTHONWARNINGS": "ignore::DeprecationWarning"}
EXPECTED_PROCESSED = {"rerun_nothing_new": 0}  # rerun_new_photos: --new


# --------------------------------------------------------------------------- timing


def run_timed(name: str, cmd: list[str], log_path: Path) -> dict:
    """Run `cmd`: exit code, wall seconds, CPU seconds of its process tree (driver, raylet, GCS,
    Ray workers; polled every 0.5 s, so a slight undercount), machine load and busy cores."""
    before = machine.snapshot()
    print(f"[{time.strftime('%H:%M:%S')}] {name} (load {before.load}) ...", flush=True)
    run = machine.run_watched(cmd, log_path, env={**os.environ, **ENV}, cwd=ROOT, poll_seconds=0.5, tree_every=1)
    after = machine.snapshot()
    busy_cores = machine.busy_cores(before, after)
    wall, tree_cpu = run.wall, run.tree_cpu
    other = machine.other_cores(busy_cores, tree_cpu, wall)
    result = {"code": run.code, "wall_seconds": round(wall, 1),
              "tree_cpu_seconds": round(tree_cpu, 1), "machine_busy_cores": round(busy_cores, 2),
              "other_jobs_cores": round(other, 2), "load_before": before.load, "load_after": after.load,
              "log": str(log_path)}
    print(f"[{time.strftime('%H:%M:%S')}] {name}: exit {result['code']}, {wall:.1f} s, own CPU "
          f"{tree_cpu:.0f} s, machine busy {busy_cores:.2f} of {machine.CPUS} cores (other jobs "
          f"~{other:.2f}), load {result['load_after']}", flush=True)
    return result


# --------------------------------------------------------------------------- the runs


def run_records(out: Path) -> set[str]:
    runs = out / "runs"
    return {p.name[: -len(".json")] for p in runs.glob("*.json") if not p.name.endswith(".preprocess.json")} \
        if runs.is_dir() else set()


def faceproc_run(name: str, copy: Path, out: Path, models: str, logs: Path, settings: list[str]) -> dict:
    before = run_records(out)
    cmd = [str(FACEPROC), "run", "--input", str(copy), "--output", str(out), "--models", models,
           *(arg for setting in settings for arg in ("--set", setting))]
    timing = run_timed(name, cmd, logs / f"{name}.log")
    new = sorted(run_records(out) - before)
    if timing["code"] != 0 or len(new) != 1:
        tail = Path(timing["log"]).read_text(errors="replace")[-4000:]
        raise SystemExit(f"{name} failed (exit {timing['code']}, new run records {new}):\n{tail}")
    run_id = new[0]
    record = json.loads((out / "runs" / f"{run_id}.json").read_text())
    pre_path = out / "runs" / f"{run_id}.preprocess.json"
    if pre_path.exists():
        pre = json.loads(pre_path.read_text())
        processed, pre_seconds, source = pre["processed"], pre["seconds"], "preprocess.json"
    else:  # no preprocess work: the plan found nothing new or changed
        counts = record["counts"]
        if counts["new"] or counts["changed"]:
            raise SystemExit(f"{name}: no {pre_path.name} but counts say {counts}")
        processed, pre_seconds, source = 0, None, "runs/<run>.json counts (no preprocess.json)"
    training = record.get("training") or []
    return {
        "name": name, "run_id": run_id, **timing,
        "run_seconds": record["seconds"], "counts": record["counts"], "stages": record["stages"],
        "processed": processed, "processed_source": source, "preprocess_seconds": pre_seconds,
        "training": training,
        "train_seconds": round(sum(t.get("train_seconds") or 0 for t in training
                                   if not t.get("up_to_date")), 1),
        "evaluated": record["stages"].get("evaluate", "").startswith("ran"),
    }


def add_new_photos(copy: Path, out: Path, count: int) -> list[dict]:
    """Copy `count` train photos (JPEGs with a face in the first run, one per person in turn) under
    new names, one byte appended after the EOI marker: new files, new SHA-256, same pixels."""
    import pyarrow.parquet as pq

    manifest = pq.read_table(out / "manifest.parquet").to_pylist()
    known = {row["sha256"] for row in manifest}
    by_person: dict[str, list[Path]] = {}
    for row in sorted(manifest, key=lambda r: r["path"]):
        path = Path(row["path"])
        data = path.read_bytes() if path.is_file() else b""
        if (row["split"] == "train" and row["status"] == "ok" and data.startswith(b"\xff\xd8")
                and data.endswith(b"\xff\xd9")):
            by_person.setdefault(row["label"], []).append(path)
    added: list[dict] = []
    queues = [list(paths) for _, paths in sorted(by_person.items())]
    while len(added) < count and any(queues):
        for queue in queues:
            if queue and len(added) < count:
                source = queue.pop(0)
                target = source.with_name(f"{source.stem}-rerun-new-{len(added)}{source.suffix}")
                data = source.read_bytes() + b"\x00"  # after EOI: decoders stop before it
                sha = hashlib.sha256(data).hexdigest()
                assert sha not in known and not target.exists(), target
                target.write_bytes(data)
                added.append({"path": str(target), "from": source.name, "sha256": sha})
    if len(added) != count:
        raise SystemExit(f"only {len(added)} suitable train photos to copy, {count} asked")
    return added


def scale_train_split(copy: Path, times: int) -> int:
    """Add `times - 1` byte-appended copies of every train JPEG (see --scale); the photos added."""
    originals = sorted(p for p in (copy / "train").glob("*/*") if p.is_file() and not p.name.startswith("."))
    added = 0
    for source in originals:
        data = source.read_bytes()
        if not (data.startswith(b"\xff\xd8") and data.endswith(b"\xff\xd9")):
            continue
        for i in range(1, times):
            source.with_name(f"{source.stem}-scale-{i}{source.suffix}").write_bytes(data + b"\x01" * i)
            added += 1
    return added


# --------------------------------------------------------------------------- report


def _fmt(value, spec: str = "") -> str:
    return "-" if value is None else format(value, spec)


def table_rows(results: dict) -> list[list[str]]:
    first = results["runs"][0]
    rows = []
    for run in results["runs"]:
        trained = ", ".join(f"{t['model']} {t['train_seconds']:.0f} s" for t in run["training"]
                            if not t.get("up_to_date")) or "none (up to date)"
        rows.append([
            run["name"], f"{run['wall_seconds']:.1f}", f"{run['wall_seconds'] / first['wall_seconds']:.3f}",
            f"{run['run_seconds']:.1f}", f"{run['run_seconds'] / first['run_seconds']:.3f}",
            f"{run['tree_cpu_seconds']:.0f}", f"{run['tree_cpu_seconds'] / first['tree_cpu_seconds']:.3f}",
            str(run["processed"]), _fmt(run["preprocess_seconds"], ".1f"), trained,
            "ran" if run["evaluated"] else "skipped",
            f"{run['other_jobs_cores']:.2f}", f"{run['load_before']} / {run['load_after']}",
        ])
    return rows


HEADER = ["run", "wall s", "x first (wall)", "run's own s", "x first (own)", "CPU s", "x first (CPU)",
          "photos decoded",
          "preprocess s", "trained", "evaluate", "other jobs' cores", "load before / after"]


def print_table(results: dict) -> None:
    rows = table_rows(results)
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(HEADER)]
    line = "  ".join(h.ljust(w) for h, w in zip(HEADER, widths))
    print("\n" + line + "\n" + "-" * len(line))
    for row in rows:
        print("  ".join(c.ljust(w) for c, w in zip(row, widths)))
    print("\nMarkdown:\n")
    print("| " + " | ".join(HEADER) + " |")
    print("|" + "---|" * len(HEADER))
    for row in rows:
        print("| " + " | ".join(row) + " |")
    for check in results["checks"]:
        print(f"{'ok  ' if check['ok'] else 'FAIL'} {check['what']}: {check['got']} (expected {check['expected']})")


# --------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default="cnn,facenet", help="models to train (default cnn,facenet)")
    parser.add_argument("--new", type=int, default=5, help="new photos before the last rerun (default 5)")
    parser.add_argument("--scale", type=int, default=1, metavar="K",
                        help="K copies of each train photo, for a bigger first run (default 1: the dataset as fetched)")
    parser.add_argument("--out", help="work folder (default: a new /tmp/fp-rerun-*)")
    parser.add_argument("--set", dest="settings", action="append", default=[], metavar="KEY=VALUE",
                        help="a faceproc setting for every run, e.g. train.concurrent=true (repeatable)")
    args = parser.parse_args(argv)
    if args.scale < 1:
        parser.error(f"--scale must be at least 1, got {args.scale}")
    if not (DATASET / "train").is_dir():
        raise SystemExit(f"{DATASET} missing: run `faceproc fetch-data` first")

    work = Path(args.out) if args.out else Path(tempfile.mkdtemp(prefix="fp-rerun-", dir="/tmp"))
    copy, out, logs = work / "input", work / "out", work / "logs"
    for path in (copy, out):
        if path.exists():
            shutil.rmtree(path)
    logs.mkdir(parents=True, exist_ok=True)
    shutil.copytree(DATASET, copy)
    scaled = scale_train_split(copy, args.scale) if args.scale > 1 else 0
    photos = sum(1 for p in copy.glob("*/*/*") if p.is_file() and not p.name.startswith("."))

    results: dict = {
        "command": " ".join([Path(sys.executable).name, *sys.argv]), "work": str(work),
        "date_utc": time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime()), "uptime_start": machine.uptime(),
        "models": args.models, "settings": args.settings, "scale": args.scale, "scale_copies": scaled,
        "input_photos": photos, "runs": [],
    }
    print(f"work folder {work}, {photos} photos, models {args.models}\n{results['uptime_start']}", flush=True)

    results["runs"].append(faceproc_run("first_run", copy, out, args.models, logs, args.settings))
    results["runs"].append(faceproc_run("rerun_nothing_new", copy, out, args.models, logs, args.settings))
    results["added"] = add_new_photos(copy, out, args.new)
    print(f"added {len(results['added'])} photos: {', '.join(Path(a['path']).name for a in results['added'])}")
    results["runs"].append(faceproc_run("rerun_new_photos", copy, out, args.models, logs, args.settings))
    results["uptime_end"] = machine.uptime()

    expected = {**EXPECTED_PROCESSED, "rerun_new_photos": args.new}
    results["checks"] = [
        {"what": f"{run['name']} photos decoded", "got": run["processed"], "expected": expected[run["name"]],
         "ok": run["processed"] == expected[run["name"]]}
        for run in results["runs"][1:]
    ]
    (work / "results.json").write_text(json.dumps(results, indent=2))
    print_table(results)
    print(f"\n{results['uptime_end']}\nfull results: {work / 'results.json'}")
    return 0 if all(c["ok"] for c in results["checks"]) else 1


if __name__ == "__main__":
    sys.exit(main())
