"""The main job end to end on the fetched photos, then `predict` on its models (slow)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from PIL import Image

from faceproc.cli import main
from faceproc.config import Config
from faceproc.pipeline import run_pipeline
from tests.browser import needs_chromium, render
from tests.conftest import FACENET_WEIGHTS

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("ray_session")]

SHORT = {"resnet50": 1, "resnet50_imagenet": 1}  # cnn and facenet keep their defaults


def _config(dataset_dir: Path, out: Path) -> Config:
    config = Config(input=str(dataset_dir), output=str(out))
    config.train.model_epochs = dict(SHORT)
    return config


@pytest.fixture(scope="module")
def pipeline(real_out, dataset_dir, tmp_path_factory, monkeypatch_module):
    keras_home = tmp_path_factory.mktemp("keras")  # no cached ImageNet weights: the offline case
    monkeypatch_module.setenv("KERAS_HOME", str(keras_home))
    monkeypatch_module.setenv("FACEPROC_IMAGENET_WEIGHTS_URL", "http://127.0.0.1:9/resnet50_notop.h5")
    config = _config(dataset_dir, real_out)
    config.models_dir = str(tmp_path_factory.mktemp("empty-models"))
    config.train.facenet_weights = str(FACENET_WEIGHTS)
    return config, run_pipeline(config)


@pytest.fixture(scope="module")
def monkeypatch_module():
    with pytest.MonkeyPatch.context() as patch:
        yield patch


def test_accuracy_table(pipeline):
    config, result = pipeline
    out = Path(config.output)
    rows = json.loads((out / "reports" / "accuracy.json").read_text())
    assert [r["model"] for r in rows] == ["cnn", "resnet50", "resnet50_imagenet", "facenet"]
    by_model = {r["model"]: r for r in rows}
    assert by_model["resnet50_imagenet"]["status"] == "skipped"
    assert "resnet50_imagenet_notop.h5" in by_model["resnet50_imagenet"]["reason"]
    assert by_model["cnn"]["status"] == by_model["resnet50"]["status"] == "ok"
    facenet, cnn = by_model["facenet"], by_model["cnn"]
    assert facenet["status"] == "ok" and facenet["accuracy_end_to_end"] >= 0.96  # the notebook's number
    assert cnn["ci_low"] > 1 / 5, cnn  # the default cnn, on aligned faces: above chance for five people
    assert facenet["ci_low"] <= facenet["accuracy"] <= facenet["ci_high"]
    assert not result.failed
    for name in ("accuracy.csv", "accuracy.md", "report.html", "config.json"):
        assert (out / "reports" / name).stat().st_size > 0
    assert "0.96" in (out / "reports" / "accuracy.md").read_text()  # the notebook's FaceNet number


def test_predictions_one_row_per_ok_model_and_val_face(pipeline):
    config, _ = pipeline
    out = Path(config.output)
    predictions = pq.read_table(out / "reports" / "predictions.parquet").to_pandas()
    val_faces = sum(pq.read_metadata(f).num_rows for f in (out / "shards" / "val").glob("*.parquet"))
    assert sorted(predictions.model.unique()) == ["cnn", "facenet", "resnet50"]
    assert len(predictions) == 3 * val_faces
    assert predictions.groupby("model").source_path.nunique().eq(val_faces).all()
    sums = predictions.probabilities.map(lambda pairs: sum(p for _, p in pairs))
    assert np.allclose(sums, 1.0, atol=1e-3)


def test_run_history_and_a_rerun_with_nothing_new(pipeline, capsys):
    config, result = pipeline
    out = Path(config.output)
    record = json.loads((out / "runs" / f"{result.run_id}.json").read_text())
    assert set(record["stages"]) == {"fetch", "preprocess", "train", "evaluate"}
    again = run_pipeline(config)
    assert (again.preprocess.processed, again.accuracy) == (0, None)
    assert all(r.get("up_to_date") or r["status"] == "skipped" for r in again.training)
    assert again.stages["evaluate"].startswith("skipped")


@needs_chromium
def test_report_renders(pipeline):
    config, _ = pipeline
    (result,) = render(Path(config.output) / "reports" / "report.html", widths=(1280,))
    assert result.errors == [] and result.broken_images == [] and result.images > 50
    colours, non_white = result.screenshot_stats()
    assert colours > 500 and non_white > 0.15


def _val_photo(dataset_dir: Path, person: str) -> Path:
    return sorted((dataset_dir / "val" / person).iterdir())[0]


def test_predict_names_the_right_person(pipeline, dataset_dir, capsys):
    config, _ = pipeline
    photo = _val_photo(dataset_dir, "mindy_kaling")
    code = main(["predict", "--output", config.output, "--json", str(photo)])
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert code == 0 and lines
    best = max(lines, key=lambda row: row["probability"] or 0)
    assert set(best) >= {"image", "box", "person", "probability"}
    assert best["person"] == "mindy_kaling" and len(best["box"]) == 4


def test_predict_a_stranger_is_unknown_and_a_wall_has_no_face(pipeline, tmp_path, capsys):
    from skimage import data

    config, _ = pipeline
    stranger = tmp_path / "astronaut.png"
    Image.fromarray(data.astronaut()).save(stranger)
    wall = tmp_path / "wall.jpg"
    Image.new("RGB", (300, 300), (200, 190, 180)).save(wall)
    assert main(["predict", "--output", config.output, "--json", str(stranger), str(wall)]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    faces = [r for r in rows if r["image"] == str(stranger)]
    assert faces and all(r["person"] == "unknown" for r in faces)
    (no_face,) = [r for r in rows if r["image"] == str(wall)]
    assert no_face["person"] is None and no_face["reason"] == "no_face"
    assert main(["predict", "--output", config.output, str(wall)]) == 0
    assert "no face" in capsys.readouterr().out.lower()
