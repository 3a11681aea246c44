#!/usr/bin/env python
"""What a training pays before its first epoch: Ray Train's start-up and the datasets' preparation,
each against its baseline in the same invocation, on one local Ray.

1. Ray Train start-up, lone worker: a TensorflowTrainer whose train function only imports TensorFlow
   (every real worker does), with Ray's `TensorflowConfig` (the baseline: its controller unpickles it
   and so imports `ray.train.tensorflow`, hence TensorFlow) and with faceproc's backend for one worker
   (`faceproc.train.trainer.backend(1)`, Ray's plain BackendConfig). Alternated --repeats times; wall
   seconds of `fit()` from the call to its return.
2. Dataset preparation: `faceproc.train.data.decoded_faces` for the fitting rows (originals) and the
   holdout of a preprocessed OUT (--out: `faceproc preprocess` output, e.g. of the fetched dataset),
   by Ray Data (the baseline: `driver_max_rows=0`) and in the driver (`driver_max_rows` = the rows),
   alternated --repeats times; wall seconds until both datasets are materialized.

Prints medians and min-max, and the ratio faceproc / baseline (below 1: faster).

    .venv/bin/python bench/train_startup.py --out OUT [--repeats 3]

Write-up: docs/benchmarks.md, "Inside a warm cnn fine-tuning".
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import machine  # noqa: E402  (bench/machine.py)


def tensorflow_only(config: dict) -> None:
    """The train function: what every real worker does before its model exists."""
    import tensorflow  # noqa: F401


def trainer_seconds(backend_config: object, storage: str, name: str) -> float:
    """Wall seconds of one lone-worker TensorflowTrainer run of `tensorflow_only`."""
    from ray.train import RunConfig, ScalingConfig
    from ray.train.tensorflow import TensorflowTrainer

    started = time.monotonic()
    TensorflowTrainer(tensorflow_only, tensorflow_config=backend_config,
                      scaling_config=ScalingConfig(num_workers=1, resources_per_worker={"CPU": 1}),
                      run_config=RunConfig(storage_path=storage, name=name)).fit()
    return time.monotonic() - started


def preparation_seconds(out: str, driver_max_rows: int) -> float:
    """Wall seconds to build and materialize the fitting and holdout datasets of `out`."""
    from faceproc.config import TrainConfig
    from faceproc.train.data import decoded_faces, load_training_data, object_store_dataset

    started = time.monotonic()
    defaults = TrainConfig()
    data = load_training_data(out, defaults.holdout_fraction, defaults.seed)
    fit, holdout = decoded_faces(out, data, originals_only=True, materialize=True, driver_max_rows=driver_max_rows)
    for split in (fit, holdout):
        if split is not None:  # as workers get it: columns decoded in the driver go to the object store
            (object_store_dataset(split) if isinstance(split, dict) else split).count()
    return time.monotonic() - started


def summary(label: str, seconds: list[float]) -> str:
    return f"{label:44s} median {statistics.median(seconds):6.2f} s  (min {min(seconds):.2f}, max {max(seconds):.2f})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True, help="a `faceproc preprocess` output folder")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    from faceproc.core.console import configure
    from faceproc.core.ray_env import init_ray
    from faceproc.train.data import load_training_data
    from faceproc.train.trainer import backend

    configure(False)
    init_ray("local")
    from ray.train.tensorflow import TensorflowConfig

    storage = tempfile.mkdtemp(prefix="faceproc-bench-startup-")
    rows = load_training_data(args.out, 0.2, 0).rows
    print(f"machine: {machine.uptime()}")
    print(f"train split of {args.out}: {rows} face rows")
    baseline, ours, by_ray, in_driver = [], [], [], []
    for repeat in range(args.repeats):
        baseline.append(trainer_seconds(TensorflowConfig(), storage, f"tfconfig-{repeat}"))
        ours.append(trainer_seconds(backend(1), storage, f"plain-{repeat}"))
        by_ray.append(preparation_seconds(args.out, driver_max_rows=0))
        in_driver.append(preparation_seconds(args.out, driver_max_rows=rows))
        print(f"repeat {repeat + 1}: trainer {baseline[-1]:.2f} / {ours[-1]:.2f} s, "
              f"datasets {by_ray[-1]:.2f} / {in_driver[-1]:.2f} s", flush=True)
    print(summary("Ray Train, TensorflowConfig (baseline)", baseline))
    print(summary("Ray Train, faceproc's lone-worker backend", ours))
    print(f"{'ratio':44s} {statistics.median(ours) / statistics.median(baseline):.2f}")
    print(summary("datasets by Ray Data (baseline)", by_ray))
    print(summary("datasets decoded in the driver", in_driver))
    print(f"{'ratio':44s} {statistics.median(in_driver) / statistics.median(by_ray):.2f}")
    print(f"machine after: {machine.uptime()}")


if __name__ == "__main__":
    main()
