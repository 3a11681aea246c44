#!/usr/bin/env python
"""TensorFlow's oneDNN kernels on or off, for each kind of work faceproc gives TensorFlow.

TensorFlow's Linux x86 wheels turn their oneDNN operations on by default only on CPUs with
neural-network instructions (AVX512_VNNI, AVX512_BF16, AMX); on older CPUs, AVX2-only ones among
them, they are off unless `TF_ENABLE_ONEDNN_OPTS=1`. faceproc sets it (faceproc/__init__.py). This
script runs each workload in a fresh process with TF_ENABLE_ONEDNN_OPTS=0 (the baseline: TensorFlow's
default on such a CPU) and =1, and prints each setting's first round and median, and the ratio on / off
(below 1: faster on).

Workloads, each timed in its first round (graph tracing, kernel set-up: what every short training
and evaluation pays) and then `--repeats` more (the median of those is printed):
- `resnet50 epoch`, `cnn epoch`: one `model.fit` epoch over 74 random faces (the fetched dataset's
  fitting set), batch 16, the registry's model, optimizer and image size, both thread pools at 2;
- `facenet forward`: the FaceNet backbone on a batch of 32 faces (embeddings, predict, identify),
  when models/facenet_keras.h5 exists;
- `mtcnn detect`: faceproc's detector on the fetched dataset's first 16 train photos, one thread
  (as in a preprocessing actor).

    .venv/bin/python bench/onednn.py [--repeats 3]

Write-up: docs/benchmarks.md, "TensorFlow's oneDNN kernels".
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import machine  # noqa: E402  (bench/machine.py)

ROOT = Path(__file__).resolve().parent.parent
FITTING_FACES = 74
BATCH = 16


def seconds_per_round(work, repeats: int) -> list[float]:
    """Seconds of `work()`: the first round (graph tracing, kernel set-up), then `repeats` rounds."""
    times = []
    for _ in range(1 + repeats):
        started = time.perf_counter()
        work()
        times.append(time.perf_counter() - started)
    return times


def training_epoch(name: str, repeats: int) -> list[float]:
    """Seconds of one fit epoch of the registry's `name` over random faces."""
    import numpy as np

    from faceproc.models.keras_env import tf
    from faceproc.models.registry import BuildContext, get_spec

    spec = get_spec(name)
    model = spec.make(5, BuildContext())
    steps = -(-FITTING_FACES // BATCH)
    model.compile(optimizer=spec.make_optimizer(steps), loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    rng = np.random.default_rng(0)
    faces = rng.integers(0, 256, (FITTING_FACES, 160, 160, 3)).astype(np.float32)
    labels = rng.integers(0, 5, FITTING_FACES)
    dataset = tf.data.Dataset.from_tensor_slices((faces, labels)).batch(BATCH)
    return seconds_per_round(lambda: model.fit(dataset, epochs=1, verbose=0), repeats)


def facenet_forward(repeats: int) -> list[float] | None:
    """Seconds of the FaceNet backbone on 32 faces; None without the weights file."""
    import numpy as np

    from faceproc.models.facenet_weights import load_facenet_backbone

    weights = ROOT / "models" / "facenet_keras.h5"
    if not weights.exists():
        return None
    backbone = load_facenet_backbone(str(weights))
    faces = np.random.default_rng(0).integers(0, 256, (32, 160, 160, 3)).astype(np.float32)
    return seconds_per_round(lambda: backbone.predict_on_batch(faces), repeats)


def mtcnn_detect(repeats: int) -> list[float] | None:
    """Seconds of faceproc's detector on 16 real photos; None without the fetched dataset."""
    from PIL import Image

    from faceproc.config import PreprocessConfig
    from faceproc.core.images import to_rgb_array
    from faceproc.preprocess.detector import FaceDetector, limit_tf_threads

    photos = sorted((ROOT / "data" / "5-celebrity-faces-dataset" / "train").glob("*/*"))[:16]
    if not photos:
        return None
    config = PreprocessConfig()
    limit_tf_threads(config.detector_threads)
    detector = FaceDetector(config)
    images = [to_rgb_array(Image.open(path)) for path in photos]
    return seconds_per_round(lambda: detector.faces_of(images), repeats)


def worker(repeats: int) -> None:
    """Run every workload in this process and print one JSON line of seconds lists."""
    from faceproc.models.keras_env import tf
    from faceproc.train.loop import configure_cpu_threads

    configure_cpu_threads(tf, 2)  # as a training worker on a 2-core node
    results = {
        "resnet50 epoch": training_epoch("resnet50", repeats),
        "cnn epoch": training_epoch("cnn", repeats),
        "facenet forward, 32 faces": facenet_forward(repeats),
    }
    print(json.dumps(results))


def detector_worker(repeats: int) -> None:
    """MTCNN in its own process: a preprocessing actor limits TensorFlow to one thread first."""
    print(json.dumps({"mtcnn detect, 16 photos": mtcnn_detect(repeats)}))


def run_setting(onednn: str, repeats: int) -> dict[str, list[float] | None]:
    """Both workers in fresh processes with TF_ENABLE_ONEDNN_OPTS=`onednn`."""
    env = {**os.environ, "TF_ENABLE_ONEDNN_OPTS": onednn}
    results: dict[str, list[float] | None] = {}
    for role in ("--worker", "--detector-worker"):
        done = subprocess.run([sys.executable, __file__, role, "--repeats", str(repeats)], env=env, cwd=ROOT,
                              capture_output=True, text=True, check=True)
        results.update(json.loads(done.stdout.strip().splitlines()[-1]))
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3, help="timed rounds per workload and setting")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--detector-worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        return worker(args.repeats)
    if args.detector_worker:
        return detector_worker(args.repeats)

    print(f"machine: {machine.uptime()}")
    off = run_setting("0", args.repeats)
    on = run_setting("1", args.repeats)
    print(f"{'workload, round':<36} {'oneDNN off s':>13} {'oneDNN on s':>12} {'on / off':>9}"
          f"   (first; median of {args.repeats} then)")
    for name, baseline in off.items():
        if baseline is None or on[name] is None:
            print(f"{name:<36} skipped (no weights or no fetched dataset)")
            continue
        for label, before, after in (("first", baseline[0], on[name][0]),
                                     ("then", statistics.median(baseline[1:]), statistics.median(on[name][1:]))):
            print(f"{name + ', ' + label:<36} {before:>13.3f} {after:>12.3f} {after / before:>9.2f}")
    print(f"machine after: {machine.uptime()}")


if __name__ == "__main__":
    main()
