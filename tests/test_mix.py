"""MixUp and CutMix keep labels exact multi-hot: the crops' min_visible rule, checked on hand-computed cases."""

from __future__ import annotations

import json

import numpy as np
import pytest
import tensorflow as tf

from yolol_tf.data.mix import cutmix_labels, mix_batch, mix_dataset
from yolol_tf.data.pipeline import load
from yolol_tf.data.records import encode_example, example_size
from yolol_tf.data.store import prepare
from yolol_tf.data.tfrecord import read_records
from yolol_tf.errors import UserError

WHOLE = (0.0, 0.0, 1.0, 1.0)
NONE = (-1, 0, 0, 0, 0)  # a padding row


def _labels(own, theirs, rect, min_visible=0.5, own_content=WHOLE, their_content=WHOLE):
    """Sample 0's label after ``rect`` of sample 1 is pasted into it (sample 1 is left alone)."""
    rows = max(len(own), len(theirs))
    objects = [list(o) + [NONE] * (rows - len(o)) for o in (own, theirs)]
    return cutmix_labels(
        tf.constant(objects, tf.float32), tf.constant([own_content, their_content], tf.float32),
        tf.constant([1, 0]), tf.constant([rect, (0, 0, 0, 0)], tf.float32), 3, min_visible,
    ).numpy()[0].tolist()  # fmt: skip


# Each case: sample 0's objects, sample 1's, the rectangle R, min_visible, the label; fractions by hand.
CASES = {
    # j's object [0.2, 0.2, 0.4, 0.4] lies wholly in R = [0, 0, 0.5, 0.5]: 1.0 visible.
    "pasted whole": ([(0, 0.6, 0.6, 0.9, 0.9)], [(1, 0.2, 0.2, 0.4, 0.4)], (0, 0, 0.5, 0.5), 0.5, [1, 1, 0]),
    # j's object [0.4, 0.0, 0.6, 0.5]: x 0.4..0.5 of 0.4..0.6 inside R: 0.5 >= 0.5.
    "pasted half": ([(0, 0.6, 0.6, 0.9, 0.9)], [(1, 0.4, 0.0, 0.6, 0.5)], (0, 0, 0.5, 0.5), 0.5, [1, 1, 0]),
    # j's object [0.3, 0.0, 0.8, 0.5]: x 0.3..0.5 of 0.3..0.8 inside R: 0.4 < 0.5.
    "pasted 40%": ([(0, 0.6, 0.6, 0.9, 0.9)], [(1, 0.3, 0.0, 0.8, 0.5)], (0, 0, 0.5, 0.5), 0.5, [1, 0, 0]),
    # i's object [0.2, 0.0, 0.7, 0.5]: R covers x 0.2..0.5, 60%; 40% < 0.5 stays visible.
    "own 60% covered": ([(0, 0.2, 0.0, 0.7, 0.5)], [NONE], (0, 0, 0.5, 0.5), 0.5, [0, 0, 0]),
    # ... but 40% is enough at min_visible 0.4.
    "own 60% covered, min 0.4": ([(0, 0.2, 0.0, 0.7, 0.5)], [NONE], (0, 0, 0.5, 0.5), 0.4, [1, 0, 0]),
    # j's object [0.5, 0, 1.5, 1] reaches past its crop: area 1.0, R = [0.5, 0, 1, 1] shows 0.5 of it (a
    # clipped box would say 1.0); R = [0.6, 0, 1, 1] shows 0.4 (clipped: 0.8).
    "past the window, half": ([NONE], [(2, 0.5, 0, 1.5, 1)], (0.5, 0, 1, 1), 0.5, [0, 0, 1]),
    "past the window, 40%": ([NONE], [(2, 0.5, 0, 1.5, 1)], (0.6, 0, 1, 1), 0.5, [0, 0, 0]),
    # Two objects of class 2, R hides the first wholly: the second keeps class 2 on.
    "same class twice": (
        [(2, 0, 0, 0.5, 0.5), (2, 0.5, 0.5, 1, 1)],
        [NONE],
        (0, 0, 0.5, 0.5),
        0.5,
        [0, 0, 1],
    ),
    # R misses i's object: it counts whatever its share in the crop was.
    "own missed": ([(1, 0.9, 0.9, 1.2, 1.2)], [NONE], (0, 0, 0.5, 0.5), 0.5, [0, 1, 0]),
}


