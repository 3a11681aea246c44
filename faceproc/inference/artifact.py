"""A trained model's folder, OUT/models/<name>/, as one artifact: training writes it, evaluation and
`predict` read it, all through this module.

The folder holds (names in `core.layout`) `model.keras`, `classes.json`, `history.json`,
`config.json`, `result.json`, `trained_photos.parquet` and, for FaceNet, `centroids.json`, so a
reader must never pair one run's `model.keras` with another's `classes.json`. On a local disk a newly
trained model's files are written to a staging folder and swapped in whole by renames. Object storage
has no rename: there the files are written once into `versions/<version>/` and `current.json`, naming
that version, is written last (the commit); older versions are deleted after it. A training that
failed or was skipped writes `last_attempt.json` beside a usable model, which stays in use; with no
usable model, `result.json` and `config.json` say why there is none.
"""

from __future__ import annotations

import logging
import os
import re
import tempfile
import threading
import uuid
import zipfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from faceproc.core import layout, storage
from faceproc.core.schema import Status
from faceproc.inference import openset

log = logging.getLogger(__name__)

MODEL_FILES = (layout.MODEL_FILE, layout.HEAD_FILE, layout.CLASSES_FILE, layout.HISTORY_FILE, layout.CENTROIDS_FILE,
               layout.TRAINED_PHOTOS_FILE, layout.CONFIG_FILE, layout.RESULT_FILE, layout.LAST_ATTEMPT_FILE)
SHA256_HEX = re.compile(r"[0-9a-f]{64}")
BACKBONE_LAYER = "facenet"  # faceproc.models.facenet.wrap_backbone's default name

# The Keras models this process saved, by (OUT, model name) -> (model_version, model): evaluation right
# after training in the same process takes its model from here instead of reading the file back
# (loading resnet50 and FaceNet took about 15 s of a rerun's evaluation on the 2-core machine); each
# registry model predicts the same after a save and load (tests/unit/models). An entry serves only
# the version it was saved as, and only once, so nothing can change a model after it is handed out;
# evaluation releases what is left when it ends (`release_saved_models`), and at most
# JUST_SAVED_LIMIT are held meanwhile.
_just_saved: dict[tuple[str, str], tuple[str, Any]] = {}
_just_saved_lock = threading.Lock()  # models may train, and be saved, on threads of their own
JUST_SAVED_LIMIT = 4


class ArtifactError(RuntimeError):
    """A model folder that cannot be used; the message says which file and what to run."""


@dataclass
class TrainedFiles:
    """What a successful training leaves besides result.json and config.json."""

    model: Any  # keras.Model
    classes: list[str]
    history: dict[str, list[float]]
    centroids: dict[str, Any] | None = None
    photos: Any = None  # pa.Table: the train photos of the last from-scratch training (warm_start)
    head: Any = None  # keras.Model: a frozen FaceNet's head, saved alone too (`ModelArtifact.load_head`)


