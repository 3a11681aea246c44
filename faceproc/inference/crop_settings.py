"""The detection and crop settings a trained model saw, for `predict` and `identify`.

A model is only as good as the crop it is given: a face cut with another margin, size or without
alignment is a different input. So inference takes every row-shaping setting (the fields of
`preprocess.settings.ROW_FIELDS`) from the settings record of the rows the model was trained on (its
result.json names their fingerprint, `row_settings`), and only the run-time knobs (actor counts,
batch sizes, threads) from the config it was started with.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Any

from faceproc.config import PreprocessConfig
from faceproc.core import layout, storage
from faceproc.preprocess.settings import ROW_FIELDS

log = logging.getLogger(__name__)

# What a settings record written before a field existed stands for: the behaviour of that time.
BEFORE_THE_FIELD = {"draft_decode": False}


def training_preprocess(out: str, runtime: PreprocessConfig, model_result: dict[str, Any]) -> PreprocessConfig:
    """`runtime` with the ROW_FIELDS of the rows the model was trained on, when result.json names
    one settings record that is still under `out`; otherwise `runtime` as it is (logged)."""
    fingerprints = model_result.get("row_settings") or []
    uri = layout.preprocess_settings(out, fingerprints[0]) if len(fingerprints) == 1 else None
    if uri is None or not storage.exists(uri):
        log.info("%s: no record of the preprocessing settings it was trained on: detecting and cropping "
                 "with the current ones", model_result.get("model"))
        return runtime
    saved = {**BEFORE_THE_FIELD, **storage.read_json(uri)}
    return dataclasses.replace(runtime, **{name: saved[name] for name in ROW_FIELDS if name in saved})
