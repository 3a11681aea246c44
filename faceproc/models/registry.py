"""The four models by name, with the training defaults each one gets.

| name                | model                                        | size | epochs | batch | optimizer, lr, schedule       |
|---------------------|----------------------------------------------|------|--------|-------|-------------------------------|
| `cnn`               | the notebook CNN + BatchNorm (94,565 params) | 32   | 60     | 16    | adam 3e-3, warm-up 3 + cosine |
| `resnet50`          | ResNet50 random init + head (25.7 M)         | 48   | 45     | 16    | adam 1e-3, warm-up 3 + cosine |
| `resnet50_imagenet` | ResNet50 ImageNet + head (25.7 M)            | 160  | 8      | 16    | adam 1e-4, warm-up 1 + cosine |
| `facenet`           | FaceNet + L2 + softmax head (22.8 M)         | 160  | 20     | 32    | adam 1e-2                     |

Every model takes the aligned 160x160 face crop; "size" is the side it works at (`image_size`),
resized inside the model. The two models trained from scratch learn more from 74 photos at 32x32
(cnn) and 48x48 (resnet50) than at 160 (holdout accuracy, docs/benchmarks.md, "Recognition quality"), at a small part of the
cost; the pretrained ones keep the size their weights were trained at.

Early stopping keeps the epoch with the lowest holdout loss, after `min_epochs`: 20 for cnn, the
whole schedule for resnet50. In both, an early epoch at chance accuracy can keep the lowest holdout
loss for longer than `train.patience`, and patience alone would then keep its weights.

The three image models see new variants of every training face each epoch (`train.online_augment`,
`faceproc.train.online_augment`), so preprocessing stores no augmented copies by default; ResNet50
from scratch uses a BatchNormalization momentum of 0.9, so its moving statistics settle within its
few hundred steps.

FaceNet in the default ``frozen`` mode trains only its head on cached embeddings, so its epochs cost
milliseconds (the embeddings, one backbone pass over the data, are the real cost); its holdout
accuracy is 1.0 from the first epoch. In ``finetune`` mode FaceNet trains end to end on images and
defaults to 10 epochs, batch 16, Adam 1e-5 (see :func:`resolve_spec`). ``train.epochs``,
``train.batch_size`` and ``train.learning_rate`` override any of these when set.

Each spec's ``make(num_classes, context)`` returns an uncompiled Keras model taking raw RGB 0..255
(160, 160, 3). Builders that need pretrained weights find them through the :class:`BuildContext`
and raise :class:`~faceproc.models.errors.WeightsUnavailable` (report the model as skipped) or
:class:`~faceproc.models.errors.WeightsError` (a file that does not fit) when they cannot.
"""

from __future__ import annotations

import dataclasses
import operator
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from faceproc.config import TrainConfig, facenet_weights_path
from faceproc.core import storage
from faceproc.core.model_names import FACENET_MODES
from faceproc.models.errors import UnknownModelError

if TYPE_CHECKING:  # the registry is read without TensorFlow: a rerun decides what to train before importing it
    from faceproc.models.keras_env import keras

# name -> tf-keras optimizer class. Adam and SGD are tf-keras' legacy classes: they apply each variable's
# update as one fused kernel (ResourceApplyAdam, ...) where the newer classes build a dozen ops per
# variable. For ResNet50's 322 variables that trace was 11 s of its first epoch's 20 s of tracing on
# the 2-core machine, and its later epochs ran 0.73x as long with the fused kernels (docs/benchmarks.md,
# "The optimizer's trace"). The update rule is the same; the legacy RMSprop puts epsilon inside the
# square root, and AdamW exists only as the newer class.
OPTIMIZERS = {"adam": "legacy.Adam", "adamw": "AdamW", "sgd": "legacy.SGD", "rmsprop": "RMSprop"}
RESNET_FROM_SCRATCH_BN_MOMENTUM = 0.9  # moving statistics that settle within its few hundred steps


@dataclass(frozen=True)
class BuildContext:
    """What builders need besides the class count: the training config and where weights live."""

    train: TrainConfig = field(default_factory=TrainConfig)
    models_dir: str = "models"

    @property
    def facenet_weights_path(self) -> str:
        """``train.facenet_weights``, or ``<models_dir>/facenet_keras.h5`` (:func:`faceproc.config.facenet_weights_path`)."""
        return facenet_weights_path(self.train.facenet_weights, self.models_dir)

    @property
    def facenet_mode(self) -> str:
        mode = self.train.facenet_mode
        if mode not in FACENET_MODES:
            raise ValueError(f"train.facenet_mode must be one of {', '.join(FACENET_MODES)}, got {mode!r}")
        return mode


