"""`faceproc run`: fetch (when the default dataset is missing) -> preprocess -> train -> evaluate.

Each stage runs only when it has something to do: preprocess when photos were added, changed or
deleted; a model's training when its photos or settings changed; evaluation when anything upstream
changed. Every run leaves a record in OUT/runs/<run>.json saying what ran and why.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from faceproc.config import Config
from faceproc.core import layout, storage
from faceproc.core.commit import new_run_id
from faceproc.core.lock import output_lock
from faceproc.core.schema import Status
from faceproc.preprocess.run import PreprocessSummary, run_preprocess

log = logging.getLogger(__name__)


@dataclass
class PipelineResult:
    run_id: str
    preprocess: PreprocessSummary
    training: list[dict[str, Any]] = field(default_factory=list)
    accuracy: list[dict[str, Any]] | None = None  # None when evaluation did not need to run
    reported: list[dict[str, Any]] | None = None  # accuracy.json after the run: `accuracy`, or the rows kept
    stages: dict[str, str] = field(default_factory=dict)  # stage -> what happened and why

    @property
    def failed(self) -> bool:
        rows = self.accuracy or []
        return any(r["status"] == Status.FAILED for r in [*self.training, *rows])


def stage(number: int, name: str, message: str) -> None:
    print(f"[{number}/4] {name}: {message}", flush=True)


def run_pipeline(config: Config, force: bool = False, wait_seconds: float = 0.0) -> PipelineResult:
    """The main job. `force` retrains and re-evaluates even when nothing changed."""
    from faceproc.evaluate.run import adopt_trained_unknown_settings, run_evaluate
    from faceproc.train.run import run_train

    run_id = new_run_id()
    started_at = datetime.now(timezone.utc).isoformat(timespec="seconds")
    started = time.monotonic()
    with output_lock(config.output, wait_seconds):
        stages: dict[str, str] = {"fetch": _fetch_if_needed(config)}
        stage(1, "fetch", stages["fetch"])

        stage(2, "preprocess", f"{config.input} -> {config.output}")
        summary = run_preprocess(config, run_id=run_id)
        changed = summary.processed + summary.deleted
        stages["preprocess"] = (f"{summary.new} new, {summary.changed} changed, {summary.deleted} deleted, "
                                f"{summary.resettled} redone for new settings, {summary.unchanged} unchanged")
        print(summary.format() if changed else f"nothing to do: all {summary.unchanged} files already processed "
              f"({summary.live_rejects} of them rejected)", flush=True)
        result = PipelineResult(run_id, summary, stages=stages)

        stage(3, "train", ", ".join(config.train.models))
        result.training = run_train(config, force=force)
        fitted = [r["model"] for r in result.training if r["status"] == Status.OK and not r.get("up_to_date")]
        stages["train"] = f"fitted {', '.join(fitted)}" if fitted else "all models up to date"

        accuracy_uri = layout.report_file(config.output, layout.ACCURACY_JSON)
        reported = storage.read_json(accuracy_uri) if storage.exists(accuracy_uri) else None
        why = evaluation_reason(force, changed, result.training, reported)
        if why:
            stage(4, "evaluate", why)
            evaluated = dataclasses.replace(config, evaluate=dataclasses.replace(config.evaluate))
            adopt_trained_unknown_settings(evaluated)  # a facenet this run did not train keeps its threshold
            result.accuracy = result.reported = run_evaluate(evaluated)
            stages["evaluate"] = f"ran: {why}"
        else:
            result.reported = reported
            stage(4, "evaluate", "nothing to do: no photo or model changed")
            stages["evaluate"] = "skipped: nothing changed"

        storage.write_json_atomic(layout.run_record(config.output, run_id), {
            "run_id": run_id,
            "started": started_at,
            "ended": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "seconds": round(time.monotonic() - started, 1),
            "counts": {"new": summary.new, "changed": summary.changed, "deleted": summary.deleted,
                       "resettled": summary.resettled, "unchanged": summary.unchanged, "rejected": summary.rejects},
            "stages": stages,
            "training": [{k: r.get(k) for k in ("model", "status", "reason", "train_seconds", "up_to_date", "trained_because")}
                         for r in result.training],
            "accuracy": result.accuracy,
        })
    return result


def evaluation_reason(force: bool, photos_changed: int, training: list[dict[str, Any]],
                      reported: list[dict[str, Any]] | None) -> str | None:
    """Why `run` evaluates this time, or None: the photos changed, a model was retrained, a model is
    missing from the report (`reported`, accuracy.json's rows; trained by a `faceproc train` since,
    say), or its training came out otherwise than the report says, such as a first skip for want of
    weights; a skip held from an earlier run is in the report already."""
    if force:
        return "forced"
    if photos_changed:
        return "photos changed"
    if any(r["status"] == Status.OK and not r.get("up_to_date") for r in training):
        return "models retrained"
    if reported is None:
        return "no report yet"
    statuses = {row.get("model"): row.get("status") for row in reported}
    news = [f"{r['model']} {r['status']}" for r in training if r["model"] not in statuses
            or (not r.get("up_to_date") and statuses[r["model"]] != r["status"])]
    return f"not in the report yet: {', '.join(news)}" if news else None


def fetches_the_dataset(config: Config) -> bool:
    """Whether the input is the default dataset (`<data_dir>/5-celebrity-faces-dataset`), which `run`
    fetches when it is missing. Paths are compared resolved: the CLI made them absolute."""
    from faceproc.fetch import DATASET_NAME

    dataset = Path(config.data_dir, DATASET_NAME)
    return "://" not in config.input and Path(config.input).resolve() == dataset.resolve()


def _fetch_if_needed(config: Config) -> str:
    """Fetch the default dataset when it is the input and missing; any other input is used as is."""
    from faceproc.fetch import fetch_data

    if not fetches_the_dataset(config):
        return f"using {config.input}"
    if fetch_data(config.data_dir, config.models_dir).downloaded:
        return "downloaded the dataset and FaceNet weights"
    return "dataset and FaceNet weights present"
