"""One typed configuration object: defaults in code, an optional TOML/YAML file, then overrides.

The resolved config is saved as JSON next to every output so each result says how it was made.
"""

from __future__ import annotations

import dataclasses
import os
import tomllib
import types
import typing
import urllib.parse
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from faceproc.core.model_names import FACENET_MODES, MODEL_NAMES

FACENET_FILE_NAME = "facenet_keras.h5"  # what `faceproc fetch-data` puts in models_dir
DRIVER_LIMIT_POOL = 2  # detector actors the default driver_max_photos was measured against
MAX_DRIVER_THREADS = 8  # each driver thread holds one batch of decoded photos


def usable_cores() -> int:
    """The cores this process may run on, as a Ray started here would count them."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()  # not on macOS
    return max(1, cores or 1)


class ConfigError(ValueError):
    """A config file or override that cannot be applied; the message says which key and why."""


@dataclass
class PreprocessConfig:
    """Decoding, detection, cropping and augmentation settings."""

    max_pixels: int = 40_000_000  # images declaring more pixels are rejected before decoding
    min_side: int = 32  # images with a shorter side are rejected as too_small
    detect_max_side: int = 640  # photos are downscaled to this longest side before MTCNN
    draft_decode: bool = True  # decode big JPEGs at a reduced DCT scale for detection (full size where a crop
    # needs it); MTCNN and big faces' crops then see other pixels, so it shapes rows: a change redoes every photo
    min_face_confidence: float = 0.8  # MTCNN faces below this are ignored (0.9 loses a real val face)
    min_face_size: int = 20  # MTCNN's smallest face, in detection pixels
    face_margin: float = 0.1  # margin added on each side, as a fraction of the box size
    face_size: int = 160  # side of the square face crop
    align: bool = True  # warp the five keypoints onto a template; false: the margin crop only
    augment_copies: int = 0  # extra stored augmented rows per train face (the notebook made 2); training
    # draws new variants every epoch instead (train.online_augment), so stored copies only cost time
    seed: int = 0  # augmentation seed; with the file hash and copy index it fixes every copy
    detector_actors: int = 2  # MTCNN actors in the Ray Data pool
    driver_max_photos: int = 1024  # this many photos to read at most are detected in the driver on a one-node
    # cluster (no detector GPUs), without starting Ray when no Ray address is given: the pool's start-up (Ray,
    # then a process per actor that imports TensorFlow and builds MTCNN) was not repaid up to the 2832 photos
    # measured on two cores (docs/benchmarks.md), and the driver holds a run's rows until it writes them; for a
    # pool of two actors, less for a bigger one (`driver_photo_limit`); 0: always the actor pool
    driver_threads: int = 0  # detection threads in the driver, each on its own batch; 0: one per core (at most 8)
    detector_num_cpus: float = 0.5  # below 1 so that Parquet write tasks can still be scheduled on 2 cores
    detector_num_gpus: float = 0.0
    detect_batch_size: int = 8  # photos per MTCNN call; small photos amortise per-call overhead
    actor_batch_size: int = 32  # photos per actor call, sorted by size into MTCNN calls
    detector_threads: int = 1  # TensorFlow threads per actor; 0 = TensorFlow's default (all cores)
    rows_per_shard: int = 4096  # face rows per Parquet shard file at most
    max_reject_share: float = 0.25  # fail the job when more inputs than this are rejected
    verify_hashes: bool = False  # re-hash every known file in the driver, not trusting size and mtime

    @property
    def driver_photo_limit(self) -> int:
        """`driver_max_photos` for this pool: it was measured against two actors, and a bigger pool repays
        its actors' start-up sooner, so the limit shrinks in proportion (8 actors: a quarter)."""
        return self.driver_max_photos * DRIVER_LIMIT_POOL // max(DRIVER_LIMIT_POOL, self.detector_actors)

    @property
    def driver_thread_count(self) -> int:
        """`driver_threads`, or one per core this process may use: TensorFlow and the decoders release
        the GIL, so two threads kept 1.7 of 2 cores busy where one kept 1.35 (docs/benchmarks.md)."""
        if self.driver_threads > 0:
            return self.driver_threads
        return min(MAX_DRIVER_THREADS, usable_cores())

    @property
    def draft_side(self) -> int | None:
        """The longest side big JPEGs are decoded at for detection; None decodes them at full size."""
        return self.detect_max_side if self.draft_decode else None


