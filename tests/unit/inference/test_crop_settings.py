"""Inference crops with the settings of the rows a model was trained on, not the command line's."""

from __future__ import annotations

import dataclasses

from faceproc.config import PreprocessConfig
from faceproc.core import layout, storage
from faceproc.inference.crop_settings import training_preprocess
from faceproc.preprocess.settings import fingerprint, row_settings


def test_the_models_row_settings_win_over_the_command_line_and_runtime_knobs_stay(tmp_path):
    out = str(tmp_path)
    trained_with = PreprocessConfig(face_margin=0.3, align=False)
    record = row_settings(trained_with)
    storage.write_json_atomic(layout.preprocess_settings(out, fingerprint(record)), record)
    runtime = PreprocessConfig(detector_actors=7)
    prep = training_preprocess(out, runtime, {"model": "cnn", "row_settings": [fingerprint(record)]})
    assert (prep.face_margin, prep.align, prep.detector_actors) == (0.3, False, 7)


def test_a_record_older_than_a_field_means_that_fields_old_behaviour(tmp_path):
    out = str(tmp_path)
    record = {k: v for k, v in row_settings(PreprocessConfig()).items() if k != "draft_decode"}
    storage.write_json_atomic(layout.preprocess_settings(out, "old"), record)
    assert training_preprocess(out, PreprocessConfig(), {"row_settings": ["old"]}).draft_decode is False


def test_without_a_record_the_current_settings_are_used(tmp_path):
    runtime = PreprocessConfig(face_margin=0.2)
    assert training_preprocess(str(tmp_path), runtime, {"model": "cnn"}) is runtime
    assert training_preprocess(str(tmp_path), runtime, {"row_settings": ["gone"]}) is runtime


def test_a_crop_setting_the_user_set_otherwise_is_refused_not_silently_replaced(tmp_path):
    import pytest

    from faceproc.config import ConfigError
    from faceproc.inference.crop_settings import refuse_other_crops

    out = str(tmp_path)
    record = row_settings(PreprocessConfig(face_margin=0.3, align=False))
    storage.write_json_atomic(layout.preprocess_settings(out, fingerprint(record)), record)
    result = {"model": "cnn", "row_settings": [fingerprint(record)]}
    asked = PreprocessConfig(face_margin=0.4, align=False, detector_actors=3)
    refuse_other_crops(out, asked, result, {"preprocess.detector_actors"}, "identify")  # a run-time knob: fine
    refuse_other_crops(out, asked, result, {"preprocess.align"}, "identify")  # set, but to the model's value
    with pytest.raises(ConfigError, match=r"preprocess.face_margin=0.4 is not applied by `faceproc predict`: it "
                                          r"cuts faces as cnn was trained on them \(0.3\)"):
        refuse_other_crops(out, asked, result, {"preprocess.face_margin"}, "predict")


def test_the_crop_fingerprint_follows_what_cuts_a_crop_and_not_the_training_copies():
    from faceproc.inference.crop_settings import crop_fingerprint

    base = PreprocessConfig()
    assert crop_fingerprint(dataclasses.replace(base, augment_copies=7, seed=3)) == crop_fingerprint(base)
    assert crop_fingerprint(dataclasses.replace(base, face_margin=base.face_margin + 0.1)) != crop_fingerprint(base)
    assert crop_fingerprint(dataclasses.replace(base, align=not base.align)) != crop_fingerprint(base)
