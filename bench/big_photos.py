#!/usr/bin/env python
"""Phone-sized photos: `faceproc preprocess` on 12-megapixel JPEGs, with and without reduced decoding,
against the notebook's serial loop on the same files, in one invocation.

The photos: --photos dataset photos (cycling through the people, train and val), each upscaled to
4000x3000 (bicubic) and saved as a JPEG at quality 90, in the `<split>/<person>/` layout.

1. `faceproc preprocess --input TREE --output OUT` (default: `preprocess.draft_decode = true`, JPEGs
   decoded at 1/4 scale for detection, full resolution only where a crop needs it).
2. The same with `--set preprocess.draft_decode=false` (every photo decoded at full size).
3. The notebook's serial loop (bench/preprocess_throughput.py's baseline worker: full decode, one
   MTCNN call per photo on the full-size image, first face, resize to 160x160).

Wall clock per run (subprocess, end to end); photos/s; the ratios draft/full and draft/serial; the
driver's peak RSS. Boxes of the two faceproc runs are compared (they are mapped to full-resolution
pixels either way).

    .venv/bin/python bench/big_photos.py [--photos 48] [--out /tmp/DIR]

Write-up: docs/benchmarks.md, "Phone photos".
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
import machine  # noqa: E402
from preprocess_throughput import DATASET, run_faceproc, source_files, worker  # noqa: E402

SIZE = (4000, 3000)


def build_big_tree(dst: Path, photos: int) -> int:
    sources = source_files(DATASET)
    step = max(1, len(sources) // photos)
    chosen = sources[::step][:photos]
    for n, src in enumerate(chosen):
        split, person = src.parent.parent.name, src.parent.name
        folder = dst / split / person
        folder.mkdir(parents=True, exist_ok=True)
        with Image.open(src) as im:
            im.convert("RGB").resize(SIZE, Image.Resampling.BICUBIC).save(folder / f"{n:03d}.jpg", quality=90)
    return len(chosen)


def boxes(out: Path) -> dict[str, list[int]]:
    import pyarrow.parquet as pq

    found = {}
    for shard in out.glob("shards/*/*.parquet"):
        table = pq.read_table(shard, columns=["source_path", "box", "augment_index"]).to_pylist()
        found.update({Path(r["source_path"]).name: r["box"] for r in table if r["augment_index"] == 0})
    return found


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--photos", type=int, default=48)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    work = args.out or Path(tempfile.mkdtemp(prefix="fp-big-bench-"))
    tree = work / "photos"
    if not tree.exists():
        build_big_tree(tree, args.photos)
    files = len(list(tree.glob("*/*/*.jpg")))
    megabytes = sum(p.stat().st_size for p in tree.glob("*/*/*.jpg")) / 1e6
    print(f"{files} photos of {SIZE[0]}x{SIZE[1]} ({megabytes:.0f} MB); {machine.uptime()}", flush=True)

    results = {"photos": files, "size": SIZE, "megabytes": round(megabytes)}
    results["draft"] = run_faceproc(tree, work / "out-draft", files, "local")
    results["full"] = run_faceproc(tree, work / "out-full", files, "local", ("--set", "preprocess.draft_decode=false"))
    results["serial"] = worker("baseline", work / "baseline.json", "--tree", str(tree))

    draft, full = boxes(work / "out-draft"), boxes(work / "out-full")
    shared = sorted(set(draft) & set(full))
    offsets = [max(abs(a - b) for a, b in zip(draft[name], full[name])) for name in shared]
    results["box_offset_px_median"] = sorted(offsets)[len(offsets) // 2] if offsets else None
    (work / "results.json").write_text(json.dumps(results, indent=2))

    rows = [("faceproc, reduced decoding (default)", results["draft"]["wall_seconds"]),
            ("faceproc, full decoding", results["full"]["wall_seconds"]),
            ("notebook serial loop (loop only)", results["serial"]["loop_seconds"]),
            ("notebook serial loop (process)", results["serial"]["process_wall_seconds"])]
    print("\n| run | seconds | photos/s |\n|---|---|---|")
    for name, seconds in rows:
        print(f"| {name} | {seconds:.1f} | {files / seconds:.2f} |")
    print(f"\nreduced vs full decoding: {results['full']['wall_seconds'] / results['draft']['wall_seconds']:.2f}x; "
          f"reduced vs the serial loop: {results['serial']['loop_seconds'] / results['draft']['wall_seconds']:.2f}x "
          f"(loop only), {results['serial']['process_wall_seconds'] / results['draft']['wall_seconds']:.2f}x (process); "
          f"median box offset {results['box_offset_px_median']} px of {SIZE[0]}")
    print(f"results: {work / 'results.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
