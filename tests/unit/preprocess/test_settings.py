"""The preprocessing settings fingerprint: what shapes a row counts, what only changes speed does not."""

from __future__ import annotations

import dataclasses

from faceproc.config import PreprocessConfig
from faceproc.preprocess.settings import describe_change, fingerprint, row_settings


def _fp(**changes) -> str:
    return fingerprint(row_settings(dataclasses.replace(PreprocessConfig(), **changes)))


def test_row_shaping_settings_change_the_fingerprint_and_speed_settings_do_not():
    base = _fp()
    for change in ({"face_margin": 0.4}, {"align": False}, {"augment_copies": 2}, {"seed": 1},
                   {"min_face_confidence": 0.9}, {"face_size": 128}, {"detect_max_side": 320}):
        assert _fp(**change) != base, change
    for change in ({"detector_actors": 4}, {"detector_num_cpus": 1.0}, {"detect_batch_size": 2},
                   {"actor_batch_size": 8}, {"detector_threads": 0}, {"rows_per_shard": 10},
                   {"max_reject_share": 0.5}):
        assert _fp(**change) == base, change


def test_a_value_counts_by_its_meaning_not_its_python_type():
    assert _fp(face_margin=0) == _fp(face_margin=0.0)
    assert _fp(min_face_confidence=1) == _fp(min_face_confidence=1.0)


def test_describe_change_names_each_changed_setting():
    old, new = row_settings(PreprocessConfig()), row_settings(PreprocessConfig(face_margin=0.4, align=False))
    assert describe_change(old, new) == "align true -> false, face_margin 0.1 -> 0.4"
    assert describe_change(None, new) == "rows made by an earlier faceproc or unknown settings"
