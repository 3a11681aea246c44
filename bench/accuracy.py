"""Accuracy of every model over seeds, with and without face alignment, against the notebook.

For each alignment setting the fetched dataset is preprocessed once; then for each seed every model
is trained from scratch (`train.seed`, `--force`) and evaluated on the 25 validation photos, where
`faceproc run` would train it (in the driver, without Ray, for this dataset on one machine without a
GPU; on `RAY_ADDRESS` when that is set). Prints one table: val accuracy per seed, mean and min, the holdout accuracy
at the kept epoch (what training decisions use), training seconds and epochs, and the notebook's
number beside; `--json` keeps every row.

    python bench/accuracy.py                       # seeds 0,1,2; align off and on; all models
    python bench/accuracy.py --seeds 0 --align on --models cnn,facenet
    python bench/accuracy.py --align on --models resnet50 --recipe resnet50.image_size=32   # a candidate

`--recipe MODEL.FIELD=VALUE` (repeatable) replaces a field of a model's registry spec in this
process, for trying a recipe on the holdout before making it a default; values are Python literals.
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import json
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATASET = ROOT / "data" / "5-celebrity-faces-dataset"


def run(out_root: Path, seeds: list[int], aligns: list[bool], models: list[str]) -> list[dict]:
    from faceproc.config import Config
    from faceproc.core import layout, storage
    from faceproc.evaluate.run import run_evaluate
    from faceproc.inference.artifact import ModelArtifact
    from faceproc.preprocess.run import run_preprocess
    from faceproc.train.run import run_train

    rows = []
    for align in aligns:
        out = out_root / f"align-{'on' if align else 'off'}"
        config = Config(input=str(DATASET), output=str(out), models_dir=str(ROOT / "models"))
        config.preprocess.align = align
        config.train.models = models
        started = time.monotonic()
        summary = run_preprocess(config)
        print(f"align={align}: preprocessed in {time.monotonic() - started:.0f} s "
              f"({summary.aligned_faces} aligned, {summary.unaligned_faces} margin crops)", flush=True)
        for seed in seeds:
            config.train.seed = seed
            results = {r["model"]: r for r in run_train(config, force=True)}
            accuracy = {r["model"]: r for r in run_evaluate(config)}
            for name in models:
                history_uri = ModelArtifact(str(out), name).file(layout.HISTORY_FILE)
                history = storage.read_json(history_uri) if storage.exists(history_uri) else None
                result, row = results[name], accuracy.get(name, {})
                best = result.get("best_epoch")
                rows.append({
                    "model": name, "align": align, "seed": seed, "status": row.get("status", result["status"]),
                    "val_accuracy": row.get("accuracy"), "n": row.get("n"),
                    "holdout_accuracy": history["holdout_accuracy"][best] if history and best is not None else None,
                    "train_seconds": result.get("train_seconds"), "epochs_run": result.get("epochs_run"),
                    "best_epoch": best, "reference": row.get("reference"),
                })
                print(json.dumps(rows[-1]), flush=True)
    return rows


def table(rows: list[dict], seeds: list[int]) -> str:
    def mean(values: list) -> str:
        values = [v for v in values if v is not None]
        return f"{statistics.mean(values):.3f}" if values else "–"

    lines = ["| model | align | " + " | ".join(f"val s{s}" for s in seeds)
             + " | val mean | val min | holdout mean | train s mean | epochs mean | notebook |",
             "|---|---|" + "---:|" * (len(seeds) + 6)]
    keys = sorted({(r["model"], r["align"]) for r in rows}, key=lambda k: (_order(k[0]), k[1]))
    for model, align in keys:
        group = [r for r in rows if r["model"] == model and r["align"] == align]
        by_seed = {r["seed"]: r for r in group}
        cells = []
        for seed in seeds:
            row = by_seed.get(seed)
            value = row["val_accuracy"] if row else None
            cells.append(f"{value:.2f}" if value is not None else (row["status"] if row else "–"))
        vals = [r["val_accuracy"] for r in group if r["val_accuracy"] is not None]
        lines.append(f"| {model} | {'on' if align else 'off'} | {' | '.join(cells)} | {mean(vals)} | "
                     f"{min(vals):.2f} | " if vals else f"| {model} | {'on' if align else 'off'} | "
                     f"{' | '.join(cells)} | – | – | ")
        lines[-1] += (f"{mean([r['holdout_accuracy'] for r in group])} | {mean([r['train_seconds'] for r in group])} | "
                      f"{mean([r['epochs_run'] for r in group])} | {group[0]['reference'] or '–'} |")
    return "\n".join(lines)


def _order(model: str) -> int:
    from faceproc.core.model_names import MODEL_NAMES

    return MODEL_NAMES.index(model) if model in MODEL_NAMES else len(MODEL_NAMES)


def replace_spec_field(change: str) -> None:
    """Apply one `MODEL.FIELD=VALUE` to the registry. Ray Train workers get the spec from the driver
    (its bound `make_optimizer` and recipe values), so the change reaches them too."""
    from faceproc.models import registry

    target, _, value = change.partition("=")
    model, _, field = target.partition(".")
    if model not in registry.REGISTRY or not value:
        raise SystemExit(f"--recipe {change!r}: use MODEL.FIELD=VALUE with MODEL one of {', '.join(registry.REGISTRY)}")
    try:
        registry.REGISTRY[model] = dataclasses.replace(registry.REGISTRY[model], **{field: ast.literal_eval(value)})
    except (TypeError, ValueError, SyntaxError) as exc:
        raise SystemExit(f"--recipe {change!r}: {exc}") from None
    print(f"recipe: {model}.{field} = {value}", flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--align", choices=["both", "on", "off"], default="both")
    parser.add_argument("--models", default="cnn,resnet50,resnet50_imagenet,facenet")
    parser.add_argument("--out-root", default="/tmp/faceproc-accuracy")
    parser.add_argument("--json", help="write every row here")
    parser.add_argument("--recipe", action="append", default=[], metavar="MODEL.FIELD=VALUE",
                        help="replace a registry spec field for this run, e.g. resnet50.image_size=32")
    args = parser.parse_args(argv)
    for change in args.recipe:
        replace_spec_field(change)
    seeds = [int(s) for s in args.seeds.split(",")]
    aligns = {"both": [False, True], "on": [True], "off": [False]}[args.align]
    rows = run(Path(args.out_root), seeds, aligns, args.models.split(","))
    print(table(rows, seeds))
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
