"""The preprocessing settings that shape a face row, and their fingerprint.

Every manifest row records the fingerprint of the settings that produced it. A rerun whose
fingerprint differs reprocesses exactly the files made with another one, so the live rows always
match the saved config. Settings that change only how fast rows are made (actor counts, CPUs per
actor, batch sizes, threads, rows per shard) and the reject-share limit are left out on purpose.
"""

from __future__ import annotations

import hashlib
import json
import typing
from collections.abc import Collection
from typing import Any

from faceproc.config import ConfigError, PreprocessConfig, unapplied_setting
from faceproc.core import layout, storage
from faceproc.preprocess import augment, detector, geometry

# What a settings record written before a field existed stands for: the behaviour of that time.
BEFORE_THE_FIELD = {"draft_decode": False}
ROW_FIELDS = ("max_pixels", "min_side", "detect_max_side", "draft_decode", "min_face_confidence", "min_face_size",
              "face_margin", "face_size", "align", "augment_copies", "seed")


def row_settings(prep: PreprocessConfig) -> dict[str, Any]:
    """The configured fields of ROW_FIELDS plus the constants in code that shape rows the same way
    (MTCNN thresholds, augmentation ranges, the alignment template), so a code change counts too."""
    hints = typing.get_type_hints(PreprocessConfig)  # 0 and 0.0 are one setting: the field's own type
    settings: dict[str, Any] = {name: hints[name](getattr(prep, name)) for name in ROW_FIELDS}
    settings["detector"] = [detector.THRESHOLD_PNET, detector.THRESHOLD_RNET, detector.CANDIDATE_THRESHOLD,
                            detector.RETRY_THRESHOLD_RNET]
    settings["augment_ranges"] = [augment.MAX_ROTATION_DEG, augment.MAX_ZOOM, augment.MAX_SHIFT,
                                  augment.FLIP_PROBABILITY, list(augment.BRIGHTNESS_RANGE)]
    settings["align_template"] = geometry.ALIGN_TEMPLATE.round(4).tolist()
    settings["align_limits"] = [geometry.TEMPLATE_MARGIN, geometry.MIN_EYE_DISTANCE, geometry.MAX_RESIDUAL,
                                list(geometry.SCALE_AGREEMENT)]
    return settings


def recorded_row_fields(out: str, made_with: Collection[str]) -> dict[str, Any] | None:
    """The ROW_FIELDS values of the settings record that rows made with the fingerprints `made_with`
    stand for, typed as `row_settings` wrote them; a field the record predates stands for
    BEFORE_THE_FIELD. None unless `made_with` is one fingerprint whose record is in OUT."""
    uri = layout.preprocess_settings(out, next(iter(made_with))) if len(made_with) == 1 else None
    if uri is None or not storage.exists(uri):
        return None
    saved = {**BEFORE_THE_FIELD, **storage.read_json(uri)}
    return {name: saved[name] for name in ROW_FIELDS if name in saved}


def adopt_row_fields(prep: PreprocessConfig, made_with: dict[str, Any], explicit: set[str], command: str) -> None:
    """For a command that reads face rows without making them (`train`, `evaluate`): set `prep`'s
    ROW_FIELDS to `made_with` (`recorded_row_fields` of OUT's rows), so the config saved beside its
    outputs says what produced them. A value the user set (`explicit` keys) that differs would not
    be applied, so it is refused (ConfigError) rather than recorded."""
    unapplied = unapplied_setting(prep, "preprocess", made_with, explicit)
    if unapplied:
        key, asked, value = unapplied
        raise ConfigError(f"{key}={describe_value(asked)} is not applied by `faceproc {command}`: the face rows in "
                          f"the output were made with {describe_value(value)}; `faceproc preprocess` (or `faceproc "
                          "run`) makes them again with it")
    for name, value in made_with.items():
        setattr(prep, name, value)


def fingerprint(settings: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:16]


def describe_change(old: dict[str, Any] | None, new: dict[str, Any]) -> str:
    """"face_margin 0.1 -> 0.4, align false -> true" for people; rows of an unknown fingerprint
    (an earlier faceproc, or a deleted settings record) are said to be so."""
    if old is None:
        return "rows made by an earlier faceproc or unknown settings"
    changed = [f"{key} {describe_value(old.get(key))} -> {describe_value(new.get(key))}"
               for key in sorted(set(old) | set(new)) if old.get(key) != new.get(key)]
    return ", ".join(changed) or "no visible difference"


def describe_settings_change(out: str, before: set[str], now: set[str]) -> str:
    """What differs between the settings two sets of row fingerprints in OUT stand for
    ("face_margin 0.1 -> 0.2"), as their saved settings records say."""
    current = saved_settings(out, min(now)) if now else None
    if current is None:
        return "the current ones are not recorded"
    return describe_change(saved_settings(out, min(before)) if before else None, current)


def describe_value(value: Any) -> str:
    """A setting's value as the messages show it: JSON for booleans, lists and null (true, not True)."""
    return json.dumps(value) if isinstance(value, (bool, list, dict)) or value is None else str(value)


def saved_settings(out: str, made_with: str | None) -> dict[str, Any] | None:
    """The settings a fingerprint stood for, as the run that published it recorded them."""
    uri = layout.preprocess_settings(out, made_with) if made_with else None
    return storage.read_json(uri) if uri and storage.exists(uri) else None
