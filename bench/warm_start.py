#!/usr/bin/env python
"""Is a warm start sound? Fine-tuning after 5 new photos against training from scratch on the same data.

For each seed, on a private copy of the fetched dataset with 5 train photos (one per person) held
back: preprocess and train cnn and resnet50 from scratch (the "first run"); put the 5 photos back,
preprocess, and train again with the defaults, which fine-tune the current models (`start` must be
`warm`); evaluate; then train the same models from scratch on the same data (`--force`, same seed)
and evaluate. One Ray for the whole run. Prints, per model and seed, val accuracy with its 95%
interval for both, the holdout accuracy at the kept epoch, and training seconds; the verdict per
model is whether the warm accuracy reaches the scratch run's interval (inside it, or above it).

    python bench/warm_start.py [--seeds 0,1,2] [--models cnn,resnet50] [--out /tmp/DIR]

Write-up: docs/benchmarks.md, "Warm start".
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATASET = ROOT / "data" / "5-celebrity-faces-dataset"


def held_back(tree: Path) -> list[Path]:
    """The first train photo of every person: removed for the first run, added for the rerun."""
    return [sorted(p for p in person.iterdir() if not p.name.startswith("."))[0]
            for person in sorted((tree / "train").iterdir()) if person.is_dir()]


def trained(config, force: bool) -> dict[str, dict]:
    from faceproc.core import layout, storage
    from faceproc.evaluate.run import run_evaluate
    from faceproc.inference.artifact import ModelArtifact
    from faceproc.train.run import run_train

    results = {r["model"]: r for r in run_train(config, force=force)}
    accuracy = {r["model"]: r for r in run_evaluate(config)}
    rows = {}
    for name, result in results.items():
        history = storage.read_json(ModelArtifact(config.output, name).file(layout.HISTORY_FILE))
        best = result.get("best_epoch")
        row = accuracy[name]
        rows[name] = {"start": result.get("start"), "start_reason": result.get("start_reason"),
                      "val_accuracy": row["accuracy"], "ci_low": row["ci_low"], "ci_high": row["ci_high"],
                      "holdout_accuracy": history["holdout_accuracy"][best] if best is not None else None,
                      "train_seconds": result["train_seconds"],  # this run's: a kept start's attempt
                      "epochs_run": (result.get("fine_tuning_tried") or result)["epochs_run"]}
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--models", default="cnn,resnet50")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    work = args.out or Path(tempfile.mkdtemp(prefix="fp-warm-bench-"))

    from faceproc.config import Config
    from faceproc.core.ray_env import init_ray
    from faceproc.preprocess.run import run_preprocess

    init_ray(None)
    rows = []
    for seed in [int(s) for s in args.seeds.split(",")]:
        tree, out = work / f"seed{seed}" / "photos", work / f"seed{seed}" / "out"
        shutil.rmtree(tree.parent, ignore_errors=True)
        shutil.copytree(DATASET, tree)
        aside = work / f"seed{seed}" / "aside"
        aside.mkdir()
        photos = held_back(tree)
        for photo in photos:
            shutil.move(photo, aside / f"{photo.parent.name}__{photo.name}")
        config = Config(input=str(tree), output=str(out), models_dir=str(ROOT / "models"))
        config.train.models, config.train.seed = args.models.split(","), seed
        run_preprocess(config)
        first = trained(config, force=True)
        for photo in photos:
            shutil.move(aside / f"{photo.parent.name}__{photo.name}", photo)
        summary = run_preprocess(config)
        assert summary.processed == len(photos), summary
        warm = trained(config, force=False)
        scratch = trained(config, force=True)
        for name in warm:
            rows.append({"model": name, "seed": seed, "first": first[name], "warm": warm[name], "scratch": scratch[name]})
            w, s = warm[name], scratch[name]
            print(f"seed {seed} {name}: warm ({w['start']}) val {w['val_accuracy']:.2f} in {w['train_seconds']} s, "
                  f"scratch val {s['val_accuracy']:.2f} [{s['ci_low']:.2f}, {s['ci_high']:.2f}] in "
                  f"{s['train_seconds']} s; first run val {first[name]['val_accuracy']:.2f}", flush=True)
    (work / "results.json").write_text(json.dumps(rows, indent=2))

    print("\n| model | seed | first run val | warm val | warm holdout | warm s (epochs) | scratch val [95% CI] "
          "| scratch holdout | scratch s (epochs) | warm reaches the CI |\n|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        w, s = r["warm"], r["scratch"]
        verdict = ("NO (below)" if w["val_accuracy"] < s["ci_low"] else
                   "yes (above)" if w["val_accuracy"] > s["ci_high"] else "yes (inside)")
        print(f"| {r['model']} | {r['seed']} | {r['first']['val_accuracy']:.2f} | {w['val_accuracy']:.2f} | "
              f"{w['holdout_accuracy']:.2f} | {w['train_seconds']} ({w['epochs_run']}) | {s['val_accuracy']:.2f} "
              f"[{s['ci_low']:.2f}, {s['ci_high']:.2f}] | {s['holdout_accuracy']:.2f} | "
              f"{s['train_seconds']} ({s['epochs_run']}) | {verdict} |")
    print(f"results: {work / 'results.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