@dataclass
class TrainConfig:
    """Which models to fit and how; per-model defaults live in the model registry."""

    models: list[str] = field(default_factory=lambda: list(MODEL_NAMES))
    epochs: int | None = None  # None: each model's own default
    model_epochs: dict[str, int] = field(default_factory=dict)  # per model, beats `epochs`: "cnn=3,resnet50=1"
    batch_size: int | None = None
    learning_rate: float | None = None
    workers: int | None = None  # None: one per GPU on a GPU cluster, else one per CPU node (or the driver:
    # driver_train_max_rows)
    gpus_per_worker: float | None = None  # None: 1 when the cluster has a GPU for every worker (`workers`, else 1)
    # of every model trained at once, else 0
    holdout_fraction: float = 0.2  # share of train photos held out for early stopping
    patience: int = 10  # epochs without a better holdout loss before stopping (18 holdout photos are noisy)
    seed: int = 0
    facenet_weights: str = "models/facenet_keras.h5"
    facenet_mode: str = "frozen"  # "frozen" (cached embeddings + head) or "finetune"
    imagenet_weights: str | None = None  # a local ResNet50 notop .h5; None: <models_dir>/resnet50_imagenet_notop.h5,
    # else Keras' download
    concurrent: bool = False  # fit the models to train at once (a thread each) whenever there are several, whatever
    # the cluster's size: their CPU workers divide the CPUs between them, down to 0.25 CPU each
    max_failures: int = 2  # worker failures Ray Train retries from the last checkpoint (none in the driver)
    start_wait_minutes: float = 30.0  # how long a training waits for its workers' resources (an autoscaler's
    # new node, a lost node's replacement) before it fails; Ray Train's own default waits without end
    online_augment: bool = True  # new variants of every face each epoch, for the models whose recipe asks
    materialize: bool = True  # decode faces once into Ray's object store, not every epoch
    worker_cache_mb: int = 2048  # a worker keeps its materialized share in memory up to this size
    driver_decode_max_rows: int = 2000  # a train split of at most this many face rows is read and decoded
    # in the driver and put in Ray's object store whole (or kept in memory when the driver trains it), whatever
    # `materialize` says: a Ray Data pass costs 2-4 s of start-up there; as many new faces are embedded by the
    # driver's FaceNet (no actor)
    driver_train_max_rows: int = 2000  # a train split of at most this many face rows trains in the driver
    # (Ray Train's local mode) on a one-node cluster without GPUs, `workers` unset, one model at a time: a worker
    # group's start-up and its own TensorFlow cost 15-25 s a model on two cores; no resume after a failure
    # there. With no Ray joined or named, no GPU, and the split decoded in the driver too, Ray is not started
    # at all. 0: always workers
    warm_start_max_change: float = 0.2  # fine-tune the current model when at most this share of the train
    # photos changed since its last from-scratch training (same people, same settings); 0: always scratch
    warm_start_epochs: int = 10  # epochs of a fine-tuning at that share of change; fewer in proportion below it
    # (5% changed at 20%: 3 epochs), at least 1; early stopping on the holdout as usual
    warm_start_learning_rate: float = 0.1  # its learning rate, as a share of the recipe's


@dataclass
class EvaluateConfig:
    """Batch inference and report settings."""

    batch_size: int = 32
    driver_max_faces: int = 2000  # up to this many validation faces are predicted in the driver (no GPU asked
    # for): an actor would import TensorFlow again, which the driver of a `run` has loaded for training
    unknown_far: float = 0.01  # facenet: share of strangers the unknown threshold may accept (leave-one-person-out)
    unknown_quantile: float = 0.99  # facenet with one person only: own-centroid distance quantile as threshold


@dataclass
class IdentifyConfig:
    """`faceproc identify`: which trained model names the faces, and where the identities go.

    Detection and cropping use the preprocessing settings the model was trained on (the crop must be
    the training crop); the pool sizes (`preprocess.detector_actors`, ...) come from this config."""

    model: str = "facenet"
    into: str | None = None  # the identities folder; None: OUT/identities
    keep_old_results: bool = False  # after a retrain, keep faces identified by the older model version


