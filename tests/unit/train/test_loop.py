"""Per epoch a Ray Train worker writes a checkpoint that reads back exactly and prints one progress line."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np

from faceproc.models.cnn import build_cnn
from faceproc.train.loop import (
    LoopState,
    early_stop,
    epoch_line,
    read_state,
    read_weights,
    record_epoch,
    write_checkpoint,
)


def test_checkpoint_round_trips_weights_and_loop_state():
    trained, fresh = build_cnn(3), build_cnn(3)
    trained.set_weights([np.random.default_rng(index).normal(size=w.shape).astype(w.dtype)
                         for index, w in enumerate(trained.get_weights())])
    state = LoopState(next_epoch=4, best_loss=0.5, bad_epochs=1, resumed_at=[2])
    state.history["loss"] = [1.0, 0.8, 0.6, 0.7]
    checkpoint = write_checkpoint(trained.get_weights(), state)
    try:
        assert any(not np.array_equal(a, b) for a, b in zip(trained.get_weights(), fresh.get_weights()))
        fresh.set_weights(read_weights(checkpoint.path))
        for expected, got in zip(trained.get_weights(), fresh.get_weights(), strict=True):
            np.testing.assert_array_equal(expected, got)
        for expected, got in zip(trained.get_weights(), read_weights(checkpoint.path, best=True), strict=True):
            np.testing.assert_array_equal(expected, got)  # no earlier best epoch: the epoch's own weights
        assert read_state(checkpoint.path) == state
    finally:
        shutil.rmtree(checkpoint.path)


def test_a_checkpoint_after_a_worse_epoch_carries_the_best_epochs_weights_too(tmp_path):
    best, latest = build_cnn(3).get_weights(), build_cnn(3).get_weights()
    state = LoopState(next_epoch=3, best_loss=0.5, best_epoch=1, bad_epochs=1)
    checkpoint = write_checkpoint(latest, state, best_weights=best, root=str(tmp_path))
    assert Path(checkpoint.path).parent == tmp_path  # the driver's own folder, removed with it
    for expected, got in zip(latest, read_weights(checkpoint.path), strict=True):
        np.testing.assert_array_equal(expected, got)  # where a resume goes on
    for expected, got in zip(best, read_weights(checkpoint.path, best=True), strict=True):
        np.testing.assert_array_equal(expected, got)  # the model to keep
    assert any(not np.array_equal(a, b) for a, b in zip(best, latest))


def test_epoch_line_counts_from_one_says_how_long_the_epoch_took_and_when_training_stops():
    scores = {"loss": 0.91234, "accuracy": 0.5, "holdout_loss": 1.0, "holdout_accuracy": 0.25}
    assert epoch_line("cnn", 0, 30, scores, 8.43, stop=False) == (
        "cnn epoch 1/30: loss 0.912 acc 0.500, holdout loss 1.000 acc 0.250, 8.4 s")
    assert epoch_line("cnn", 6, 30, scores, 0.04, stop=True).endswith(
        "epoch 7/30: loss 0.912 acc 0.500, holdout loss 1.000 acc 0.250, 0.0 s (early stop)")


def test_the_best_epoch_is_the_lowest_finite_holdout_loss_and_patience_counts_the_others():
    state = LoopState()
    losses = [float("nan"), 0.9, 0.95, 0.7, float("inf"), 0.7 + 1e-7]
    improved = [record_epoch(state, epoch, loss) for epoch, loss in enumerate(losses)]
    assert improved == [True, True, False, True, False, False]  # a diverged first epoch stands in until one is finite
    assert (state.best_epoch, state.best_loss, state.bad_epochs, state.next_epoch) == (3, 0.7, 2, 6)


def test_a_warm_start_keeps_its_own_weights_until_an_epoch_beats_them():
    state = LoopState(start_loss=0.8, best_loss=0.8)
    improved = [record_epoch(state, epoch, loss) for epoch, loss in enumerate([0.9, 0.85, 0.7, 0.75])]
    assert improved == [False, False, True, False]  # the first epoch is no model of its own here
    assert (state.best_epoch, state.best_loss, state.bad_epochs) == (2, 0.7, 1)
    worse = LoopState(start_loss=0.5, best_loss=0.5)
    assert not any(record_epoch(worse, epoch, loss) for epoch, loss in enumerate([0.6, float("nan")]))
    assert (worse.best_epoch, worse.best_loss) == (-1, 0.5)  # the starting weights stay the model


def test_the_last_epoch_is_never_called_an_early_stop():
    """A model that runs its whole schedule (resnet50) ended every training with "(early stop)"."""
    from faceproc.train.loop import LoopConfig

    fields = {name: None for name in LoopConfig.__dataclass_fields__}
    loop = LoopConfig(**{**fields, "epochs": 3, "patience": 1, "min_epochs": 0, "has_holdout": True})
    assert [early_stop(loop, LoopState(bad_epochs=1), epoch) for epoch in range(3)] == [True, True, False]
