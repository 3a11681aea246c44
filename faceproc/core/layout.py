"""Every path under OUT, and every file name in it: the one place the output layout is spelled.

The layout is part of the contract (README "Outputs under OUT"); other tools read these paths.
Each function takes OUT (a local path or a URI) and returns a path or URI under it.
"""

from __future__ import annotations

from faceproc.core import storage

# Files of a trained model's folder, OUT/models/<name>/.
MODEL_FILE = "model.keras"
CLASSES_FILE = "classes.json"
HISTORY_FILE = "history.json"
RESULT_FILE = "result.json"
CONFIG_FILE = "config.json"
CENTROIDS_FILE = "centroids.json"
HEAD_FILE = "head.keras"  # a frozen FaceNet's head alone: names faces from stored embeddings without FaceNet
TRAINED_PHOTOS_FILE = "trained_photos.parquet"  # the train photos of the last from-scratch training
LAST_ATTEMPT_FILE = "last_attempt.json"  # a training that failed or was skipped beside a model that stays
MODEL_POINTER_FILE = "current.json"  # object storage: {"version": ...}, the model folder's commit
MODEL_VERSIONS_DIR = "versions"

# The splits of <input>/<split>/<person>/<photo> that faceproc reads: training the first, evaluation the second.
TRAIN_SPLIT = "train"
VAL_SPLIT = "val"

LOCK_FILE = ".faceproc.lock"
LEASE_FILE = ".faceproc.lease"  # object storage: who runs on OUT, until when
SHARDS_DIR = "shards"
MODELS_DIR = "models"
REPORTS_DIR = "reports"
IDENTITIES_DIR = "identities"


def manifest(out: str) -> str:
    return storage.join(out, "manifest.parquet")


def rejects(out: str) -> str:
    return storage.join(out, "rejects.parquet")


def config(out: str) -> str:
    """The config of the last preprocessing run, beside the rows it produced."""
    return storage.join(out, CONFIG_FILE)


def shards_root(out: str) -> str:
    return storage.join(out, SHARDS_DIR)


def shard_dir(out: str, split: str) -> str:
    return storage.join(out, SHARDS_DIR, split)


def shard_name(run_id: str, index: int) -> str:
    return f"{run_id}.{index:05d}.parquet"


def run_of_shard(shard_uri: str) -> str:
    """The run id a shard file's name starts with."""
    return shard_uri.rsplit("/", 1)[-1].split(".", 1)[0]


def staging_root(out: str) -> str:
    """Where preprocessing runs stage their files before publishing; removed at the end of a run."""
    return storage.join(out, "_staging")


def preprocess_settings(out: str, fingerprint: str) -> str:
    """The preprocessing settings a manifest fingerprint stands for, so a change can be described."""
    return storage.join(out, "settings", f"{fingerprint}.json")


def run_record(out: str, run_id: str, stage: str | None = None) -> str:
    """OUT/runs/<run>.json (the pipeline) or OUT/runs/<run>.<stage>.json (one stage)."""
    return storage.join(out, "runs", f"{run_id}.{stage}.json" if stage else f"{run_id}.json")


def lease(out: str) -> str:
    """On object storage, the lease that keeps a second run off OUT (faceproc.core.lock)."""
    return storage.join(out, LEASE_FILE)


def models_root(out: str) -> str:
    return storage.join(out, MODELS_DIR)


def model_dir(out: str, name: str) -> str:
    return storage.join(out, MODELS_DIR, name)


def model_pointer(out: str, name: str) -> str:
    """On object storage: names the version folder that is the model (written last)."""
    return storage.join(out, MODELS_DIR, name, MODEL_POINTER_FILE)


def model_versions_root(out: str, name: str) -> str:
    return storage.join(out, MODELS_DIR, name, MODEL_VERSIONS_DIR)


def model_version_dir(out: str, name: str, version: str) -> str:
    """On object storage: one training's files, written once, under a name of its own."""
    return storage.join(model_versions_root(out, name), version)


def model_staging_dir(out: str, name: str) -> str:
    """A model's new files are written here and swapped in whole."""
    return storage.join(out, MODELS_DIR, f".{name}.staging")


def ray_train_storage(out: str) -> str:
    """Ray Train's checkpoints; on a cluster OUT is shared storage, so this is too."""
    return storage.join(out, "_ray_train")


def embeddings_dir(out: str, weights_key: str, split: str) -> str:
    """Cached FaceNet embeddings of one split, per weights file (`weights_key` from its hash)."""
    return storage.join(out, "embeddings", weights_key, split)


def report_file(out: str, name: str) -> str:
    """OUT/reports/<name>: predictions.parquet, accuracy.{json,csv,md}, report.html, config.json."""
    return storage.join(out, REPORTS_DIR, name)


def identities_root(out: str) -> str:
    """`faceproc identify`'s default folder. An identities folder has the preprocessing output's own
    commit layout: manifest.parquet (the commit), rejects.parquet, shards/, _staging/, runs/."""
    return storage.join(out, IDENTITIES_DIR)


def identity_shards(root: str) -> str:
    """The face rows of an identities folder: shards/<run_id>.<index>.parquet."""
    return storage.join(root, SHARDS_DIR)


def identities_report(out: str, root: str) -> str:
    """OUT/reports/identities.html for the default folder; beside the folder's own files otherwise."""
    if root.rstrip("/") == identities_root(out).rstrip("/"):
        return report_file(out, IDENTITIES_HTML)
    return storage.join(root, IDENTITIES_HTML)


PREDICTIONS_FILE = "predictions.parquet"
ACCURACY_JSON = "accuracy.json"
ACCURACY_CSV = "accuracy.csv"
ACCURACY_MD = "accuracy.md"
REPORT_HTML = "report.html"
IDENTITIES_HTML = "identities.html"
