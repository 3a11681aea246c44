from faceproc.train.data import select_holdout


def _photos():
    return [(f"{p}/{i}.jpg", p) for p in ("ann", "bob", "cid") for i in range(10)] + [("solo/1.jpg", "solo")]


def test_stratified_seeded_and_whole_photos():
    held = select_holdout(_photos(), 0.2, seed=1)
    assert len(held) == 6
    assert {path.split("/")[0] for path in held} == {"ann", "bob", "cid"}
    assert all(sum(p.startswith(person) for p in held) == 2 for person in ("ann", "bob", "cid"))
    assert select_holdout(_photos(), 0.2, seed=1) == held
    assert select_holdout(_photos(), 0.2, seed=2) != held


def test_augmented_copies_share_their_photo():
    rows = [(path, person) for path, person in _photos() for _ in range(3)]  # 3 rows per photo
    assert select_holdout(rows, 0.2, seed=1) == select_holdout(_photos(), 0.2, seed=1)


def test_no_holdout_when_fraction_zero_or_single_photo():
    assert select_holdout(_photos(), 0.0, seed=1) == set()
    assert select_holdout([("a/1.jpg", "a")], 0.5, seed=1) == set()


def test_a_new_photo_moves_at_most_one_photo_across():
    before = select_holdout(_photos(), 0.2, seed=1)
    for n in range(10, 16):  # up to 15 photos of ann: her holdout grows from 2 to 3
        grown = _photos() + [(f"ann/{i}.jpg", "ann") for i in range(10, n + 1)]
        after = select_holdout(grown, 0.2, seed=1)
        fitted_before = {path for path, _ in _photos()} - before
        assert len(after & fitted_before) <= 1, (n, sorted(after & fitted_before))  # seen in fitting, now held out
        assert {p for p in after if not p.startswith("ann")} == {p for p in before if not p.startswith("ann")}