@pytest.mark.parametrize("case", CASES)
def test_cutmix_labels_follow_the_min_visible_rule(case) -> None:
    own, theirs, rect, min_visible, expected = CASES[case]
    assert _labels(own, theirs, rect, min_visible) == expected


def test_letterbox_padding_is_not_visible() -> None:
    # j's crop fills y 0.25..0.75 (padding above and below); its object [0, 0, 0.5, 1] (area 0.5) shows
    # only [0, 0.25, 0.5, 0.75] there (the crops' rule also counted it at 0.5).
    obj, content = [(1, 0, 0, 0.5, 1)], (0, 0.25, 1, 0.75)
    assert _labels([NONE], obj, (0, 0, 0.5, 1), their_content=content) == [0, 1, 0]  # 0.25 / 0.5
    assert _labels([NONE], obj, (0, 0, 0.5, 0.6), their_content=content) == [0, 0, 0]  # 0.175 / 0.5


def _batch(n: int = 4, size: int = 8):
    images = tf.constant(np.arange(n)[:, None, None, None] * 50 + np.zeros((n, size, size, 3)), tf.uint8)
    labels = tf.one_hot(np.arange(n) % 3, 3)
    # Each crop shows one object filling it: a pasted region counts when it holds half the crop.
    objects = tf.constant([[[k % 3, 0, 0, 1, 1]] for k in range(n)], tf.float32)
    content = tf.constant([WHOLE] * n, tf.float32)
    return images, labels, objects, content