@dataclass(frozen=True)
class ModelSpec:
    """One trainable model: how to build it and its default training settings."""

    name: str
    build: Callable[[int, BuildContext, int], keras.Model]  # (classes, context, image_size): use `make`
    epochs: int
    batch_size: int
    learning_rate: float
    optimizer: str
    description: str
    schedule: str = "constant"  # or "cosine": linear warm-up to learning_rate, then cosine decay to 0
    warmup_epochs: int = 0
    weight_decay: float = 0.0  # decoupled (AdamW); 0 for the other optimizers
    online_augment: bool = False  # new flips, turns, zooms, shifts and lighting of every face each epoch
    min_epochs: int = 0  # early stopping waits at least this long (a from-scratch start is erratic)
    image_size: int = 160  # the side the network works at: every model takes the 160x160 crop and
    # resizes it inside (so the saved model's input never changes); smaller is quadratically cheaper
    local_weights: Callable[[BuildContext], str | None] | None = None  # the pretrained weights already on
    # this machine (no download), None when absent; unset for a model that starts from random weights

    def make(self, num_classes: int, context: BuildContext) -> keras.Model:
        """This spec's uncompiled Keras model for `num_classes` classes."""
        return self.build(num_classes, context, self.image_size)

    def make_optimizer(self, steps_per_epoch: int) -> keras.optimizers.Optimizer | keras.optimizers.legacy.Optimizer:
        """A fresh Keras optimizer of this spec's kind (adam, adamw, sgd, rmsprop), its learning rate on
        this spec's schedule over `epochs` of `steps_per_epoch` steps."""
        from faceproc.models.keras_env import keras

        try:
            optimizer_class = operator.attrgetter(OPTIMIZERS[self.optimizer.lower()])(keras.optimizers)
        except KeyError:
            raise ValueError(
                f"model {self.name!r}: unknown optimizer {self.optimizer!r}; use one of {', '.join(OPTIMIZERS)}"
            ) from None
        extra = {"weight_decay": self.weight_decay} if self.optimizer.lower() == "adamw" else {}
        return optimizer_class(learning_rate=self.learning_rate_schedule(steps_per_epoch), **extra)

    def learning_rate_schedule(self, steps_per_epoch: int) -> float | keras.optimizers.schedules.LearningRateSchedule:
        """The learning rate, or for `cosine` a warm-up from a tenth of it, then a cosine decay to 0."""
        from faceproc.models.keras_env import keras

        if self.schedule == "constant":
            return self.learning_rate
        if self.schedule != "cosine":
            raise ValueError(f"model {self.name!r}: unknown schedule {self.schedule!r}; use constant or cosine")
        warmup = min(self.warmup_epochs, self.epochs - 1) * steps_per_epoch
        return keras.optimizers.schedules.CosineDecay(
            self.learning_rate / 10, max(1, self.epochs * steps_per_epoch - warmup),
            warmup_target=self.learning_rate, warmup_steps=warmup)


def _build_cnn(num_classes: int, context: BuildContext, image_size: int) -> keras.Model:
    from faceproc.models.cnn import build_cnn

    return build_cnn(num_classes, image_size=image_size)


def _build_resnet50(num_classes: int, context: BuildContext, image_size: int) -> keras.Model:
    from faceproc.models.resnet import build_resnet50

    return build_resnet50(num_classes, None, name="resnet50", bn_momentum=RESNET_FROM_SCRATCH_BN_MOMENTUM,
                          image_size=image_size)


def _build_resnet50_imagenet(num_classes: int, context: BuildContext, image_size: int) -> keras.Model:
    from faceproc.models.imagenet_weights import resolve_imagenet_weights
    from faceproc.models.resnet import build_resnet50

    weights = resolve_imagenet_weights(context.train.imagenet_weights, context.models_dir)
    return build_resnet50(num_classes, weights, name="resnet50_imagenet", image_size=image_size)


def _local_imagenet_weights(context: BuildContext) -> str | None:
    from faceproc.models.imagenet_weights import local_imagenet_weights

    return local_imagenet_weights(context.train.imagenet_weights, context.models_dir)


def _local_facenet_weights(context: BuildContext) -> str | None:
    return context.facenet_weights_path if storage.exists(context.facenet_weights_path) else None


def _build_facenet(num_classes: int, context: BuildContext, image_size: int) -> keras.Model:
    """FaceNet works at 160, the size its weights were trained at (`image_size` is always 160)."""
    from faceproc.models.facenet import build_facenet_classifier
    from faceproc.models.facenet_weights import load_facenet_backbone

    mode = context.facenet_mode
    backbone = load_facenet_backbone(context.facenet_weights_path)
    return build_facenet_classifier(backbone, num_classes, trainable_backbone=mode == "finetune")


