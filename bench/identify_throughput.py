#!/usr/bin/env python
"""Identify throughput: `faceproc identify` (Ray Data) against `faceproc predict` (one process, one
photo after another) on the same unlabelled photos, in one invocation.

1. A trained FaceNet: `--model-out OUT` reuses one (any OUT that `faceproc run` or `train` wrote with
   facenet); without it, `faceproc run --models facenet` trains one into DIR/model-out first (untimed).
2. The photos: the fetched dataset's photos replicated to --photos files in one flat folder, every copy
   a distinct file with identical pixels (bench/preprocess_throughput.make_distinct).
3. Timed, each as a subprocess, wall clock end to end (imports, Ray start-up, model loads, the work):
   `faceproc identify --input TREE --output OUT --into DIR/identities` (fresh identities folder),
   `faceproc predict --output OUT --json PHOTO...` on the same photos, and identify again with nothing
   new. Photos/s = photos / wall seconds; the ratio identify / predict is the figure of merit.
   Then after a retrain: a copy of OUT whose facenet `faceproc train --force` trains again (untimed;
   a new model version, the same crop settings), and identify into the same identities folder with
   it, which names the stored faces again instead of reading the photos; against the first identify.
   The driver's peak RSS (the process alone) and the CPU seconds of each process tree are printed too.
4. Agreement: for each photo, the person of identify's most confident face against predict's
   most probable face (the two use the same crop and model, so they should agree).

    .venv/bin/python bench/identify_throughput.py [--photos 200] [--model-out OUT] [--out /tmp/DIR]

Results: a table on stdout and DIR/results.json. Write-up: docs/benchmarks.md, "Identify".
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import machine  # noqa: E402  (bench/machine.py)
from preprocess_throughput import make_distinct, source_files  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
DATASET = ROOT / "data" / "5-celebrity-faces-dataset"
FACEPROC = Path(sys.executable).parent / "faceproc"
ENV = {"RAY_ADDRESS": "local", "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONWARNINGS": "ignore::DeprecationWarning"}


def build_flat_tree(dst: Path, photos: int) -> list[Path]:
    """`photos` distinct files cycling through the dataset's photos, in one folder."""
    shutil.rmtree(dst, ignore_errors=True)
    dst.mkdir(parents=True)
    sources = source_files(DATASET)
    made = []
    for n in range(photos):
        src = sources[n % len(sources)]
        path = dst / f"{n:05d}{src.suffix.lower()}"
        path.write_bytes(make_distinct(src.read_bytes(), f"identify {n}"))
        made.append(path)
    return made


def timed(name: str, cmd: list[str], logs: Path) -> dict:
    before = machine.snapshot()
    run = machine.run_watched(cmd, logs / f"{name}.log", env={**os.environ, **ENV}, cwd=ROOT)
    after = machine.snapshot()
    if run.code != 0:
        tail = (logs / f"{name}.log").read_text(errors="replace")[-3000:]
        raise SystemExit(f"{name} failed with exit code {run.code}:\n{tail}")
    busy = machine.busy_cores(before, after)
    return {"wall": round(run.wall, 1), "peak_rss_mb": round(run.peak_rss_kb / 1024), "cpu_s": round(run.tree_cpu, 1),
            "other_cores": round(machine.other_cores(busy, run.tree_cpu, run.wall), 2), "load": machine.loadavg()}


def identify_verdicts(identities: Path) -> dict[str, str]:
    import pyarrow as pa

    from faceproc.core.manifest import load_manifest
    from faceproc.identify.rows import iter_live_identities

    tables = list(iter_live_identities(str(identities), load_manifest(str(identities)),
                                       ["photo_path", "face_index", "person"]))
    rows = pa.concat_tables(tables).to_pylist() if tables else []
    return {Path(r["photo_path"]).name: r["person"] for r in rows if r["face_index"] == 0}