class ModelArtifact:
    """OUT/models/<name>/ of one model."""

    def __init__(self, out: str, name: str) -> None:
        self.out, self.name = out, name
        self.dir = self._live_dir()

    def _live_dir(self) -> str:
        """The version `current.json` names (object storage), else OUT/models/<name>/ itself."""
        pointer = layout.model_pointer(self.out, self.name)
        if storage.is_local(self.out) or not storage.exists(pointer):
            return layout.model_dir(self.out, self.name)
        return layout.model_version_dir(self.out, self.name, storage.read_json(pointer)["version"])

    @property
    def train_command(self) -> str:
        """What a user runs to (re)train this model, for messages."""
        return f"faceproc train --output {self.out} --models {self.name}"

    def file(self, name: str) -> str:
        return storage.join(self.dir, name)

    def _json(self, name: str) -> Any:
        """One of the folder's JSON files; an unreadable one (truncated, hand-edited) is an
        ArtifactError naming it, not a traceback."""
        uri = self.file(name)
        try:
            return storage.read_json(uri)
        except FileNotFoundError:
            raise  # missing is not unreadable: callers that read without asking first say what to run
        except (OSError, ValueError) as exc:
            raise ArtifactError(f"{uri} cannot be read: {type(exc).__name__}: {exc}") from None

    # ---- written by training

    def recover(self) -> None:
        """Put back the previous folder when a run died between moving it aside and the new one in
        (local disks; on object storage the pointer is the commit and there is nothing to undo)."""
        if storage.is_local(self.out):
            storage.restore_dir(self.dir)

    def saved_result(self) -> dict[str, Any] | None:
        """result.json as the last training wrote it, when there is one, it can be read, and its model
        file is there: an unreadable one is no usable model (the next training starts afresh)."""
        if not storage.exists(self.file(layout.RESULT_FILE)) or not storage.exists(self.file(layout.MODEL_FILE)):
            return None
        try:
            saved = self._json(layout.RESULT_FILE)
        except ArtifactError as exc:
            log.warning("%s: treated as no trained model", exc)
            return None
        return saved if isinstance(saved, dict) else None

    def last_attempt(self) -> dict[str, Any] | None:
        """last_attempt.json: a training that failed or was skipped after the model in use was saved
        (a later training that succeeds replaces the folder, and this file with it). An unreadable
        one counts as none: it only ever holds a retry back."""
        uri = self.file(layout.LAST_ATTEMPT_FILE)
        try:
            saved = storage.read_json(uri) if storage.exists(uri) else None
        except ValueError:
            return None
        return saved if isinstance(saved, dict) else None

    def version(self) -> str:
        """`model_version` from result.json; for a folder an earlier faceproc wrote, the content hash
        of its model file (so a replaced model is still told apart)."""
        saved = self.result().get("model_version")
        return str(saved) if saved else "sha-" + storage.sha256(self.file(layout.MODEL_FILE))[:12]

    def history(self) -> Any:
        """history.json's content (per-epoch lists), or None when there is none to read."""
        try:
            return self._json(layout.HISTORY_FILE)
        except (FileNotFoundError, ArtifactError):
            return None

    def trained_photos(self) -> Any:
        """The train photos (pa.Table) of the model's last from-scratch training, or None if unrecorded."""
        uri = self.file(layout.TRAINED_PHOTOS_FILE)
        return storage.read_table(uri) if storage.exists(uri) else None

    def up_to_date_result(self, fingerprint: str) -> dict[str, Any] | None:
        """The saved result when the model was trained with `fingerprint` and its model file is there."""
        saved = self.saved_result()
        return saved if saved and saved.get("status") == Status.OK and saved.get("fingerprint") == fingerprint else None

    def save(self, result: dict[str, Any], config: dict[str, Any], trained: TrainedFiles | None) -> None:
        """With `trained`: stage every file, then swap the folder in whole; result.json gains a new
        `model_version` (what identify's results are keyed by: every training gives new weights, even
        one with the same inputs). Without (training failed or was skipped): beside a usable model the
        attempt goes to last_attempt.json, so the model stays in use and its result.json and config.json
        still describe it; with no usable model, result.json says why there is none."""
        if trained is None:
            saved = self.saved_result()
            if saved is not None and saved.get("status") == Status.OK:
                storage.write_json_atomic(self.file(layout.LAST_ATTEMPT_FILE), result)
            else:
                self._write_result(self.dir, result, config)
            return
        version = uuid.uuid4().hex[:12]
        result["model_version"] = version
        if storage.is_local(self.out):
            staging = layout.model_staging_dir(self.out, self.name)
            storage.delete_dir(staging)
            self._write_files(staging, result, config, trained)
            storage.replace_dir(staging, self.dir)
        else:
            folder = layout.model_version_dir(self.out, self.name, version)
            self._write_files(folder, result, config, trained)
            storage.write_json_atomic(layout.model_pointer(self.out, self.name), {"version": version})
            self.dir = folder
            for old in storage.list_dirs(layout.model_versions_root(self.out, self.name)):
                if old != version:  # superseded, or left by a run that died before its pointer
                    storage.delete_dir(layout.model_version_dir(self.out, self.name, old))
            for name in MODEL_FILES:  # the flat folder an earlier faceproc wrote here
                storage.delete_file(storage.join(layout.model_dir(self.out, self.name), name))
        _remember(self.out, self.name, version, trained.model)

    def restamp(self, result: dict[str, Any], config: dict[str, Any]) -> None:
        """A warm start that kept the current weights: the model files and their `model_version` stay
        (so identify's results stand), and result.json and config.json now describe the inputs the
        weights were checked against, so the next run finds the model up to date."""
        result["model_version"] = (self.saved_result() or {}).get("model_version")
        self._write_result(self.dir, result, config)

    @staticmethod
    def _write_files(folder: str, result: dict[str, Any], config: dict[str, Any], trained: TrainedFiles) -> None:
        _save_keras(trained.model, storage.join(folder, layout.MODEL_FILE))
        storage.write_json_atomic(storage.join(folder, layout.CLASSES_FILE), trained.classes)
        storage.write_json_atomic(storage.join(folder, layout.HISTORY_FILE), trained.history)
        if trained.centroids is not None:
            storage.write_json_atomic(storage.join(folder, layout.CENTROIDS_FILE), trained.centroids)
        if trained.head is not None:
            _save_keras(trained.head, storage.join(folder, layout.HEAD_FILE))
        if trained.photos is not None:
            storage.write_table_atomic(storage.join(folder, layout.TRAINED_PHOTOS_FILE), trained.photos)
        ModelArtifact._write_result(folder, result, config)

    @staticmethod
    def _write_result(folder: str, result: dict[str, Any], config: dict[str, Any]) -> None:
        storage.write_json_atomic(storage.join(folder, layout.CONFIG_FILE), config)
        storage.write_json_atomic(storage.join(folder, layout.RESULT_FILE), result)

    # ---- read by evaluation and predict

    def result(self) -> dict[str, Any]:
        """result.json with `model` and `status` always set; a missing or unreadable file is `failed`."""
        rel = f"{layout.MODELS_DIR}/{self.name}/{layout.RESULT_FILE}"
        uri = self.file(layout.RESULT_FILE)
        if not storage.exists(uri):
            return {"model": self.name, "status": Status.FAILED,
                    "reason": f"{rel} is missing (training did not finish): run `{self.train_command}`"}
        try:
            saved = storage.read_json(uri)
        except (OSError, ValueError) as exc:
            return {"model": self.name, "status": Status.FAILED, "reason": f"{rel} cannot be read: {exc}"}
        if not isinstance(saved, dict):
            return {"model": self.name, "status": Status.FAILED, "reason": f"{rel} is not a JSON object"}
        return {**saved, "model": self.name, "status": str(saved.get("status") or Status.FAILED)}

    def classes(self) -> list[str]:
        """The person names of classes.json (a non-empty list of distinct strings)."""
        uri = self.file(layout.CLASSES_FILE)
        try:
            classes = self._json(layout.CLASSES_FILE)
        except FileNotFoundError:
            raise ArtifactError(f"{uri} is missing: run `{self.train_command}` first") from None
        if (not isinstance(classes, list) or not classes or not all(isinstance(c, str) for c in classes)
                or len(set(classes)) != len(classes)):
            raise ArtifactError(f"{uri} must hold a non-empty list of distinct person names")
        return classes

    def open_set(self) -> dict[str, Any] | None:
        """How the unknown threshold was chosen (centroids.json's calibration without its curve):
        threshold, target and estimated false-accept rate, false-reject rate; None without centroids."""
        uri = self.file(layout.CENTROIDS_FILE)
        if not storage.exists(uri):
            return None
        saved = self._json(layout.CENTROIDS_FILE)
        if not isinstance(saved, dict):
            raise ArtifactError(f"{uri} is not a JSON object")
        calibration = dict(saved.get("calibration") or {"method": "quantile of own-centroid distances"})
        calibration.pop("curve", None)
        return {**calibration, "threshold": saved.get("threshold")}

    def embedder(self) -> str | None:
        """The fingerprint of the backbone whose embeddings its head names (result.json's `embedder`,
        which a frozen FaceNet's training records), when its head and centroids are saved to name faces
        from stored embeddings: another version with the same one names them without FaceNet; else None."""
        recorded = self.result().get("embedder")
        if not (isinstance(recorded, str) and SHA256_HEX.fullmatch(recorded)):
            return None
        if not (storage.exists(self.file(layout.HEAD_FILE)) and storage.exists(self.file(layout.CENTROIDS_FILE))):
            return None
        return recorded

    def load_head(self) -> EmbeddingHead:
        """The head alone, with its classes and centroids, for faces whose embeddings are stored: a
        fraction of a second, where the whole model with FaceNet takes about 9 s on two cores."""
        uri = self.file(layout.HEAD_FILE)
        try:
            head = _load_keras(uri)
        except Exception as exc:
            raise ArtifactError(f"cannot load {uri} ({type(exc).__name__}: {exc}): `{self.train_command} --force` "
                                "saves the model again") from exc
        try:
            centroids = openset.validate_centroids(self._json(layout.CENTROIDS_FILE), self.file(layout.CENTROIDS_FILE))
        except (openset.CentroidsError, FileNotFoundError) as exc:
            raise ArtifactError(str(exc)) from None
        return EmbeddingHead(head, self.classes(), centroids)

    def unknown_settings(self) -> list[float] | None:
        """The [evaluate.unknown_far, evaluate.unknown_quantile] its centroids.json was calibrated with
        (result.json's `inputs`), or None: no centroids, or a model of an earlier faceproc."""
        if not storage.exists(self.file(layout.CENTROIDS_FILE)):
            return None
        result = self.result()
        return (result.get("inputs") or {}).get("unknown") if result["status"] == Status.OK else None

    def check_usable(self) -> None:
        """Fail early, in one line, when the model was not trained `ok` or its `model.keras` is missing or
        not a `.keras` archive (reads only the zip directory, also on remote storage)."""
        if storage.exists(self.file(layout.RESULT_FILE)):
            saved = self._json(layout.RESULT_FILE)
            status = saved.get("status") if isinstance(saved, dict) else None
            if status not in (None, Status.OK):
                why = saved.get("reason") or "no reason given"
                raise ArtifactError(f"model {self.name!r} was {status} in training ({why}): "
                                    f"run `{self.train_command}` again")
        rel = f"{layout.MODELS_DIR}/{self.name}/{layout.MODEL_FILE}"
        fs, path = storage.resolve(self.file(layout.MODEL_FILE))
        try:
            with fs.open_input_file(path) as stream, zipfile.ZipFile(stream) as archive:
                members = set(archive.namelist())
        except FileNotFoundError:
            trained = [m for m in storage.list_dirs(layout.models_root(self.out))
                       if storage.exists(ModelArtifact(self.out, m).file(layout.MODEL_FILE))]
            have = f" (trained models: {', '.join(trained)})" if trained else ""
            raise ArtifactError(f"no trained model {self.name!r}: {rel} is missing{have}; "
                                f"run `{self.train_command}` first") from None
        except (zipfile.BadZipFile, OSError, ValueError) as exc:
            raise ArtifactError(f"{rel} is not a readable .keras archive ({type(exc).__name__}: {exc})") from None
        if "config.json" not in members:
            raise ArtifactError(f"{rel} is not a .keras archive (no config.json inside)")

    def load(self, open_set: bool = True) -> TrainedModel:
        """The model ready to classify face crops (checked first, see `check_usable`); with `open_set`
        also its centroids, for the unknown check (evaluation, where every person is known, skips it).
        A model this process has just saved is handed out as it is in memory, once (`_recall`)."""
        self.check_usable()
        classes = self.classes()
        model_uri = self.file(layout.MODEL_FILE)
        model = _recall(self.out, self.name, lambda: self.result().get("model_version"))
        if model is None:
            try:
                model = _load_keras(model_uri)
            except Exception as exc:
                raise ArtifactError(f"cannot load {model_uri}: {type(exc).__name__}: {exc}") from exc
        centroids_uri = self.file(layout.CENTROIDS_FILE)
        centroids = None
        if open_set and storage.exists(centroids_uri):
            try:
                centroids = openset.validate_centroids(self._json(layout.CENTROIDS_FILE), centroids_uri)
            except openset.CentroidsError as exc:
                raise ArtifactError(str(exc)) from None
        elif open_set and self.name == "facenet":
            log.warning("%s is missing: faces are not checked against the known people ('unknown')", centroids_uri)
        return TrainedModel(model, classes, centroids, model_uri)


