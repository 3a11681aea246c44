"""The train split: decoded in the driver (numpy columns) for a small split, by Ray Data for a big
one, with the same rows either way."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest

import faceproc.train.data as train_data
from faceproc.train.data import decoded_faces, load_training_data
from tests.conftest import write_face_shards

pytestmark = pytest.mark.usefixtures("ray_session")

PEOPLE = {person: [(40 * n, 200 - 30 * n, 90 + 10 * i) for n in range(6)]
          for i, person in enumerate(["ann", "bob", "cyd"])}


def _rows(dataset) -> list[tuple[int, str]]:
    """(label id, image digest) of every row, sorted: what a model is fed, in no particular order."""
    if dataset is None:
        return []
    rows = []
    batches = [dataset] if isinstance(dataset, dict) else dataset.iter_batches(batch_size=50, batch_format="numpy")
    for batch in batches:
        assert batch["image"].shape[1:] == (160, 160, 3) and batch["image"].dtype == np.uint8
        rows += [(int(label), hashlib.sha256(image.tobytes()).hexdigest())
                 for label, image in zip(batch["label"], batch["image"])]
    return sorted(rows)


@pytest.mark.parametrize("originals_only", [True, False])
def test_driver_and_ray_data_give_the_same_rows(tmp_path, monkeypatch, originals_only):
    write_face_shards(tmp_path, PEOPLE, copies=3)
    data = load_training_data(str(tmp_path), holdout_fraction=0.34, seed=0)
    assert data.rows == 3 * 6 * 3 and data.holdout_photos == 6
    monkeypatch.setattr(train_data, "BLOCK_ROWS", 4)

    in_driver = decoded_faces(str(tmp_path), data, originals_only, materialize=True, driver_max_rows=data.rows)
    by_ray = decoded_faces(str(tmp_path), data, originals_only, materialize=True, driver_max_rows=data.rows - 1)

    fit, holdout = (_rows(dataset) for dataset in in_driver)
    assert fit == _rows(by_ray[0]) and holdout == _rows(by_ray[1])
    assert len(fit) == data.fit_photos * (1 if originals_only else 3)
    assert len(holdout) == data.holdout_photos  # originals only, whatever the fitting rows are
    assert not set(fit) & set(holdout)  # whole photos on one side
    assert sorted({label for label, _ in fit}) == [0, 1, 2]
    for_workers = train_data.object_store_dataset(in_driver[0])
    assert _rows(for_workers) == fit
    assert for_workers.num_blocks() == -(-len(fit) // 4)  # blocks that workers can share
    first_block = next(iter(for_workers.iter_batches(batch_size=4, batch_format="numpy")))
    assert len(set(first_block["label"].tolist())) > 1  # people mixed, not one per block
