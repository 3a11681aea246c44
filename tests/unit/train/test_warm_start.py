"""The warm-start decision table: when a retraining may fine-tune the current model."""

from __future__ import annotations

import pyarrow as pa
import pytest

from faceproc.train.warm_start import PhotoChanges, changed_photos, choose_start, continued_history, warm_epochs

CLASSES = ["a", "b"]
INPUTS = {"data": "d1", "recipe": {"epochs": 45}, "seed": 0}


def photos(n: int, settings: str = "s1", sha: str = "x") -> pa.Table:
    return pa.table({"path": [f"/p/{i}.jpg" for i in range(n)], "sha256": [f"{sha}{i}" for i in range(n)],
                     "settings": [settings] * n})


def saved(**changes) -> dict:
    return {"status": "ok", "classes": CLASSES, "inputs": INPUTS, **changes}


def decide(frozen_head=False, previous=None, base=None, inputs=None, current=None, classes=CLASSES, force=False,
           max_change=0.2):
    return choose_start(frozen_head, saved() if previous is None else previous, photos(100) if base is None else base,
                        {**INPUTS, "data": "d2"} if inputs is None else inputs,
                        photos(105) if current is None else current, classes, force, max_change)


def test_counts_added_removed_and_changed_photos():
    base = photos(10)
    changed = pa.table({"path": ["/p/0.jpg", "/p/1.jpg", "/p/10.jpg"], "sha256": ["x0", "new", "x10"],
                        "settings": ["s1", "s1", "s1"]})
    assert changed_photos(base, changed) == PhotoChanges(added=1, removed=8, changed=1)  # /p/1.jpg: new content
    assert changed_photos(base, photos(10, settings="s2")) == PhotoChanges(0, 0, 10)  # other preprocessing: all
    moved = pa.table({"path": [f"/q/{i}.jpg" for i in range(12)], "sha256": [f"x{i}" for i in range(12)],
                      "settings": ["s1"] * 12})
    assert changed_photos(base, moved).describe() == "12 train photos added, 10 removed and 0 changed"


def test_a_few_new_photos_of_the_same_people_warm_start():
    start = decide()
    assert start.warm
    assert "5 train photos added, 0 removed and 0 changed (5% of the 105 live ones <= 20%)" in start.reason
    assert start.changed_share == pytest.approx(5 / 105)


@pytest.mark.parametrize(("share", "epochs"), [
    (0.0, 1),  # retrained (say, a photo added and removed again) though nothing differs from the base
    (1 / 100, 1),
    (5 / 97, 3),  # the rerun benchmark's 5 new photos
    (0.1, 5),
    (0.2, 10),  # at the limit: all of train.warm_start_epochs
])
def test_fine_tuning_is_as_long_as_the_change_is_big(share, epochs):
    assert warm_epochs(share, max_change=0.2, most=10) == epochs


def test_fine_tuning_length_never_passes_the_configured_epochs():
    assert warm_epochs(0.5, max_change=0.2, most=10) == 10
    assert warm_epochs(0.05, max_change=0.0, most=4) == 4  # warm starts are off: nothing to scale by


@pytest.mark.parametrize(("case", "why"), [
    (dict(force=True), "forced"),
    (dict(frozen_head=True), "only new faces are embedded"),
    (dict(max_change=0), "off"),
    (dict(previous={"status": "failed"}), "no usable model"),
    (dict(classes=["a", "b", "c"]), "people changed (+c)"),
    (dict(inputs={**INPUTS, "data": "d2", "seed": 1}), "training settings changed (seed)"),
    (dict(current=photos(130)), "30 train photos added, 0 removed and 0 changed (23% of the 130 live ones > 20%)"),
    (dict(current=photos(100, settings="s2")), "the train photos' preprocessing settings changed"),
])
def test_scratch_when_it_must(case, why):
    start = decide(**case)
    assert not start.warm and why in start.reason, start.reason


def test_photos_added_and_removed_again_fine_tune_back_in_one_epoch_and_say_so():
    start = decide(current=photos(100))  # the base itself: the photos added since are gone again
    assert start.warm and start.changed_share == 0.0 and warm_epochs(start.changed_share, 0.2, most=10) == 1
    assert start.reason == "the 100 live train photos are again those of the last full training"


def test_scratch_without_a_record_of_the_last_full_trainings_photos():
    start = choose_start(False, saved(), None, {**INPUTS, "data": "d2"}, photos(105), CLASSES, False, 0.2)
    assert not start.warm and "does not say which photos" in start.reason


def test_a_fine_tuned_models_history_continues_its_bases_and_stands_alone_without_one():
    base = {"epoch": [0, 1], "loss": [2.0, 1.0], "holdout_loss": [2.1, 1.2]}
    fine = {"epoch": [0], "loss": [0.9], "holdout_loss": [1.1]}
    assert continued_history(base, fine) == ({"epoch": [0, 1, 2], "loss": [2.0, 1.0, 0.9],
                                              "holdout_loss": [2.1, 1.2, 1.1]}, 2)
    assert continued_history(None, fine) == (fine, 0)  # no history.json
    assert continued_history({"epoch": [0, 1], "loss": [2.0]}, fine) == (fine, 0)  # lists of other lengths