@dataclass
class Config:
    """Everything one faceproc run needs."""

    input: str = "data/5-celebrity-faces-dataset"
    output: str = "data/out"
    data_dir: str = "data"
    models_dir: str = "models"
    ray_address: str | None = None  # None: $RAY_ADDRESS if set, else a new local Ray; 'auto': a `ray start` head
    preprocess: PreprocessConfig = field(default_factory=PreprocessConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    evaluate: EvaluateConfig = field(default_factory=EvaluateConfig)
    identify: IdentifyConfig = field(default_factory=IdentifyConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Config:
        return _build(cls, data, prefix="")


def load_config(path: str | None = None, overrides: Mapping[str, Any] | None = None) -> Config:
    """Defaults, then the file at `path` (TOML or YAML), then `overrides` ("section.key" -> value),
    checked by `validate` before any work starts."""
    data: dict[str, Any] = {}
    if path:
        data = _read_file(Path(path))
    config = Config.from_dict(data)
    for dotted, value in (overrides or {}).items():
        set_value(config, dotted, value)
    validate(config)
    return config


def explicit_keys(path: str | None, overrides: Mapping[str, Any]) -> set[str]:
    """The keys ("section.key", or a top-level "key") that the file at `path` or `overrides` gave a
    value, rather than the defaults; a mapping-valued key (train.model_epochs) is one key."""
    sections = {name for name, hint in typing.get_type_hints(Config).items() if dataclasses.is_dataclass(hint)}
    keys = set(overrides)
    for key, value in (_read_file(Path(path)) if path else {}).items():
        keys |= {f"{key}.{name}" for name in value} if key in sections and isinstance(value, Mapping) else {key}
    return keys


def unapplied_setting(section: Any, prefix: str, applied: Mapping[str, Any],
                      explicit: set[str]) -> tuple[str, Any, Any] | None:
    """For a command that applies `applied` (field -> value) to `section` whatever it was told: the
    first ("prefix.field", value asked, value applied) whose key is in `explicit` (the user's) with
    another value, which the command must refuse rather than record; None when there is none."""
    for name, value in applied.items():
        key, asked = f"{prefix}.{name}", getattr(section, name)
        if key in explicit and asked != value:
            return key, asked, value
    return None


Rule = tuple[Callable[[Any], bool], str]  # (test of one value, what it requires)


def _at_least(low: float) -> Rule:
    return (lambda value: value >= low), f"must be at least {low}"


def _above(low: float) -> Rule:
    return (lambda value: value > low), f"must be above {low}"


def _between(low: float, high: float) -> Rule:
    return (lambda value: low <= value <= high), f"must be between {low} and {high}"


def _one_of(options: Iterable[str]) -> Rule:
    options = tuple(options)
    return (lambda value: value in options), f"must be one of {', '.join(options)}"


MAX_SEED = 2**32 - 1  # numpy's, which the augmentation and Keras' seeding hand every seed to

# What each setting must hold for a run to make sense (None, where a key allows it, always passes).
# Checked when the config is built, so a bad value fails at once with its key, not minutes later.
RULES: dict[str, Rule] = {
    "preprocess.max_pixels": _at_least(1),
    "preprocess.min_side": _at_least(1),
    "preprocess.detect_max_side": _at_least(32),
    "preprocess.min_face_confidence": _between(0, 1),
    "preprocess.min_face_size": _at_least(1),
    "preprocess.face_margin": _between(0, 1),
    "preprocess.face_size": _at_least(16),
    "preprocess.augment_copies": _at_least(0),
    "preprocess.detector_actors": _at_least(1),
    "preprocess.driver_max_photos": _at_least(0),
    "preprocess.driver_threads": _at_least(0),
    "preprocess.detector_num_cpus": _at_least(0),
    "preprocess.detector_num_gpus": _at_least(0),
    "preprocess.detect_batch_size": _at_least(1),
    "preprocess.actor_batch_size": _at_least(1),
    "preprocess.detector_threads": _at_least(0),
    "preprocess.rows_per_shard": _at_least(1),
    "preprocess.max_reject_share": _between(0, 1),
    "preprocess.seed": _between(0, MAX_SEED),
    "train.models": _one_of(("all", *MODEL_NAMES)),
    "train.seed": _between(0, MAX_SEED),
    "train.epochs": _at_least(1),
    "train.model_epochs": _at_least(1),
    "train.batch_size": _at_least(1),
    "train.learning_rate": _above(0),
    "train.workers": _at_least(1),
    "train.gpus_per_worker": _at_least(0),
    "train.holdout_fraction": _between(0, 0.9),
    "train.patience": _at_least(1),
    "train.facenet_mode": _one_of(FACENET_MODES),
    "train.max_failures": _at_least(0),
    "train.start_wait_minutes": _at_least(0),
    "train.worker_cache_mb": _at_least(0),
    "train.driver_decode_max_rows": _at_least(0),
    "train.driver_train_max_rows": _at_least(0),
    "train.warm_start_max_change": _at_least(0),  # above 1: always warm (removed photos count too)
    "train.warm_start_epochs": _at_least(1),
    "train.warm_start_learning_rate": _above(0),
    "evaluate.batch_size": _at_least(1),
    "evaluate.driver_max_faces": _at_least(0),
    "evaluate.unknown_far": _between(0, 1),
    "evaluate.unknown_quantile": _between(0, 1),
    "identify.model": _one_of(MODEL_NAMES),
}


def validate(config: Config) -> None:
    """Raise ConfigError naming every setting that breaks its `RULES` entry; a list is checked item by
    item, a mapping by its values (and `train.model_epochs` by its keys, which must be model names)."""
    problems = []
    for dotted, (test, requirement) in RULES.items():
        section, key = dotted.split(".")
        value = getattr(getattr(config, section), key)
        items = value.items() if isinstance(value, dict) else [(None, v) for v in (value if isinstance(value, list)
                                                                                    else [value])]
        bad = [repr(item) if key is None else f"{key}={item!r}" for key, item in items
               if item is not None and not test(item)]
        if bad:
            problems.append(f"{dotted} {', '.join(bad)} {requirement}")
    if not config.train.models:
        problems.append("train.models is empty: name at least one model")
    unknown_models = sorted(set(config.train.model_epochs) - set(MODEL_NAMES))
    if unknown_models:
        problems.append(f"train.model_epochs names {', '.join(map(repr, unknown_models))}: "
                        f"models are {', '.join(MODEL_NAMES)}")
    if problems:
        raise ConfigError("invalid config: " + "; ".join(problems))


def absolute_paths(config: Config) -> Config:
    """A copy of `config` whose local paths are absolute, resolved against this process's working
    directory; URIs and unset paths stay as they are.

    The driver does this once, before anything reaches a Ray task or actor: workers run in their own
    working directory (on another node, or a `ray start` node started elsewhere), where a relative
    path names another file or none.
    """
    resolved = Config.from_dict(config.to_dict())
    for section, key in (("", "input"), ("", "output"), ("", "data_dir"), ("", "models_dir"),
                         ("train", "imagenet_weights"), ("identify", "into")):
        owner = getattr(resolved, section) if section else resolved
        setattr(owner, key, _absolute(getattr(owner, key)))
    resolved.train.facenet_weights = _absolute(facenet_weights_path(config.train.facenet_weights, config.models_dir))
    return resolved


def facenet_weights_path(weights: str, models_dir: str) -> str:
    """`train.facenet_weights`; when that relative path does not exist, `<models_dir>/facenet_keras.h5`
    if that does (so `--set models_dir=...` alone finds fetched weights)."""
    path = os.path.expanduser(weights)
    if "://" not in path and not os.path.isabs(path) and not os.path.exists(path):
        candidate = os.path.join(os.path.expanduser(models_dir), FACENET_FILE_NAME)
        if os.path.exists(candidate):
            return candidate
    return path


def _absolute(path: str | None) -> str | None:
    if path is None:
        return None
    path = file_uri_to_path(path)
    if "://" in path:
        return path
    return os.path.abspath(os.path.expanduser(path))


def file_uri_to_path(uri: str) -> str:
    """`file:///photos/my%20trip` -> `/photos/my trip`; anything else as it is. A local tree is then
    one tree however it was named, and the paths listed under it need no URI escaping (a file name
    with a space or a `#` is not a valid URI)."""
    if not uri.startswith("file://"):
        return uri
    return urllib.parse.unquote(urllib.parse.urlparse(uri).path)


def set_value(config: Config, dotted: str, value: Any) -> None:
    """Set `section.key` (or a top-level key), converting strings to the field's type."""
    target: Any = config
    *parents, leaf = dotted.split(".")
    for part in parents:
        if not dataclasses.is_dataclass(target) or not hasattr(target, part):
            raise ConfigError(f"unknown config key {dotted!r}")
        target = getattr(target, part)
    fields = {f.name: f for f in dataclasses.fields(target)} if dataclasses.is_dataclass(target) else {}
    if leaf not in fields:
        raise ConfigError(f"unknown config key {dotted!r}")
    hint = typing.get_type_hints(type(target))[leaf]
    if dataclasses.is_dataclass(hint):
        raise ConfigError(f"config key {dotted!r} is a section: set one of its keys, such as "
                          f"{dotted}.{dataclasses.fields(hint)[0].name}")
    setattr(target, leaf, _coerce(value, hint, dotted))


def parse_override(text: str) -> tuple[str, str]:
    """Split a `--set key=value` argument."""
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise ConfigError(f"--set expects key=value, got {text!r}")
    return key.strip(), value.strip()


def _read_file(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist")
    text = path.read_text()
    if path.suffix == ".toml":
        try:
            return tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"config file {path} is not valid TOML: {exc}") from None
    if path.suffix in (".yaml", ".yml"):
        import yaml

        try:
            loaded = yaml.safe_load(text) or {}
        except yaml.YAMLError as exc:
            raise ConfigError(f"config file {path} is not valid YAML: {' '.join(str(exc).split())}") from None
        if not isinstance(loaded, dict):
            raise ConfigError(f"config file {path} must hold a mapping")
        return loaded
    raise ConfigError(f"config file {path}: use .toml, .yaml or .yml")


def _build(cls: type, data: Mapping[str, Any], prefix: str) -> Any:
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = set(data) - names
    if unknown:
        raise ConfigError(f"unknown config key(s): {', '.join(sorted(prefix + k for k in unknown))}")
    kwargs: dict[str, Any] = {}
    for name, value in data.items():
        hint = hints[name]
        if dataclasses.is_dataclass(hint):
            if not isinstance(value, Mapping):
                raise ConfigError(f"config section {prefix + name!r} must be a mapping")
            kwargs[name] = _build(hint, value, prefix=f"{prefix}{name}.")
        else:
            kwargs[name] = _coerce(value, hint, prefix + name)
    return cls(**kwargs)


def _coerce(value: Any, hint: Any, key: str) -> Any:
    """Convert `value` (often a string from the command line) to the type `hint`."""
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        options = [a for a in typing.get_args(hint) if a is not type(None)]
        if value is None or (isinstance(value, str) and value.lower() in ("none", "null", "")):
            return None
        return _coerce(value, options[0], key)
    if origin is dict:
        key_type, value_type = typing.get_args(hint)
        if isinstance(value, str):
            pairs = [item.split("=", 1) for item in value.split(",") if item.strip()]
            if any(len(pair) != 2 for pair in pairs):
                raise ConfigError(f"config key {key!r}: expected name=value,... got {value!r}")
            value = {k.strip(): v.strip() for k, v in pairs}
        if not isinstance(value, Mapping):
            raise ConfigError(f"config key {key!r}: expected a mapping, got {value!r}")
        return {_coerce(k, key_type, key): _coerce(v, value_type, key) for k, v in value.items()}
    if origin is list:
        (item,) = typing.get_args(hint)
        items = value.split(",") if isinstance(value, str) else list(value)
        return [_coerce(v.strip() if isinstance(v, str) else v, item, key) for v in items if v != ""]
    try:
        if hint is bool:
            if isinstance(value, str):
                if value.lower() in ("1", "true", "yes", "on"):
                    return True
                if value.lower() in ("0", "false", "no", "off"):
                    return False
                raise ValueError(value)
            return bool(value)
        if hint is int and isinstance(value, float) and not value.is_integer():
            raise ValueError(value)
        return hint(value)
    except (TypeError, ValueError):
        raise ConfigError(f"config key {key!r}: {value!r} is not a valid {getattr(hint, '__name__', hint)}") from None