def open_set_verdicts(probs: np.ndarray, embeddings: np.ndarray, classes: list[str],
                      centroids: dict[str, Any]) -> list[dict[str, Any]]:
    """{"person", "probability", "distance"} per face from its softmax and its embedding: the argmax,
    or unknown when the embedding lies farther than the threshold from every centroid."""
    _, distances = openset.nearest_centroid(embeddings, centroids)
    decided = openset.decide(probs, classes, distances, centroids["threshold"])
    return [{"person": p, "probability": q, "distance": float(d)} for (p, q), d in zip(decided, distances)]


class EmbeddingHead:
    """A frozen FaceNet's head with its classes and centroids: faces named from their FaceNet
    embeddings, with the open-set check, and no backbone."""

    def __init__(self, head: Any, classes: list[str], centroids: dict[str, Any]) -> None:
        self.head, self.classes, self.centroids = head, classes, centroids

    def classify(self, embeddings: np.ndarray, with_embeddings: bool = False) -> list[dict[str, Any]]:
        """{"person", "probability", "distance"[, "embedding"]} per embedding (n, d); far ones are unknown."""
        if not len(embeddings):
            return []
        embeddings = np.asarray(embeddings, np.float32)
        probs = np.asarray(self.head(embeddings, training=False), dtype=np.float32)
        verdicts = open_set_verdicts(probs, embeddings, self.classes, self.centroids)
        if with_embeddings:
            for verdict, embedding in zip(verdicts, embeddings):
                verdict["embedding"] = embedding
        return verdicts


