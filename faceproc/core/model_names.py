"""The model names, without importing Keras: what config, the CLI and the report order rows by.

It lives outside `faceproc.models`, whose builders and layers need Keras. The registry (`faceproc.models.registry`) builds exactly these; a test keeps the two equal.
"""

from __future__ import annotations

from collections.abc import Iterable

MODEL_NAMES: tuple[str, ...] = ("cnn", "resnet50", "resnet50_imagenet", "facenet")
FACENET_MODES: tuple[str, ...] = ("frozen", "finetune")  # train.facenet_mode: cached embeddings + head, or all

# The reference notebook's validation accuracy per model (its 25 validation photos). Its CNN varied
# between runs (0.44-0.60); the best run is the reference.
REFERENCE_ACCURACY: dict[str, float] = {"cnn": 0.60, "resnet50": 0.60, "resnet50_imagenet": 0.56, "facenet": 0.96}
# Those 25 photos, as the SHA-256 of their sorted SHA-256 hex digests, one per line: the notebook's
# numbers are shown beside a run's only when its validation photos are these (`reference_val_photos`).
REFERENCE_VAL_DIGEST = "0e38dd5145682974042cf9ed16202d7a925847adbfb1cf82594f57cc00eab8f7"


def model_order(names: Iterable[str]) -> list[str]:
    """`names` in training order (MODEL_NAMES), then any other names sorted."""
    names = set(names)
    return [m for m in MODEL_NAMES if m in names] + sorted(names - set(MODEL_NAMES))
