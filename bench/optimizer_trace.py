#!/usr/bin/env python
"""What the optimizer class costs a training's first epoch: the registry's fused tf-keras class
against the newer class of the same name, on the same model and faces, in one invocation.

A model's first epoch in a process traces its train and holdout steps into TensorFlow graphs; later
epochs reuse them. The newer tf-keras optimizers build a dozen ops per variable in that trace, the
legacy Adam and SGD one fused kernel (ResourceApplyAdam, ...). A warm-started model runs a few
epochs in a fresh process, so for resnet50 (322 variables) the trace is most of its fine-tuning.

Each case runs in its own Python process (TensorFlow keeps traced functions for the process's
life): build the model as `faceproc train` does, compile it with the optimizer, then fit and
evaluate E epochs over N random 160x160 faces at the recipe's batch size. Printed per case: the
first epoch (trace included), the mean of the later ones, and the first-epoch ratio fused / newer.

    .venv/bin/python bench/optimizer_trace.py [--model resnet50] [--epochs 3] [--faces 78]

Write-up: docs/benchmarks.md, "Training", "The optimizer's trace".
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import machine  # noqa: E402  (bench/machine.py)

ROOT = Path(__file__).resolve().parents[1]
CASES = ("fused", "newer")  # the registry's class; keras.optimizers' class of the same name


def one_case(case: str, model_name: str, epochs: int, faces: int) -> dict:
    """In this process: the epoch seconds of `model_name` compiled with the `case` optimizer."""
    import numpy as np

    from faceproc.config import TrainConfig
    from faceproc.models.keras_env import keras, tf
    from faceproc.models.registry import OPTIMIZERS, BuildContext, resolve_spec

    spec = resolve_spec(model_name, TrainConfig())
    steps = -(-faces // spec.batch_size)
    optimizer = spec.make_optimizer(steps)
    if case == "newer":
        newer = getattr(keras.optimizers, OPTIMIZERS[spec.optimizer].removeprefix("legacy."))
        optimizer = newer(learning_rate=spec.learning_rate_schedule(steps))
    keras.utils.set_random_seed(0)
    model = spec.make(5, BuildContext(train=TrainConfig()))
    model.compile(optimizer=optimizer, loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (faces, 160, 160, 3)).astype(np.uint8)
    y = rng.integers(0, 5, faces).astype(np.int32)
    seconds = []
    for _ in range(epochs):
        started = time.perf_counter()
        model.fit(tf.data.Dataset.from_tensor_slices((x, y)).batch(spec.batch_size), epochs=1, verbose=0)
        model.evaluate(tf.data.Dataset.from_tensor_slices((x, y)).batch(spec.batch_size), verbose=0)
        seconds.append(time.perf_counter() - started)
    return {"case": case, "optimizer": type(optimizer).__module__ + "." + type(optimizer).__name__,
            "first": seconds[0], "later": sum(seconds[1:]) / max(1, len(seconds) - 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="resnet50")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--faces", type=int, default=78,
                        help="faces per epoch (default 78: the dataset's fitting photos)")
    parser.add_argument("--case", choices=CASES, help=argparse.SUPPRESS)  # one case, in a child process
    args = parser.parse_args()
    if args.case:
        print(json.dumps(one_case(args.case, args.model, args.epochs, args.faces)))
        return

    print(machine.uptime())
    results = []
    for case in CASES:
        before = machine.snapshot()
        child = subprocess.run([sys.executable, __file__, "--case", case, "--model", args.model,
                                "--epochs", str(args.epochs), "--faces", str(args.faces)],
                               capture_output=True, text=True, cwd=ROOT, check=True)
        after = machine.snapshot()
        result = json.loads(child.stdout.strip().splitlines()[-1])
        result["machine_busy_cores"] = round(machine.busy_cores(before, after), 2)
        results.append(result)
    print(f"\n{args.model}, {args.faces} faces, {args.epochs} epochs (fit + holdout evaluate)\n")
    print("| case | optimizer | first epoch s (trace included) | later epochs s (mean) | machine busy cores |")
    print("|---|---|---:|---:|---:|")
    for r in results:
        print(f"| {r['case']} | {r['optimizer']} | {r['first']:.1f} | {r['later']:.1f} | {r['machine_busy_cores']} |")
    fused, newer = results
    print(f"\nfirst epoch fused / newer: {fused['first'] / newer['first']:.2f}; "
          f"later epochs: {fused['later'] / newer['later']:.2f}")
    print(machine.uptime())


if __name__ == "__main__":
    main()