class TrainedModel:
    """A loaded model with its classes and, for FaceNet, the centroids of the open-set check."""

    def __init__(self, model: Any, classes: list[str], centroids: dict[str, Any] | None, where: str) -> None:
        units = model.output_shape[-1]
        if units != len(classes):
            raise ArtifactError(f"{where}: the model has {units} outputs but classes.json names {len(classes)} people")
        shape = tuple(model.input_shape)
        if len(shape) != 4 or shape[1] is None or shape[2] is None:
            raise ArtifactError(f"{where}: model input shape {shape} is not (None, height, width, 3)")
        self.model, self.classes, self.centroids = model, classes, centroids
        self.size = (int(shape[1]), int(shape[2]))
        self.backbone = self.head = None
        if centroids is not None:
            self.backbone, head = _split_facenet(model, where)
            self.head = None if head is None else EmbeddingHead(head, classes, centroids)

    def probabilities(self, faces: Sequence[np.ndarray]) -> np.ndarray:
        """(n, classes) softmax outputs for RGB uint8 face crops (resized when their size differs)."""
        return np.asarray(self.model(fit_to_input(faces, self.size), training=False), dtype=np.float32)

    def classify(self, faces: Sequence[np.ndarray], with_embeddings: bool = False) -> list[dict[str, Any]]:
        """{"person", "probability"[, "distance"]} per face crop; with centroids, far faces are unknown,
        and `with_embeddings` adds the backbone's "embedding" (identify stores it for `EmbeddingHead`)."""
        if not len(faces):
            return []
        x = fit_to_input(faces, self.size)
        if self.backbone is None:
            probs = self.model(x, training=False).numpy()
            return [{"person": p, "probability": q} for p, q in openset.decide(probs, self.classes)]
        embeddings = self.backbone(x, training=False).numpy()
        if self.head is not None:
            return self.head.classify(embeddings, with_embeddings)
        return open_set_verdicts(self.model(x, training=False).numpy(), embeddings, self.classes, self.centroids)

    def classify_groups(self, groups: Sequence[Sequence[np.ndarray]],
                        with_embeddings: bool = False) -> list[list[dict[str, Any]]]:
        """`classify` for the face crops of several photos in one model call (a call costs about as much
        for one face as for dozens); one list of verdicts per group, in order."""
        verdicts = iter(self.classify([crop for group in groups for crop in group], with_embeddings))
        return [[next(verdicts) for _ in group] for group in groups]


