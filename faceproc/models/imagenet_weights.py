"""Where ResNet50's ImageNet weights come from, apart from the architecture (`faceproc.models.resnet`).

The notop file (``resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5``, 94 MB) is looked for in
this order: the file the user names (``train.imagenet_weights``), ``<models_dir>/resnet50_imagenet_notop.h5``,
then Keras' own download and cache (``~/.keras/models/``, or ``$KERAS_HOME/models/``), with the URL
and hash that ``keras.applications`` uses (``$FACEPROC_IMAGENET_WEIGHTS_URL`` may name a mirror of
the same file). When none works, :class:`~faceproc.models.errors.WeightsUnavailable` says why and
where to put the file.

Importing this module does not import TensorFlow: a rerun asks :func:`local_imagenet_weights`
whether a skipped model's weights have appeared without paying for it.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import re
from collections.abc import Iterator
from typing import Any

from faceproc.models.errors import WeightsUnavailable

log = logging.getLogger(__name__)

LOCAL_WEIGHTS_NAME = "resnet50_imagenet_notop.h5"  # the name looked for in models_dir
KERAS_WEIGHTS_NAME = "resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5"
KERAS_CACHE_SUBDIR = "models"
URL_ENV = "FACEPROC_IMAGENET_WEIGHTS_URL"  # a mirror of the file, for clusters without internet
FALLBACK_URL = "https://storage.googleapis.com/tensorflow/keras-applications/resnet/" + KERAS_WEIGHTS_NAME
FALLBACK_MD5 = "4d473c1dd8becc155b73f8504c6f6626"


@functools.cache
def keras_download() -> tuple[str, str]:
    """The URL and MD5 that ``keras.applications.ResNet50(weights="imagenet", include_top=False)``
    uses, read from the installed tf_keras so they follow its version."""
    try:
        from tf_keras.src.applications.resnet import BASE_WEIGHTS_PATH, WEIGHTS_HASHES

        return BASE_WEIGHTS_PATH + KERAS_WEIGHTS_NAME, WEIGHTS_HASHES["resnet50"][1]
    except (ImportError, KeyError, IndexError):  # pragma: no cover - layout of a future tf_keras
        return FALLBACK_URL, FALLBACK_MD5


def _cache_dir(cache_dir: str | None) -> str | None:
    return cache_dir or os.environ.get("KERAS_HOME") or None


def keras_cache_path(cache_dir: str | None = None) -> str:
    """Where ``keras.utils.get_file`` keeps the ImageNet file (its own rule: ~/.keras, else /tmp/.keras)."""
    base = os.path.expanduser(_cache_dir(cache_dir) or os.path.join("~", ".keras"))
    if not os.access(base, os.W_OK):
        base = os.path.join("/tmp", ".keras")
    return os.path.join(base, KERAS_CACHE_SUBDIR, KERAS_WEIGHTS_NAME)


def models_dir_weights(models_dir: str) -> str:
    """Where faceproc looks for the file in `models_dir`, before Keras' cache."""
    return os.path.abspath(os.path.join(models_dir, LOCAL_WEIGHTS_NAME))


def local_imagenet_weights(user_path: str | None, models_dir: str, cache_dir: str | None = None) -> str | None:
    """The weights file that is already on this machine, without downloading: the user's file, the
    one in `models_dir`, or Keras' cached download; None when there is none."""
    if user_path:
        path = os.path.abspath(os.path.expanduser(user_path))
        return path if os.path.isfile(path) else None
    for path in (models_dir_weights(models_dir), keras_cache_path(cache_dir)):
        if os.path.isfile(path):
            return path
    return None


def resolve_imagenet_weights(
    user_path: str | None,
    models_dir: str,
    *,
    origin: str | None = None,
    cache_dir: str | None = None,
) -> str:
    """A local path to ResNet50 ImageNet notop weights, or :class:`WeightsUnavailable`.

    1. ``user_path`` when given; it must exist (no fallback: the user asked for that file).
    2. ``<models_dir>/resnet50_imagenet_notop.h5`` when present.
    3. ``keras.utils.get_file`` (download once into Keras' cache, MD5-checked). The URL is
       ``origin``, else ``$FACEPROC_IMAGENET_WEIGHTS_URL`` (a mirror), else Keras' own; the cache is
       ``cache_dir``, else ``$KERAS_HOME``, else Keras' default ``~/.keras``.
    """
    url, md5 = keras_download()
    origin = origin or os.environ.get(URL_ENV) or url
    cache_dir = _cache_dir(cache_dir)
    if user_path:
        path = os.path.expanduser(user_path)
        if not os.path.isfile(path):
            raise WeightsUnavailable(
                f"ResNet50 ImageNet weights file {user_path!r} (train.imagenet_weights) does not exist"
            )
        return os.path.abspath(path)
    local = models_dir_weights(models_dir)
    if os.path.isfile(local):
        return local
    if cache_dir:  # get_file silently falls back to /tmp/.keras when the directory does not exist
        try:
            os.makedirs(os.path.expanduser(cache_dir), exist_ok=True)
        except OSError:
            pass
    from faceproc.models.keras_env import keras

    if not os.path.isfile(keras_cache_path(cache_dir)):  # Keras' cached file is checked, not fetched
        log.info("resnet50_imagenet: fetching ImageNet weights from %s", origin)
    try:
        with _keras_prints_to_logging(keras):
            return keras.utils.get_file(KERAS_WEIGHTS_NAME, origin, cache_subdir=KERAS_CACHE_SUBDIR,
                                        file_hash=md5, cache_dir=cache_dir)
    except Exception as exc:  # get_file raises a bare Exception on URL errors, ValueError on a bad hash
        raise WeightsUnavailable(
            f"ResNet50 ImageNet weights could not be downloaded from {origin} ({_download_error(exc)}). "
            f"Put {KERAS_WEIGHTS_NAME} at {local} or at {keras_cache_path(cache_dir)}, or name it with "
            "--set train.imagenet_weights=PATH"
        ) from exc


def _download_error(exc: Exception) -> str:
    """What went wrong, without the URL Keras repeats: "URL fetch failure on <url>: None -- [Errno -2] Name
    or service not known" -> "[Errno -2] Name or service not known"."""
    text = " ".join(str(exc).split()) or type(exc).__name__
    match = re.fullmatch(r"URL fetch failure on \S+: (?:None -- )?(.+)", text)
    return match.group(1) if match else text


@contextlib.contextmanager
def _keras_prints_to_logging(keras: Any) -> Iterator[None]:
    """Keras' own "Downloading data from ..." and progress bar go to absl logging (quiet unless
    `-v`) instead of stdout, in this thread: Keras keeps the switch per thread, and models trained
    at once each run in their own."""
    interactive = keras.utils.is_interactive_logging_enabled()
    keras.utils.disable_interactive_logging()
    try:
        yield
    finally:
        if interactive:
            keras.utils.enable_interactive_logging()