def test_cutmix_pastes_partner_pixels_and_labels_them_by_the_rule() -> None:
    images, labels, objects, content = _batch()
    x, y = mix_batch(images, labels, tf.constant([3, 4]), cutmix=1.0, objects=objects, content=content)
    x, y = x.numpy(), y.numpy()
    for i in range(4):
        values = np.unique(x[i])
        assert set(values) <= {k * 50 for k in range(4)}  # whole pixels of one crop or the other
        pasted = np.mean(x[i, :, :, 0] != i * 50)
        partner = [v // 50 for v in values if v != i * 50]
        own = 1.0 if pasted <= 0.5 else 0.0
        theirs = 1.0 if partner and pasted >= 0.5 else 0.0
        expected = np.zeros(3)
        expected[i % 3] = own
        if partner:
            expected[partner[0] % 3] = max(expected[partner[0] % 3], theirs)
        np.testing.assert_array_equal(y[i], expected)


def test_mixup_blends_and_labels_with_the_union() -> None:
    images = tf.constant(np.stack([np.zeros((8, 8, 3)), np.full((8, 8, 3), 200)]), tf.uint8)
    labels = tf.constant([[1, 0, 0], [0, 0, 1]], tf.float32)
    x, y = mix_batch(images, labels, tf.constant([1, 2]), mixup=1.0)
    np.testing.assert_array_equal(y.numpy(), [[1, 0, 1], [1, 0, 1]])
    x = x.numpy().astype(int)
    for i in range(2):  # each its own lam in [0.3, 0.7]: between 0.3 and 0.7 of the way to the other
        assert 60 <= x[i].min() == x[i].max() <= 140


def test_same_seed_same_mix_eagerly_and_in_dataset_map() -> None:
    images, labels, objects, content = _batch(6)
    seed = tf.constant([7, 8], tf.int64)
    options = {"mixup": 0.5, "cutmix": 0.7, "objects": objects, "content": content}
    eager = mix_batch(images, labels, seed, **options)
    mapped = next(iter(tf.data.Dataset.from_tensors((images, labels)).map(
        lambda x, y: mix_batch(x, y, seed, **options))))  # fmt: skip
    for a, b in zip(eager, mapped, strict=True):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    other = mix_batch(images, labels, tf.constant([9, 9]), **options)
    assert not np.array_equal(eager[0].numpy(), other[0].numpy())
    ds = tf.data.Dataset.from_tensors((images, labels, objects, content))
    runs = [
        [b[0].numpy() for b in mix_dataset(ds, mixup=0.5, cutmix=0.7, min_visible=0.5, seed=3)]
        for _ in range(2)
    ]
    np.testing.assert_array_equal(runs[0], runs[1])


def test_a_store_without_geometry_trains_with_mixup_and_warns_cutmix_off(
    tmp_path, capsys, make_store
) -> None:
    store = make_store(tmp_path / "old")
    ds = load(store, "train", 8, training=True, mixup=1.0, cutmix=1.0, seed=0)
    assert "CutMix is off" in capsys.readouterr().err
    x, y = next(iter(ds))
    assert x.shape == (8, 32, 32, 3) and x.dtype == tf.uint8 and y.dtype == tf.float32
    assert set(np.unique(y.numpy())) <= {0.0, 1.0}
    with pytest.raises(UserError, match=r"cutmix must be a probability in \[0, 1\]. Received: cutmix=1.5"):
        load(store, "train", 8, training=True, cutmix=1.5)


def test_record_size_with_geometry_is_known() -> None:
    for row in (0, 200, 20000):
        for m in (1, 7, 1000):
            geometry = (bytes(m * 20), bytes(16))
            assert example_size(12, 3, row, m) == len(encode_example(bytes(12), bytes(3), row, geometry))


def test_prepare_records_each_crops_objects_in_crop_coordinates(tmp_path, make_yolo_dataset) -> None:
    # An 80 x 40 image: A (class 0) at x 20..40, y 10..30; B (class 1) at x 30..54, y 12..28.
    images = {"train": {"a": (80, 40, [(0, 20, 10, 40, 30), (1, 30, 12, 54, 28)])}}
    data = make_yolo_dataset(tmp_path / "ds", images=images)
    store = prepare(data, tmp_path / "store", size=32, context=0.25, workers=1, progress=False)
    meta = json.loads((store / "dataset.json").read_text())
    assert meta["version"] == 3 and meta["max_objects"] == 2
    records = [
        tf.train.Example.FromString(r).features.feature
        for r in read_records(store / meta["splits"]["train"]["shards"][0])
    ]
    got = [
        (np.frombuffer(f["objects"].bytes_list.value[0], "<f4").reshape(2, 5),
         np.frombuffer(f["content"].bytes_list.value[0], "<f4"))
        for f in records
    ]  # fmt: skip
    # A's window: A grown by 5 px each side, x 15..45, y 5..35, square: no padding, 30 px -> 1.
    # B shows x 30..45 of 30..54 (62.5% >= 0.5), its whole box kept: x (30-15)/30 .. (54-15)/30.
    np.testing.assert_allclose(
        got[0][0], [[0, 1 / 6, 1 / 6, 5 / 6, 5 / 6], [1, 0.5, 7 / 30, 1.3, 23 / 30]], atol=1e-5
    )
    np.testing.assert_allclose(got[0][1], [0, 0, 1, 1], atol=1e-6)
    # B's window: grown by 6 and 4 px, x 24..60, y 8..32 (36 x 24): 32 px wide, round(24 * 32/36) = 21
    # rows, 5 rows of padding on top. x -> (x - 24) / 36; y -> (5 + (y - 8) * 21/24) / 32.
    # A shows x 24..40 of 20..40 (80%), and reaches left of the crop (x1 = -4/36).
    y = lambda v: (5 + (v - 8) * 21 / 24) / 32  # noqa: E731
    np.testing.assert_allclose(
        got[1][0], [[1, 1 / 6, y(12), 5 / 6, y(28)], [0, -1 / 9, y(10), 4 / 9, y(30)]], atol=1e-5
    )
    np.testing.assert_allclose(got[1][1], [0, 5 / 32, 1, 26 / 32], atol=1e-6)
    ds = load(store, "train", 2, training=True, cutmix=1.0, seed=0)
    assert next(iter(ds))[1].shape == (2, 3)