REGISTRY: dict[str, ModelSpec] = {
    spec.name: spec
    for spec in (
        ModelSpec(
            name="cnn",
            build=_build_cnn,
            epochs=60,
            batch_size=16,
            learning_rate=3e-3,
            optimizer="adam",
            schedule="cosine",
            warmup_epochs=3,
            online_augment=True,
            # epoch 1's holdout loss (about 1.6, at chance) stays the best through epochs 2-4 in every
            # seed (2-7 in one), so patience alone can stop at epoch 11 with epoch 1's weights (5/25 on
            # val, seen once in CI); by epoch 20 every seed has had an epoch below 0.9 (seeds 0-2, holdout)
            min_epochs=20,
            image_size=32,
            description=("The reference notebook's small CNN (Conv32-Conv64-Conv128, global pooling) with batch "
                         "normalisation, from scratch, on the aligned face at 32x32."),
        ),
        ModelSpec(
            name="resnet50",
            build=_build_resnet50,
            epochs=45,  # the holdout curve over seeds 0-2 is flat after 45 (0.67; 0.65 at 60, 0.67 at 90)
            batch_size=16,
            learning_rate=1e-3,
            optimizer="adam",
            schedule="cosine",
            warmup_epochs=3,
            online_augment=True,
            # the whole schedule: its holdout loss stays above epoch 0's for 15-20 epochs after the
            # warm-up, so patience alone stopped two of four seeds at epoch 11 with epoch 0's weights
            # (chance on val), and a 15-epoch minimum (also with lr 5e-4) still did
            min_epochs=45,
            image_size=48,  # holdout over seeds 0-2, same run: 0.65 at 48, 0.61 at 32, at about the same cost
            description="Keras ResNet50, random init, with a Dense(1024)-Dropout-softmax head, on the aligned face at 48x48.",
        ),
        ModelSpec(
            name="resnet50_imagenet",
            build=_build_resnet50_imagenet,
            local_weights=_local_imagenet_weights,
            epochs=8,
            batch_size=16,
            learning_rate=1e-4,
            optimizer="adam",
            schedule="cosine",
            warmup_epochs=1,
            online_augment=True,
            description="Keras ResNet50 initialised with ImageNet weights, same head, fine-tuned end to end.",
        ),
        ModelSpec(
            name="facenet",
            build=_build_facenet,
            local_weights=_local_facenet_weights,
            epochs=20,
            batch_size=32,
            learning_rate=1e-2,
            optimizer="adam",
            online_augment=True,  # finetune mode; frozen mode trains on cached embeddings
            description=(
                "Pretrained FaceNet (Inception-ResNet-v1, 128-d) with an L2-normalise + softmax head; "
                "frozen mode trains the head on cached embeddings (these defaults), "
                "finetune mode trains end to end (10 epochs, batch 16, adam 1e-5)."
            ),
        ),
    )
}

_FACENET_FINETUNE = {"epochs": 10, "batch_size": 16, "learning_rate": 1e-5}


def model_names() -> list[str]:
    """The registered names, in training order."""
    return list(REGISTRY)


def get_spec(name: str) -> ModelSpec:
    """The spec registered as `name`; :class:`UnknownModelError` listing the valid names otherwise."""
    try:
        return REGISTRY[name]
    except (KeyError, TypeError):
        raise UnknownModelError(f"unknown model {name!r}; valid models: {', '.join(REGISTRY)}") from None


def parse_model_names(value: str | Iterable[str]) -> list[str]:
    """``"cnn,facenet"`` (or a list) -> ``["cnn", "facenet"]``, validated, duplicates dropped.

    ``"all"`` stands for every registered model. An empty selection is an error.
    """
    items = value.split(",") if isinstance(value, str) else list(value)
    names: list[str] = []
    for item in items:
        name = str(item).strip()
        if not name:
            continue
        expanded = model_names() if name == "all" else [get_spec(name).name]
        names.extend(n for n in expanded if n not in names)
    if not names:
        raise UnknownModelError(f"no model selected; valid models: {', '.join(REGISTRY)}")
    return names


def resolve_spec(name: str, train: TrainConfig | None = None) -> ModelSpec:
    """The spec for `name` with the settings a run will use: the mode's defaults, then `train` overrides."""
    spec = get_spec(name)
    train = train or TrainConfig()
    changes: dict[str, object] = {}
    if name == "facenet" and train.facenet_mode == "finetune":
        changes.update(_FACENET_FINETUNE)
    for key in ("epochs", "batch_size", "learning_rate"):
        value = getattr(train, key)
        if value is not None:
            changes[key] = value
    if name in train.model_epochs:
        changes["epochs"] = train.model_epochs[name]
    return dataclasses.replace(spec, **changes) if changes else spec
