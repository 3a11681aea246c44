"""The detection and crop settings a trained model saw, for `predict` and `identify`.

A model is only as good as the crop it is given: a face cut with another margin, size or without
alignment is a different input. So inference takes every row-shaping setting (the fields of
`preprocess.settings.ROW_FIELDS`) from the settings record of the rows the models were trained on,
and only the run-time knobs (actor counts, batch sizes, threads) from the config it was started with.
"""

from __future__ import annotations

import dataclasses
import logging

import pyarrow.compute as pc

from faceproc.config import PreprocessConfig
from faceproc.core import layout, storage
from faceproc.core.manifest import load_manifest
from faceproc.preprocess.settings import ROW_FIELDS

log = logging.getLogger(__name__)


def training_preprocess(out: str, runtime: PreprocessConfig) -> PreprocessConfig:
    """`runtime` with the ROW_FIELDS of the live train rows under `out`, when they were all made with
    one settings record that is still there; otherwise `runtime` as it is (logged)."""
    saved = _train_row_settings(out)
    if saved is None:
        log.info("no settings record of the train rows under %s: detecting and cropping with the "
                 "current preprocess settings", out)
        return runtime
    return dataclasses.replace(runtime, **{name: saved[name] for name in ROW_FIELDS if name in saved})


def _train_row_settings(out: str) -> dict | None:
    manifest = load_manifest(out)
    ok_train = manifest.filter(pc.and_(pc.equal(manifest["status"], "ok"), pc.equal(manifest["split"], "train")))
    fingerprints = set(ok_train["settings"].to_pylist()) - {None}
    if len(fingerprints) != 1:
        return None
    uri = layout.preprocess_settings(out, fingerprints.pop())
    return storage.read_json(uri) if storage.exists(uri) else None
