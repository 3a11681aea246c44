"""From scratch or from the current model: the decision a retraining starts with.

A scheduled rerun usually adds a few photos of the same people. Training cnn or resnet50 again from
random weights for that costs as much as the first run; fine-tuning the current model on all live
photos for a few epochs costs a fraction and, while the change stays small, reaches the same
accuracy (docs/benchmarks.md, "Warm start"). The change is measured against the photos of the last
*from-scratch* training (kept in the model folder, `trained_photos.parquet`), so warm starts cannot
drift: once the photos added, removed or changed since then pass `train.warm_start_max_change` of
the live train photos, the model is trained from scratch again. Below that, the fine-tuning's length
is in proportion to the change (`warm_epochs`): 5 new photos of 97 cost 3 epochs, not the 10 a change
at the limit gets.

Pure: the caller passes what the model folder and the current data hold.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from faceproc.core.schema import Status
from faceproc.core.text import plural

PHOTO_COLUMNS = ["path", "sha256", "settings"]  # what identifies a train photo's rows


@dataclass(frozen=True)
class Start:
    warm: bool
    reason: str  # why, for result.json (`start_reason`), the run record and the console; `warm` says which
    changed_share: float = 0.0  # of the live train photos, since the last from-scratch training (warm only)


@dataclass(frozen=True)
class PhotoChanges:
    """Train photos since the last from-scratch training, by path."""

    added: int
    removed: int
    changed: int  # other content or other preprocessing settings

    @property
    def total(self) -> int:
        return self.added + self.removed + self.changed

    def describe(self) -> str:
        return f"{plural(self.added, 'train photo')} added, {self.removed} removed and {self.changed} changed"


def settings_of(photos: pa.Table) -> set[str]:
    """The preprocessing settings fingerprints a photo table's rows were made with."""
    return set(pc.unique(photos["settings"]).to_pylist()) - {None}


def changed_photos(base: pa.Table, current: pa.Table) -> PhotoChanges:
    """Paths added, removed, or with other content or preprocessing settings, between two photo tables."""
    def keyed(table: pa.Table) -> dict[str, tuple[str, str]]:
        paths, *rest = (pc.fill_null(table[name], "").to_pylist() for name in PHOTO_COLUMNS)
        return dict(zip(paths, zip(*rest)))

    before, now = keyed(base), keyed(current)
    kept = before.keys() & now.keys()
    return PhotoChanges(added=len(now.keys() - kept), removed=len(before.keys() - kept),
                        changed=sum(before[path] != now[path] for path in kept))


def choose_start(frozen_head: bool, saved: dict[str, Any] | None, base_photos: pa.Table | None,
                 inputs: dict[str, Any], photos: pa.Table, classes: list[str], force: bool,
                 max_change: float) -> Start:
    """Warm when the model exists, was trained on the same people with the same settings, and the
    photos changed by at most `max_change` of the live ones since its last from-scratch training.
    A `frozen_head` (FaceNet's head over cached embeddings) is refitted on all of them, in seconds."""
    if force:
        return Start(False, "forced (--force)")
    if frozen_head:
        return Start(False, "the head is refitted on all live embeddings; only new faces are embedded")
    if max_change <= 0:
        return Start(False, "warm start is off (train.warm_start_max_change = 0)")
    if saved is None or saved.get("status") != Status.OK:
        return Start(False, "no usable model yet")
    if base_photos is None:
        return Start(False, "the model folder does not say which photos it was trained on")
    if saved.get("classes") != classes:
        before, now = set(saved.get("classes") or []), set(classes)
        change = ", ".join([*(f"+{c}" for c in sorted(now - before)), *(f"-{c}" for c in sorted(before - now))])
        return Start(False, f"the people changed ({change or 'order'})")
    before = {key: value for key, value in (saved.get("inputs") or {}).items() if key != "data"}
    now = {key: value for key, value in inputs.items() if key != "data"}
    if before != now:
        keys = sorted(k for k in set(before) | set(now) if before.get(k) != now.get(k))
        return Start(False, f"training settings changed ({', '.join(keys)})")
    if settings_of(base_photos) != settings_of(photos):
        return Start(False, "the train photos' preprocessing settings changed since the last full training")
    changes = changed_photos(base_photos, photos)
    if changes.total == 0:  # photos added since were removed again: the fine-tuning follows them back
        return Start(True, f"the {photos.num_rows} live train photos are again those of the last full training")
    share = changes.total / max(1, photos.num_rows)
    words = (f"since the last full training {changes.describe()} ({share:.0%} of the {photos.num_rows} live "
             f"ones")
    if share > max_change:
        return Start(False, f"{words} > {max_change:.0%})")
    return Start(True, f"{words} <= {max_change:.0%})", share)


def warm_epochs(changed_share: float, max_change: float, most: int) -> int:
    """Epochs of a fine-tuning, in proportion to the change: `most` at `max_change`, at least one.
    The change counts from the last from-scratch training, so a series of warm starts is not shortchanged."""
    if max_change <= 0:
        return most
    return max(1, min(most, math.ceil(round(most * changed_share / max_change, 6))))  # round: float noise


def continued_history(base: Any, fine_tuning: dict[str, list[float]]) -> tuple[dict[str, list[float]], int]:
    """A fine-tuned model's history: its base's epochs (the current model's history.json), then the
    fine-tuning's, all numbered from 0; and how many came from the base. A base that is not such a
    history (missing, of an earlier faceproc) counts as none, so the fine-tuning's stands alone."""
    if not isinstance(base, dict) or not isinstance(base.get("epoch"), list):
        return fine_tuning, 0
    offset = len(base["epoch"])
    if any(not isinstance(base.get(key), list) or len(base[key]) != offset for key in fine_tuning):
        return fine_tuning, 0
    merged = {key: [*base[key], *values] for key, values in fine_tuning.items()}
    merged["epoch"] = list(range(offset + len(fine_tuning["epoch"])))
    return merged, offset
