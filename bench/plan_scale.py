"""Planning at scale: a rerun with nothing new on 10k and 100k files, by listing against hashing.

For each size a synthetic tree `<root>/train/person_<k>/<n>.jpg` of small files (distinct random
bytes, not images: they are rejected as not_an_image, so the first run costs reading them, not
MTCNN) is preprocessed once. Then two reruns with nothing new, each in a fresh process so its peak
RSS is its own: the default (size and mtime from the listing decide) and the baseline
`preprocess.verify_hashes=true` (every file re-hashed in the driver, what every rerun did before).
Printed per size: wall seconds and driver peak RSS of the rerun; the bytes the driver read during
a second, warm rerun in the same process (/proc/self/io `rchar`, page-cache hits too; warm, so
module imports do not count) against the input's bytes and against the size of OUT's own files
(manifest and rejects, which a rerun does read); the baseline / listing ratio; last, the growth
from the smallest to the largest size.

`--synthetic-first-run` replaces the first run by a manifest the benchmark writes itself (every
file `ok` with the current settings and its listing entry, as a first run over real photos would
leave it) and the tree's files are empty: that makes a 1M-entry tree cheap (1M inodes, no content,
no decoding), and the reruns then measure what a scheduled rerun of that tree costs the driver.

    python bench/plan_scale.py                   # 10k and 100k files
    python bench/plan_scale.py --sizes 2000      # a quick look
    python bench/plan_scale.py --sizes 1000000 --synthetic-first-run
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

import machine  # noqa: E402  (bench/machine.py)

ROOT = Path(__file__).resolve().parents[1]
FILE_BYTES = 2048
FILES_PER_FOLDER = 1000


def make_tree(root: Path, count: int, file_bytes: int = FILE_BYTES) -> int:
    """`count` files of `file_bytes` distinct random bytes (empty when 0); returns their total size."""
    if (root / ".complete").exists():
        return count * file_bytes
    for index in range(count):
        folder = root / "train" / f"person_{index // FILES_PER_FOLDER:04d}"
        if index % FILES_PER_FOLDER == 0:
            folder.mkdir(parents=True, exist_ok=True)
        (folder / f"{index:07d}.jpg").write_bytes(os.urandom(file_bytes))
    (root / ".complete").write_text("")
    return count * file_bytes


def write_synthetic_manifest(tree: str, out: str) -> dict:
    """The manifest a first run would publish for `tree` if every file were a photo with a face,
    with the settings fingerprint a default rerun computes: what the reruns then plan against."""
    import hashlib

    import pyarrow as pa

    from faceproc.config import Config
    from faceproc.core import layout, storage
    from faceproc.core.schema import MANIFEST_SCHEMA
    from faceproc.preprocess.discover import discover
    from faceproc.preprocess.settings import fingerprint, row_settings

    started = time.monotonic()
    listing = discover(tree).files
    count = listing.num_rows
    settings = fingerprint(row_settings(Config(input=tree, output=out).preprocess))
    manifest = pa.table({
        "path": listing["path"], "sha256": [hashlib.sha256(b"").hexdigest()] * count,  # the files are empty
        "split": listing["split"], "label": listing["label"], "status": ["ok"] * count, "reason": [None] * count,
        "face_rows": [1] * count, "leakage": [False] * count, "run_id": ["synthetic"] * count,
        "settings": [settings] * count, "size": listing["size"], "mtime_ns": listing["mtime_ns"],
    }, schema=MANIFEST_SCHEMA)
    storage.makedirs(out)
    storage.write_table_atomic(layout.manifest(out), manifest)
    return {"seconds": round(time.monotonic() - started, 2), "processed": 0, "unchanged": count}


def rerun(tree: str, out: str, verify: bool) -> dict:
    """One preprocessing run in this process, measured from inside it (called in a fresh process)."""
    from faceproc.config import Config  # imported first, so module reads do not count as bytes read
    from faceproc.preprocess.run import run_preprocess

    config = Config(input=tree, output=out)
    config.preprocess.max_reject_share = 1.0
    config.preprocess.verify_hashes = verify
    started = time.monotonic()
    summary = run_preprocess(config)  # cold: what a scheduled rerun costs, imports included
    seconds = time.monotonic() - started
    read_before = _rchar()
    run_preprocess(config)  # warm: every module is loaded, so what it reads is OUT's files and photos
    out_bytes = sum(p.stat().st_size for p in Path(out).rglob("*") if p.is_file())
    return {"seconds": round(seconds, 2), "read_bytes": _rchar() - read_before,
            "out_bytes": out_bytes,
            "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
            "processed": summary.processed, "unchanged": summary.unchanged}


def _rchar() -> int:
    for line in Path("/proc/self/io").read_text().splitlines():
        if line.startswith("rchar:"):
            return int(line.split()[1])
    raise RuntimeError("no rchar in /proc/self/io")


def in_fresh_process(*args: str) -> dict:
    env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    done = subprocess.run([sys.executable, __file__, *args], capture_output=True, text=True, env=env, cwd=ROOT)
    if done.returncode:
        raise RuntimeError(f"{' '.join(args)} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def measure(work: Path, count: int, synthetic: bool) -> dict:
    tree, out = work / f"tree-{count}{'-empty' if synthetic else ''}", work / f"out-{count}"
    input_bytes = make_tree(tree, count, 0 if synthetic else FILE_BYTES)
    shutil.rmtree(out, ignore_errors=True)
    first = in_fresh_process("--child", str(tree), str(out), "synthetic" if synthetic else "listing")
    listing = in_fresh_process("--child", str(tree), str(out), "listing")
    hashing = in_fresh_process("--child", str(tree), str(out), "verify")
    for name, row in (("listing", listing), ("verify_hashes", hashing)):
        assert row["processed"] == 0 and row["unchanged"] == count, (name, row)
    return {"files": count, "input_mb": round(input_bytes / 2**20, 1), "first_run_s": first["seconds"],
            "listing": listing, "verify_hashes": hashing, "input_bytes": input_bytes}


def print_table(results: list[dict]) -> None:
    print("| files | first run s | rerun s (listing) | rerun s (verify_hashes) | ratio | driver peak MB "
          "(listing / verify) | bytes read: listing | verify_hashes | listing / input | OUT's files |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in results:
        fast, slow = r["listing"], r["verify_hashes"]
        share = f"{fast['read_bytes'] / r['input_bytes']:.2%}" if r["input_bytes"] else "- (empty files)"
        print(f"| {r['files']:,} | {r['first_run_s']:.1f} | {fast['seconds']:.2f} | {slow['seconds']:.2f} | "
              f"{slow['seconds'] / fast['seconds']:.1f}x | {fast['peak_rss_mb']} / {slow['peak_rss_mb']} | "
              f"{fast['read_bytes'] / 2**20:.1f} MB | {slow['read_bytes'] / 2**20:.1f} MB | "
              f"{share} | {fast['out_bytes'] / 2**20:.1f} MB |")
    if len(results) > 1:
        small, big = results[0], results[-1]
        growth = big["files"] / small["files"]
        print(f"growth {small['files']:,} -> {big['files']:,} files ({growth:.0f}x): rerun seconds "
              f"{big['listing']['seconds'] / small['listing']['seconds']:.1f}x, driver peak RSS "
              f"{big['listing']['peak_rss_mb'] / small['listing']['peak_rss_mb']:.1f}x")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="10000,100000")
    parser.add_argument("--work", default="/tmp/faceproc-plan-scale")
    parser.add_argument("--synthetic-first-run", action="store_true",
                        help="empty files and a manifest written by the benchmark instead of a first run")
    parser.add_argument("--json", help="write every result here")
    parser.add_argument("--child", nargs=3, metavar=("TREE", "OUT", "MODE"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        tree, out, mode = args.child
        print(json.dumps(write_synthetic_manifest(tree, out) if mode == "synthetic"
                         else rerun(tree, out, verify=mode == "verify")))
        return 0
    print(f"machine: {machine.uptime()}", flush=True)
    results = []
    for count in (int(s) for s in args.sizes.split(",")):
        results.append(measure(Path(args.work), count, args.synthetic_first_run))
        print(json.dumps(results[-1]), flush=True)
    print_table(results)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
