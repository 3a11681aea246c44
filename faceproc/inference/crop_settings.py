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

from faceproc.config import ConfigError, PreprocessConfig, unapplied_setting
from faceproc.preprocess.settings import describe_value, fingerprint, recorded_row_fields, row_settings

log = logging.getLogger(__name__)

COPY_FIELDS = ("augment_copies", "seed")  # row fields that shape only the stored training copies, no crop
COPY_CONSTANTS = ("augment_ranges",)  # the `row_settings` constants that shape only those copies


def refuse_other_crops(out: str, runtime: PreprocessConfig, model_result: dict[str, Any], explicit: set[str],
                       command: str) -> None:
    """A crop setting the user set (`explicit` keys: `--set`, not a config file shared with other
    commands) that differs from the model's training rows would be replaced by `training_preprocess`:
    refused (ConfigError) rather than silently dropped."""
    recorded = recorded_row_fields(out, model_result.get("row_settings") or []) or {}
    crop = {name: value for name, value in recorded.items() if name not in COPY_FIELDS}
    unapplied = unapplied_setting(runtime, "preprocess", crop, explicit)
    if unapplied:
        key, asked, value = unapplied
        raise ConfigError(f"{key}={describe_value(asked)} is not applied by `faceproc {command}`: it cuts faces "
                          f"as {model_result.get('model')} was trained on them ({describe_value(value)}); "
                          "`faceproc run` with it makes the rows and the model anew")


def training_preprocess(out: str, runtime: PreprocessConfig, model_result: dict[str, Any]) -> PreprocessConfig:
    """`runtime` with the ROW_FIELDS of the rows the model was trained on, when result.json names
    one settings record that is still under `out`; otherwise `runtime` as it is (logged)."""
    recorded = recorded_row_fields(out, model_result.get("row_settings") or [])
    if recorded is None:
        log.info("%s: no record of the preprocessing settings it was trained on: detecting and cropping "
                 "with the current ones", model_result.get("model"))
        return runtime
    return dataclasses.replace(runtime, **recorded)


def crop_fingerprint(prep: PreprocessConfig) -> str:
    """The fingerprint of what cuts a face crop (`row_settings` without the training copies' fields):
    two models trained on rows with the same one take the same crops, so `identify` can name stored
    crops again with a new model instead of reading their photos."""
    crop = {name: value for name, value in row_settings(prep).items() if name not in (*COPY_FIELDS, *COPY_CONSTANTS)}
    return fingerprint(crop)
