"""Loading FaceNet's pretrained weights from ``facenet_keras.h5`` without running anything in it.

``load_facenet_backbone(path)`` reads the ``model_config`` JSON attribute with h5py, rebuilds the
graph (:mod:`faceproc.models.facenet`), copies every layer's arrays from
``model_weights/<layer>/<weight>`` by layer name, checking names and shapes, and wraps the result
so it takes raw RGB 0..255 (160, 160, 3) and returns the 128-d embedding.

Errors: a missing file -> :class:`WeightsUnavailable` (run ``faceproc fetch-data``); a file that is
not HDF5 or is corrupt -> :class:`WeightsError` in one line; an HDF5 file of another model, or with
missing or misshapen weights -> :class:`WeightsError` naming what is wrong.

``backbone_fingerprint`` names what a backbone computes, so embeddings one model version stored can
be named by another with the same backbone.
"""

from __future__ import annotations

import hashlib
import os
from typing import Any

import h5py
import numpy as np

from faceproc.config import FACENET_FILE_NAME
from faceproc.core.errors import message_or_type
from faceproc.models.errors import WeightsError, WeightsUnavailable
from faceproc.models.facenet import build_inception_resnet_v1, wrap_backbone
from faceproc.models.keras_env import keras


def _open(path: str) -> h5py.File:
    if not os.path.isfile(path):
        fetch = (f"run `faceproc fetch-data --models-dir {os.path.dirname(path) or '.'}`, or "
                 if os.path.basename(path) == FACENET_FILE_NAME else "")
        raise WeightsUnavailable(
            f"FaceNet weights {path} do not exist: {fetch}point models_dir at the folder holding "
            f"{FACENET_FILE_NAME} (or train.facenet_weights at the file)"
        )
    if not h5py.is_hdf5(path):
        raise WeightsError(f"FaceNet weights {path} are not an HDF5 file (corrupt or wrong file)")
    try:
        return h5py.File(path, "r")
    except OSError as exc:
        raise WeightsError(f"FaceNet weights {path} cannot be read as HDF5: {message_or_type(exc)}") from None


def _model_config(f: h5py.File, path: str) -> str:
    raw = f.attrs.get("model_config")
    if raw is None:
        raise WeightsError(f"FaceNet weights {path} hold no model_config (a weights-only file?): not facenet_keras.h5")
    return raw.decode("utf-8") if isinstance(raw, bytes) else str(raw)


def _leaf(weight_name: str) -> str:
    """``"Block8_6_Conv2d_1x1/kernel:0"`` -> ``"kernel"``."""
    return weight_name.rsplit("/", 1)[-1].split(":", 1)[0]


def copy_weights(model: keras.Model, f: h5py.File | Any, path: str = "<h5>") -> int:
    """Copy arrays from ``f['model_weights'][<layer name>]`` into every layer of `model` that has weights.

    Returns the number of arrays copied; raises :class:`WeightsError` naming the first layer whose
    weights are missing or do not fit.
    """
    group = f["model_weights"] if "model_weights" in f else f
    pairs = []
    for layer in model.layers:
        targets = layer.weights
        if not targets:
            continue
        if layer.name not in group:
            raise WeightsError(f"FaceNet weights {path} have no weights for layer {layer.name!r}")
        layer_group = group[layer.name]
        names = [n.decode("utf-8") if isinstance(n, bytes) else str(n) for n in layer_group.attrs.get("weight_names", [])]
        if len(names) != len(targets):
            raise WeightsError(
                f"FaceNet weights {path}: layer {layer.name!r} has {len(names)} weight arrays, expected {len(targets)}"
            )
        for name, variable in zip(names, targets):
            if name not in layer_group:
                raise WeightsError(f"FaceNet weights {path}: layer {layer.name!r} lacks array {name!r}")
            if _leaf(name) != _leaf(variable.name):  # e.g. beta / moving_mean / moving_variance, same shape
                raise WeightsError(
                    f"FaceNet weights {path}: layer {layer.name!r} stores {name!r} where {_leaf(variable.name)!r} belongs"
                )
            array = np.asarray(layer_group[name])
            if tuple(array.shape) != tuple(variable.shape):
                raise WeightsError(
                    f"FaceNet weights {path}: {name!r} has shape {array.shape}, expected {tuple(variable.shape)}"
                )
            pairs.append((variable, array))
    keras.backend.batch_set_value(pairs)
    return len(pairs)


def load_facenet_backbone(weights_path: str) -> keras.Model:
    """The pretrained FaceNet: raw RGB 0..255 (160, 160, 3) -> 128-d embedding (not L2-normalised)."""
    path = os.path.expanduser(str(weights_path))
    with _open(path) as f:
        try:
            config = _model_config(f, path)
            try:
                inception = build_inception_resnet_v1(config)
            except WeightsError as exc:
                raise WeightsError(f"FaceNet weights {path}: {exc}") from exc
            if "model_weights" not in f:
                raise WeightsError(f"FaceNet weights {path} hold no model_weights group")
            copy_weights(inception, f, path)
        except (OSError, KeyError, RuntimeError) as exc:  # h5py errors on a truncated or damaged file
            raise WeightsError(f"FaceNet weights {path} are corrupt: {message_or_type(exc)}") from None
    return wrap_backbone(inception)


BACKBONE_GRAPH = b"faceproc wrap_backbone 1"  # in every fingerprint: change it when the graph around the weights does


def backbone_fingerprint(backbone: keras.Model) -> str:
    """SHA-256 of the backbone's weights, in order, with their shapes and types: the same for every
    model that embeds faces with these weights (a frozen FaceNet, retrained head or not)."""
    digest = hashlib.sha256(BACKBONE_GRAPH)
    for array in backbone.get_weights():
        array = np.ascontiguousarray(array)
        digest.update(f"{array.dtype}{array.shape}".encode())
        digest.update(array.tobytes())
    return digest.hexdigest()