def _remember(out: str, name: str, version: str, model: Any) -> None:
    """Hold `model`, just saved as `version` of OUT's model `name`, for one `_recall`."""
    with _just_saved_lock:
        _just_saved[(out, name)] = (version, model)
        while len(_just_saved) > JUST_SAVED_LIMIT:
            del _just_saved[next(iter(_just_saved))]  # the oldest


def _recall(out: str, name: str, live_version: Callable[[], str | None]) -> Any:
    """The model this process saved of OUT's `name`, handed out once while `live_version()` (read
    only when one is held: a load in any other process never pays for it) is still its version;
    else None."""
    with _just_saved_lock:
        held = _just_saved.get((out, name))
        if held is None or held[0] != live_version():
            return None
        del _just_saved[(out, name)]
        return held[1]


def release_saved_models(out: str | None = None) -> None:
    """Drop the models `ModelArtifact.save` holds for OUT (for every output with None), once whatever
    could use them in this process has run."""
    with _just_saved_lock:
        for key in [key for key in _just_saved if out is None or key[0] == out]:
            del _just_saved[key]


def fit_to_input(faces: Sequence[np.ndarray], size: tuple[int, int]) -> np.ndarray:
    """Stack RGB uint8 crops as float32 0..255, resized to `size` (h, w) when a crop differs."""
    import cv2

    height, width = size
    out = np.empty((len(faces), height, width, 3), np.float32)
    for i, face in enumerate(faces):
        if face.shape[:2] != (height, width):
            face = cv2.resize(face, (width, height), interpolation=cv2.INTER_AREA)
        out[i] = face
    return out


