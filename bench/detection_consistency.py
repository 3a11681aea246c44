"""Does a photo's face depend on the photos detected beside it? faceproc's detector against the same
detector without its second look (the baseline: R-Net's gate kept at THRESHOLD_RNET for the retry).

mtcnn 1.0 zero-pads a batch to its largest photo, which moves the pyramid's pixel grid, so a photo's
boxes and scores change with its neighbours. Each photo of the fetched dataset is detected three ways:
alone (what `predict` does), in batches of `detect_batch_size` sorted by size (a run's batch) and in
batches of random neighbours (another run's). For each way it prints the photos with a confident face
and the seconds (the fastest of `--repeats`), and against "alone": photos whose face is found one way
and not the other, and the largest coordinate difference of the chosen box (p50, p90, max).

    .venv/bin/python bench/detection_consistency.py
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import machine  # noqa: E402

from faceproc.config import PreprocessConfig  # noqa: E402
from faceproc.preprocess import detector  # noqa: E402
from faceproc.preprocess.decode import decode_image  # noqa: E402
from faceproc.preprocess.geometry import select_face  # noqa: E402

DATASET = Path("data/5-celebrity-faces-dataset")
Chosen = tuple[np.ndarray, float] | None  # the box and confidence of the face a photo keeps


def load_photos(root: Path, prep: PreprocessConfig) -> list[np.ndarray]:
    photos = []
    for path in sorted(p for p in root.glob("*/*/*") if p.is_file()):
        photos.append(decode_image(path.read_bytes(), prep.max_pixels, prep.min_side))
    return photos


def chosen_faces(face_detector: detector.FaceDetector, groups: list[list[int]], photos: list[np.ndarray]
                 ) -> tuple[list[Chosen], float]:
    """The face each photo keeps when `groups` are detected one call of detect_candidates each."""
    chosen: list[Chosen] = [None] * len(photos)
    started = time.perf_counter()
    for group in groups:
        for index, candidates in zip(group, face_detector.detect_candidates([photos[i] for i in group])):
            confident = [] if isinstance(candidates, Exception) else face_detector._confident(candidates)
            pick = select_face(confident, face_detector.config.min_face_confidence)
            face = None if pick is None else confident[pick]
            chosen[index] = None if face is None else (np.asarray(face["box"]), face["confidence"])
    return chosen, time.perf_counter() - started


def compare(ways: dict[str, list[Chosen]], reference: str) -> dict[str, dict[str, Any]]:
    out = {}
    for name, chosen in ways.items():
        differs = sum((a is None) != (b is None) for a, b in zip(ways[reference], chosen))
        moved = [int(np.abs(a[0] - b[0]).max()) for a, b in zip(ways[reference], chosen) if a and b]
        out[name] = {"found": sum(c is not None for c in chosen), "found_differs": differs,
                     "box_px": (np.percentile(moved, 50), np.percentile(moved, 90), max(moved))}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", type=Path, default=DATASET)
    parser.add_argument("--seed", type=int, default=0, help="the random neighbours' shuffle")
    parser.add_argument("--repeats", type=int, default=2, help="each way's seconds: the fastest of this many")
    args = parser.parse_args()
    prep = PreprocessConfig()
    photos = load_photos(args.dataset, prep)
    face_detector = detector.FaceDetector(prep)
    face_detector._mtcnn_call([photos[0]])  # trace the graphs once, outside the timings
    size = prep.detect_batch_size
    shuffled = list(range(len(photos)))
    random.Random(args.seed).shuffle(shuffled)
    groupings = {"alone": [[i] for i in range(len(photos))],
                 "sorted batches": [list(range(len(photos)))],  # detect_candidates sorts by size and chunks
                 "random neighbours": [shuffled[i:i + size] for i in range(0, len(photos), size)]}
    retry = detector.RETRY_THRESHOLD_RNET
    print(f"{machine.uptime()}; {machine.CPUS} CPUs")
    print(f"{len(photos)} photos of {args.dataset}, detect_batch_size {size}, min_face_confidence "
          f"{prep.min_face_confidence}")
    print(f"{'detector':<34} {'way':<18} {'with a face':>11} {'seconds':>8} {'x baseline':>10} {'found differs':>14} "
          f"{'box px vs alone: p50 / p90 / max':>34}")
    baseline_seconds: dict[str, float] = {}
    for label, retry_gate in ((f"baseline (retry R-Net {detector.THRESHOLD_RNET})", detector.THRESHOLD_RNET),
                              (f"faceproc (retry R-Net {retry})", retry)):
        detector.RETRY_THRESHOLD_RNET = retry_gate
        ways, seconds = {}, {}
        for name, groups in groupings.items():
            runs = [chosen_faces(face_detector, groups, photos) for _ in range(max(1, args.repeats))]
            ways[name], seconds[name] = runs[0][0], min(run_seconds for _, run_seconds in runs)
        baseline_seconds = baseline_seconds or seconds
        for name, row in compare(ways, "alone").items():
            p50, p90, most = row["box_px"]
            print(f"{label:<34} {name:<18} {row['found']:>11} {seconds[name]:>8.1f} "
                  f"{seconds[name] / baseline_seconds[name]:>10.2f} {row['found_differs']:>14} "
                  f"{p50:>21.0f} / {p90:.0f} / {most}")
    detector.RETRY_THRESHOLD_RNET = retry


if __name__ == "__main__":
    main()
