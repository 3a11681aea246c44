"""The early-stopping holdout: whole source photos, seeded, stratified by person.

All augmented copies of a photo stay on the same side, so the holdout never sees a rotated twin of
a training image. The `val` split is not touched here: it is the evaluation job's test set.
"""

from __future__ import annotations

import collections
import random
from typing import Iterable


def select_holdout(photos: Iterable[tuple[str, str]], fraction: float, seed: int) -> set[str]:
    """Source paths to hold out from (path, person) pairs: round(fraction * n) per person, and at
    least one photo of every person who has two or more, so every class is checked."""
    by_person: dict[str, list[str]] = collections.defaultdict(list)
    for path, person in photos:
        by_person[person].append(path)
    held: set[str] = set()
    for person in sorted(by_person):
        paths = sorted(set(by_person[person]))
        if fraction <= 0 or len(paths) < 2:
            continue
        count = min(len(paths) - 1, max(1, round(fraction * len(paths))))
        held.update(random.Random(f"{seed}:{person}").sample(paths, count))
    return held