def predict_verdicts(log: Path) -> dict[str, str]:
    best: dict[str, tuple[float, str]] = {}
    for line in log.read_text(errors="replace").splitlines():
        if not line.startswith("{"):
            continue
        row = json.loads(line)
        if row.get("person") is None:
            continue
        name, score = Path(row["image"]).name, float(row.get("probability") or 0)
        if name not in best or score > best[name][0]:
            best[name] = (score, row["person"])
    return {name: person for name, (_, person) in best.items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--photos", type=int, default=200)
    parser.add_argument("--model-out", type=Path, help="an OUT holding a trained facenet (default: train one)")
    parser.add_argument("--out", type=Path, help="working folder (default: a new temporary one)")
    args = parser.parse_args(argv)
    work = args.out or Path(tempfile.mkdtemp(prefix="fp-identify-bench-"))
    logs = work / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    model_out = args.model_out
    if model_out is None:
        model_out = work / "model-out"
        print(f"training facenet into {model_out} (untimed) ...", flush=True)
        timed("train", [str(FACEPROC), "run", "--output", str(model_out), "--models", "facenet"], logs)
    photos = build_flat_tree(work / "photos", args.photos)
    identities = work / "identities"
    shutil.rmtree(identities, ignore_errors=True)
    print(f"{len(photos)} photos; {machine.uptime()}", flush=True)

    results = {"photos": len(photos), "model_out": str(model_out)}
    identify_cmd = [str(FACEPROC), "identify", "--input", str(work / "photos"), "--output", str(model_out),
                    "--into", str(identities)]
    results["identify"] = timed("identify", identify_cmd, logs)
    results["predict"] = timed("predict", [str(FACEPROC), "predict", "--output", str(model_out), "--json",
                                           *map(str, photos)], logs)
    results["identify_nothing_new"] = timed("identify_again", identify_cmd, logs)
    retrained = work / "retrained-out"
    shutil.rmtree(retrained, ignore_errors=True)
    shutil.copytree(model_out, retrained, ignore=shutil.ignore_patterns("identities", "_ray_train", "_staging"))
    print("training facenet again in a copy of OUT (untimed) ...", flush=True)
    timed("retrain", [str(FACEPROC), "train", "--output", str(retrained), "--models", "facenet", "--force"], logs)
    after_retrain = [*identify_cmd[:identify_cmd.index("--output") + 1], str(retrained), "--into", str(identities)]
    results["identify_after_retrain"] = timed("identify_after_retrain", after_retrain, logs)
    record = json.loads(sorted((identities / "runs").glob("*.identify.json"))[-1].read_text())
    results["identify_after_retrain"].update(photos_read=record["processed"], photos_renamed=record["renamed"])

    ours, theirs = identify_verdicts(identities), predict_verdicts(logs / "predict.log")
    both = sorted(set(ours) & set(theirs))
    results["agreement"] = {"photos_named_by_both": len(both),
                            "same_person": sum(ours[n] == theirs[n] for n in both)}
    for key in ("identify", "predict", "identify_nothing_new", "identify_after_retrain"):
        results[key]["photos_per_s"] = round(len(photos) / results[key]["wall"], 2)
    ratio = results["predict"]["wall"] / results["identify"]["wall"]
    results["ratio_identify_over_predict"] = round(ratio, 2)
    retrain_share = results["identify_after_retrain"]["wall"] / results["identify"]["wall"]
    results["ratio_after_retrain_over_first_identify"] = round(retrain_share, 3)
    (work / "results.json").write_text(json.dumps(results, indent=2))

    print("\n| run | wall s | photos/s | CPU s | driver peak RSS MB | other jobs' cores |\n|---|---|---|---|---|---|")
    for key in ("identify", "predict", "identify_nothing_new", "identify_after_retrain"):
        r = results[key]
        print(f"| {key} | {r['wall']} | {r['photos_per_s']} | {r['cpu_s']} | {r['peak_rss_mb']} | {r['other_cores']} |")
    agree = results["agreement"]
    print(f"\nidentify is {ratio:.2f}x predict's throughput on {len(photos)} photos; "
          f"same person on {agree['same_person']} of {agree['photos_named_by_both']} photos both named")
    again = results["identify_after_retrain"]
    print(f"after a retrain: {again['photos_read']} photos read, {again['photos_renamed']} named again from "
          f"stored faces, in {retrain_share:.2f} of the first identify's wall time")
    print(f"results: {work / 'results.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