def _split_facenet(model: Any, where: str) -> tuple[Any, Any]:
    """The model's FaceNet backbone sub-model and, when the model is exactly backbone -> head, the head."""
    from faceproc.models.keras_env import keras

    try:
        backbone = model.get_layer(BACKBONE_LAYER)
    except ValueError:
        raise ArtifactError(f"{where}: centroids.json is present but the model has no {BACKBONE_LAYER!r} "
                            "backbone") from None
    rest = [layer for layer in model.layers if layer is not backbone and not isinstance(layer, keras.layers.InputLayer)]
    head = None
    if len(rest) == 1 and tuple(getattr(rest[0], "input_shape", ()) or ()) == tuple(backbone.output_shape):
        head = rest[0]
    return backbone, head


def _load_keras(model_uri: str) -> Any:
    """A `.keras` file from a local path or a URI (a remote file is copied to a temp dir first)."""
    from faceproc.models.saving import load_model  # its import registers faceproc's layers

    if storage.is_local(model_uri):
        return load_model(storage.resolve(model_uri)[1], compile=False)
    with tempfile.TemporaryDirectory(prefix="faceproc-model-") as tmp:
        path = os.path.join(tmp, layout.MODEL_FILE)
        with open(path, "wb") as f:
            f.write(storage.read_bytes(model_uri))
        return load_model(path, compile=False)


def _save_keras(model: Any, uri: str) -> None:
    """Keras writes to a local file; storage moves it to OUT (local or object storage)."""
    with tempfile.TemporaryDirectory() as tmp:
        local = os.path.join(tmp, layout.MODEL_FILE)
        model.save(local)
        with open(local, "rb") as stream:
            storage.write_bytes_atomic(uri, stream.read())

