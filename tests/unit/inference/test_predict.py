"""`faceproc predict`: a real (tiny) trained model, real MTCNN, real photos; no mocks."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from faceproc.config import Config
from faceproc.core import storage
from faceproc.inference.artifact import ArtifactError, ModelArtifact
from faceproc.inference.openset import UNKNOWN, compute_centroids, decide, nearest_centroid
from faceproc.inference.predict import format_predictions, json_lines, predict_images, unreadable
from tests.conftest import train_tiny_cnn

PEOPLE = ["ben_afflek", "elton_john", "jerry_seinfeld", "madonna", "mindy_kaling"]


@pytest.fixture(scope="module")
def out_dir(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("predict") / "out"
    train_tiny_cnn(out / "models" / "cnn", PEOPLE)
    return out


@pytest.fixture(scope="module")
def config(out_dir: Path) -> Config:
    return Config(output=str(out_dir))


def _val_photo(dataset_dir: Path, person: str = "madonna") -> Path:
    photos = sorted((dataset_dir / "val" / person).glob("*.jpg"))
    assert photos, f"no val photos of {person}"
    return photos[0]


def test_real_photo_gives_faces_with_box_and_person(config, dataset_dir, tmp_path):
    photo = _val_photo(dataset_dir)
    blank = tmp_path / "blank.png"
    from PIL import Image

    Image.new("RGB", (200, 160), (128, 128, 128)).save(blank)
    junk = tmp_path / "notes.jpg"
    junk.write_text("this is not an image\n")
    missing = tmp_path / "gone.jpg"

    rows = predict_images(config, [str(photo), str(blank), str(junk), str(missing)], model="cnn")

    faces = [r for r in rows if r["image"] == str(photo)]
    assert faces, rows
    from PIL import Image as _Image

    width, height = _Image.open(photo).size
    for face in faces:
        x0, y0, x1, y1 = face["box"]
        assert 0 <= x0 < x1 <= width and 0 <= y0 < y1 <= height
        assert face["person"] in PEOPLE
        assert 0.0 < face["probability"] <= 1.0
        assert "reason" not in face

    (no_face,) = [r for r in rows if r["image"] == str(blank)]
    assert no_face == {"image": str(blank), "box": None, "person": None, "probability": None, "reason": "no_face"}

    (bad,) = [r for r in rows if r["image"] == str(junk)]
    assert bad["person"] is None and bad["box"] is None and bad["probability"] is None
    assert bad["reason"] == "not_an_image" and bad["detail"]

    (gone,) = [r for r in rows if r["image"] == str(missing)]
    assert gone["person"] is None and gone["reason"] == "read_error"
    assert unreadable(rows) == 2  # the junk and the missing file; the blank image was read

    # output order follows the input order
    assert [r["image"] for r in rows] == [str(photo)] * len(faces) + [str(blank), str(junk), str(missing)]

    lines = json_lines(rows).splitlines()
    assert len(lines) == len(rows)
    first = json.loads(lines[0])
    assert all(list(json.loads(line)) == ["image", "box", "person", "probability", "distance", "reason", "detail"]
               for line in lines)  # one schema for faces and images without one
    assert first["box"] == faces[0]["box"] and first["reason"] is None
    assert json.loads(lines[len(faces)]) == {"image": str(blank), "box": None, "person": None, "probability": None,
                                             "distance": None, "reason": "no_face", "detail": None}
    assert json.loads(lines[len(faces) + 1])["reason"] == "not_an_image"

    text = format_predictions(rows)
    assert faces[0]["person"] in text and "no face found" in text and "not_an_image" in text
    assert len(text.splitlines()) == len(rows) + 2


def test_faces_of_many_images_are_classified_in_chunks_with_the_rows_of_one_image_at_a_time(
        config, dataset_dir, tmp_path, monkeypatch):
    """The faces of a chunk of images go to the model in one call: the rows (order, boxes, people,
    probabilities) are those of one image per call, across a chunk boundary and a failed image."""
    import faceproc.inference.predict as predict

    photos = [str(p) for p in sorted((dataset_dir / "val").glob("*/*.jpg"))[:4]]
    junk = tmp_path / "junk.jpg"
    junk.write_text("not an image\n")
    images = [photos[0], str(junk), *photos[1:]]
    one_by_one = [row for image in images for row in predict_images(config, [image], model="cnn")]

    calls: list[int] = []
    classify = predict.ModelArtifact.load

    def counting_load(self, *args, **kwargs):
        model = classify(self, *args, **kwargs)
        original = model.classify
        model.classify = lambda faces, *args: calls.append(len(faces)) or original(faces, *args)
        return model

    monkeypatch.setattr(predict, "CLASSIFY_CHUNK", 3)
    monkeypatch.setattr(predict.ModelArtifact, "load", counting_load)
    chunked = predict_images(config, images, model="cnn")

    assert len(calls) == 2 and sum(calls) == sum(1 for row in one_by_one if row["box"] is not None)
    assert [(r["image"], r["box"], r["person"], r.get("reason")) for r in chunked] == \
        [(r["image"], r["box"], r["person"], r.get("reason")) for r in one_by_one]
    assert np.allclose([r["probability"] or 0 for r in chunked], [r["probability"] or 0 for r in one_by_one],
                       atol=1e-4)


def test_missing_model_says_train_first(config):
    with pytest.raises(ArtifactError, match="faceproc train"):
        predict_images(config, [], model="facenet")


def test_model_not_ok_in_training_is_refused(tmp_path):
    model_dir = tmp_path / "out" / "models" / "resnet50_imagenet"
    model_dir.mkdir(parents=True)
    (model_dir / "result.json").write_text(
        json.dumps({"model": "resnet50_imagenet", "status": "skipped", "reason": "no ImageNet weights"})
    )
    with pytest.raises(ArtifactError, match="skipped.*no ImageNet weights"):
        predict_images(Config(output=str(tmp_path / "out")), [], model="resnet50_imagenet")


# --- centroids and "unknown" on synthetic embeddings --------------------------------------


def _clusters(rng: np.random.Generator, n_per: int = 40, dim: int = 128):
    centres = {"alice": np.eye(dim)[0], "bob": np.eye(dim)[1], "carol": np.eye(dim)[2]}
    embeddings, labels = [], []
    for name, centre in centres.items():
        # unnormalised, with different scales: compute_centroids must normalise
        points = (centre + 0.05 * rng.standard_normal((n_per, dim))) * rng.uniform(0.5, 20, (n_per, 1))
        embeddings.append(points)
        labels += [name] * n_per
    return np.concatenate(embeddings), labels, centres


def _distances(embeddings, labels, table):
    """Impostor (nearest other centroid) and genuine (own centroid) distances, computed directly."""
    normed = embeddings / np.linalg.norm(embeddings, axis=1, keepdims=True)
    cents = np.asarray(table["centroids"])
    dist = np.linalg.norm(normed[:, None] - cents[None], axis=2)
    own = np.array([table["classes"].index(label) for label in labels])
    impostor = np.array([np.delete(row, i).min() for row, i in zip(dist, own)])
    return impostor, dist[np.arange(len(own)), own]


def test_centroids_are_normalised_class_means_and_plain_json():
    rng = np.random.default_rng(1)
    embeddings, labels, centres = _clusters(rng)
    table = compute_centroids(embeddings, labels, 0.01)
    assert table["classes"] == ["alice", "bob", "carol"]
    assert table["counts"] == {"alice": 40, "bob": 40, "carol": 40}
    cents = np.asarray(table["centroids"])
    assert cents.shape == (3, 128)
    np.testing.assert_allclose(np.linalg.norm(cents, axis=1), 1.0, rtol=1e-9)
    for i, name in enumerate(table["classes"]):
        assert cents[i] @ centres[name] > 0.95
    json.dumps(table)  # the centroids.json object is plain JSON
    with pytest.raises(ValueError):
        compute_centroids(embeddings, labels[:-1], 0.01)
    with pytest.raises(ValueError):
        compute_centroids(embeddings, labels, 1.5)
    with pytest.raises(ValueError):
        compute_centroids(np.zeros((0, 128)), [], 0.01)


def test_the_threshold_accepts_at_most_the_target_share_of_strangers():
    """Well separated people: the threshold lies between the known faces and the strangers, accepts
    at most 1% of the leave-one-person-out strangers and rejects no known face."""
    rng = np.random.default_rng(1)
    embeddings, labels, _ = _clusters(rng)
    table = compute_centroids(embeddings, labels, 0.01)
    calibration = table["calibration"]
    impostor, genuine = _distances(embeddings, labels, table)
    assert genuine.max() < table["threshold"] < impostor.max()
    assert np.sum(impostor <= table["threshold"]) <= 0.01 * len(impostor)
    assert calibration["estimated_far"] == pytest.approx(np.mean(impostor <= table["threshold"]))
    assert calibration["estimated_frr"] == 0.0
    assert (calibration["impostor_trials"], calibration["genuine_trials"]) == (120, 120)
    curve = calibration["curve"]
    assert np.all(np.diff(curve["far"]) >= 0) and np.all(np.diff(curve["frr"]) <= 0)
    assert curve["far"][0] == 0.0 and curve["frr"][-1] == 0.0
    assert compute_centroids(embeddings, labels, 0.5)["threshold"] > table["threshold"]  # a looser target


def test_overlapping_people_trade_false_rejects_for_the_false_accept_target():
    rng = np.random.default_rng(4)
    centres = rng.standard_normal((3, 16))
    embeddings = np.concatenate([c + 1.2 * rng.standard_normal((60, 16)) for c in centres])
    labels = [name for name in ("a", "b", "c") for _ in range(60)]
    strict = compute_centroids(embeddings, labels, 0.01)["calibration"]
    loose = compute_centroids(embeddings, labels, 0.2)["calibration"]
    assert strict["estimated_far"] <= 0.01 and loose["estimated_far"] <= 0.2
    assert strict["estimated_frr"] > loose["estimated_frr"] > 0  # the cost of a stricter target


def test_one_person_falls_back_to_the_own_distance_quantile():
    rng = np.random.default_rng(5)
    embeddings = np.eye(8)[0] + 0.1 * rng.standard_normal((30, 8))
    table = compute_centroids(embeddings, ["solo"] * 30, 0.01, quantile=0.9)
    _, own = _distances(np.concatenate([embeddings, -embeddings[:1]]), ["solo"] * 31,
                        {**table, "classes": ["solo", "x"], "centroids": [table["centroids"][0], [0.0] * 8]})
    assert table["threshold"] == pytest.approx(np.quantile(own[:30], 0.9))
    assert "one person" in table["calibration"]["method"]


def test_far_face_is_unknown_and_near_face_is_its_class():
    rng = np.random.default_rng(2)
    embeddings, labels, centres = _clusters(rng)
    table = json.loads(json.dumps(compute_centroids(embeddings, labels, 0.01)))  # as read from the file
    near = 7.0 * (centres["bob"] + 0.02 * rng.standard_normal(128))
    far = np.eye(128)[50] + 0.02 * np.eye(128)[0]  # nearest to alice, but as far as the other people are
    nearest, distances = nearest_centroid(np.stack([near, far]), table)
    assert nearest == ["bob", "alice"]
    assert distances[0] < table["threshold"] < distances[1]

    classes = table["classes"]
    # the softmax head says bob for the first face and alice (confidently) for the second
    probs = np.array([[0.1, 0.8, 0.1], [0.97, 0.02, 0.01]])
    verdicts = decide(probs, classes, distances, table["threshold"])
    assert verdicts[0] == ("bob", pytest.approx(0.8))
    assert verdicts[1] == (UNKNOWN, pytest.approx(0.97))  # probability is still the softmax max
    # without centroids the softmax answer stands
    assert decide(probs, classes)[1] == ("alice", pytest.approx(0.97))


def test_facenet_style_model_uses_backbone_and_centroids(tmp_path):
    """A small model with FaceNet's layout (input -> sub-model "facenet" -> head) and centroids.json:
    predict embeds with the backbone and reports unknown beyond the threshold."""
    from faceproc.models.facenet import attach_head, build_embedding_head
    from faceproc.models.keras_env import keras

    inputs = keras.Input(shape=(160, 160, 3), dtype="float32", name="image")
    pooled = keras.layers.GlobalAveragePooling2D()(keras.layers.Rescaling(1 / 255)(inputs))
    embedding = keras.layers.Dense(128, name="embed")(pooled)
    backbone = keras.Model(inputs, embedding, name="facenet")
    head = build_embedding_head(2)
    model = attach_head(backbone, head)
    model_dir = tmp_path / "out" / "models" / "facenet"
    model_dir.mkdir(parents=True)
    model.save(str(model_dir / "model.keras"))
    (model_dir / "classes.json").write_text(json.dumps(["alice", "bob"]))

    rng = np.random.default_rng(3)
    dark = rng.integers(0, 60, (6, 160, 160, 3)).astype(np.uint8)
    light = rng.integers(190, 256, (6, 160, 160, 3)).astype(np.uint8)
    train = np.concatenate([dark, light]).astype(np.float32)
    # unknown_far 1.0: every training face's distance is within the threshold
    table = compute_centroids(backbone.predict(train, verbose=0), ["alice"] * 6 + ["bob"] * 6, 1.0)
    (model_dir / "centroids.json").write_text(json.dumps(table))

    classifier = ModelArtifact(str(tmp_path / "out"), "facenet").load()
    assert classifier.backbone is not None and classifier.head is not None
    verdicts = classifier.classify([dark[0], light[0]])
    expected = model.predict(np.stack([dark[0], light[0]]).astype(np.float32), verbose=0)
    for verdict, probs in zip(verdicts, expected):
        assert verdict["person"] in ("alice", "bob")
        assert verdict["probability"] == pytest.approx(float(probs.max()), rel=1e-4)
        assert verdict["distance"] <= table["threshold"] + 1e-6

    # a face unlike every training face: far from both centroids
    odd = np.zeros((160, 160, 3), np.uint8)
    odd[..., 0] = 255
    (verdict,) = classifier.classify([odd])
    _, (distance,) = nearest_centroid(backbone.predict(odd[None].astype(np.float32), verbose=0), table)
    assert verdict["distance"] == pytest.approx(distance, rel=1e-4)
    assert (verdict["person"] == UNKNOWN) == (distance > table["threshold"])
    # and with a threshold of 0 every face is unknown, probability unchanged
    storage.write_json_atomic(str(model_dir / "centroids.json"), {**table, "threshold": 0.0})
    strict = ModelArtifact(str(tmp_path / "out"), "facenet").load().classify([dark[0]])
    assert strict[0]["person"] == UNKNOWN
    assert strict[0]["probability"] == pytest.approx(verdicts[0]["probability"], rel=1e-4)


def test_json_lines_keep_the_open_set_distance():
    row = {"image": "a.jpg", "box": [1, 2, 30, 40], "person": "unknown", "probability": 0.9, "distance": 1.25}
    assert json.loads(json_lines([row]))["distance"] == 1.25


def test_a_face_filed_under_two_people_is_said_to_ruin_the_threshold():
    """One alice photo (with its augmented copies) also filed under bob: the stranger trials it makes
    pull the threshold below most known faces, which the warning says, where clean data says nothing."""
    from faceproc.inference.openset import threshold_warning

    embeddings, labels, _ = _clusters(np.random.default_rng(0))
    clean = compute_centroids(embeddings, labels, unknown_far=0.01)["calibration"]
    assert threshold_warning(clean) is None and clean["estimated_frr"] < 0.2
    misfiled = np.concatenate([embeddings, np.repeat(embeddings[:1], 3, axis=0)])
    calibration = compute_centroids(misfiled, labels + ["bob"] * 3, unknown_far=0.01)["calibration"]
    warning = threshold_warning(calibration)
    assert calibration["estimated_frr"] > 0.2 and warning is not None
    assert warning.startswith(f"the unknown threshold {calibration['threshold']:.3f} calls "
                              f"{calibration['estimated_frr']:.0%} of the known train faces unknown")
