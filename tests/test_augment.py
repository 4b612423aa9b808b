"""RandAugment-style augmentation: determinism, identity, geometry on hand-made images, colour range,
and the in-memory store path against the streamed one."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

from yolol_tf.data import augment as aug
from yolol_tf.data import pipeline
from yolol_tf.data.pipeline import augment_batch, load  # the old import path keeps working

SEED = tf.constant([5, 9], tf.int64)


def _noise(batch: int = 4, side: int = 12, channels: int = 3) -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, (batch, side, side, channels), dtype=np.uint8)


def _transforms(batch: int, side: int, *, flip=False, angle=0.0, zoom=1.0, shift=(0.0, 0.0)) -> tf.Tensor:
    full = lambda v: tf.fill([batch], v)  # noqa: E731
    return aug.affine_transforms(
        full(flip), full(angle), full(0.0), full(0.0), full(zoom), full(shift[0]), full(shift[1]),
        tf.constant(float(side)), tf.constant(float(side)),
    )  # fmt: skip


def test_same_seed_same_output_eagerly_in_a_graph_and_in_dataset_map() -> None:
    images = _noise()
    eager = augment_batch(tf.constant(images), SEED, 0.5)
    mapped = next(iter(tf.data.Dataset.from_tensors(images).map(lambda x: augment_batch(x, SEED, 0.5))))
    graph = tf.function(augment_batch)(tf.constant(images), SEED, 0.5)
    np.testing.assert_array_equal(eager.numpy(), mapped.numpy())
    np.testing.assert_array_equal(eager.numpy(), graph.numpy())
    np.testing.assert_array_equal(eager.numpy(), augment_batch(images, SEED, 0.5).numpy())
    assert not np.array_equal(eager.numpy(), augment_batch(images, SEED + 1, 0.5).numpy())


def test_without_xla_the_same_augmentation_runs_as_a_plain_graph(monkeypatch: pytest.MonkeyPatch) -> None:
    assert aug._xla_on_cpu()  # TensorFlow's Linux wheels have XLA for the CPU
    monkeypatch.setattr(aug, "_xla_on_cpu", lambda: False)
    aug._compiled.cache_clear()
    try:
        images = _noise()
        out = augment_batch(images, SEED, 0.5)
        assert not aug._compiled()._jit_compile
        assert out.dtype == tf.uint8 and not np.array_equal(out.numpy(), images)
        np.testing.assert_array_equal(out.numpy(), augment_batch(images, SEED, 0.5).numpy())
    finally:
        aug._compiled.cache_clear()  # later tests choose again, with XLA


@pytest.mark.parametrize("channels", [3, 1])
def test_uint8_in_and_out_same_shape_and_strength_zero_is_identity(channels: int) -> None:
    images = _noise(channels=channels)
    out = augment_batch(images, SEED, 1.0)
    assert out.dtype == tf.uint8 and out.shape == images.shape
    np.testing.assert_array_equal(augment_batch(images, SEED, 0.0), images)


def test_a_flip_mirrors_and_a_whole_pixel_shift_moves_by_that_many_pixels() -> None:
    images = np.zeros((2, 8, 8, 3), np.uint8)
    images[:, 2, 1] = 200  # row 2, column 1
    flipped = aug.warp(images, _transforms(2, 8, flip=True)).numpy()
    assert np.argwhere(flipped[0, ..., 0]).tolist() == [[2, 6]]  # column 8 - 1 - 1
    np.testing.assert_array_equal(flipped, images[:, :, ::-1])
    moved = aug.warp(images, _transforms(2, 8, shift=(3.0, 2.0))).numpy()  # 3 right, 2 down
    np.testing.assert_array_equal(moved[:, 2:, 3:], images[:, :-2, :-3])
    assert moved[0, 4, 4].tolist() == [200, 200, 200]  # the rest is the border, filled by reflection
    # Identity and a quarter turn are exact under nearest sampling.
    np.testing.assert_array_equal(aug.warp(images, _transforms(2, 8)).numpy(), images)
    turned = aug.warp(images, _transforms(2, 8, angle=np.pi / 2)).numpy()
    np.testing.assert_array_equal(turned, np.rot90(images, k=1, axes=(1, 2)))


def test_the_gather_warp_samples_the_pixels_tensorflows_own_kernel_samples() -> None:
    images = _noise(batch=16, side=20)
    draws = aug._draws(SEED, 16, 1.0)
    side = tf.constant(20.0)
    transforms = aug.affine_transforms(draws["flip"], draws["rotate"], draws["shear_x"], draws["shear_y"],
                                       tf.exp(draws["zoom"]), draws["translate_x"] * side,
                                       draws["translate_y"] * side, side, side)  # fmt: skip
    reference = tf.raw_ops.ImageProjectiveTransformV3(
        images=images, transforms=transforms, output_shape=[20, 20], fill_value=0.0, interpolation="NEAREST",
        fill_mode="REFLECT",
    ).numpy()  # fmt: skip
    ours = aug.warp(images, transforms).numpy()
    # Only a source coordinate exactly half-way between two pixels may round the other way.
    assert (ours != reference).any(axis=-1).mean() < 0.01
    assert aug.warp(images[..., :1], transforms).shape == (16, 20, 20, 1)  # grayscale too


def test_geometry_keeps_a_centred_object_in_view_at_full_strength() -> None:
    images = np.zeros((64, 32, 32, 3), np.uint8)
    images[:, 12:20, 12:20] = 255  # the object fills the middle quarter of the crop
    out = augment_batch(images, SEED, 1.0).numpy()
    # Colour ops change the values, not where the object is: its centre pixel differs from the corners.
    centre = out[:, 14:18, 14:18].astype(int).mean(axis=(1, 2, 3))
    corners = out[:, [0, 0, -1, -1], [0, -1, 0, -1]].astype(int).mean(axis=(1, 2))
    assert (np.abs(centre - corners) > 40).all()


def test_colour_keeps_the_range_and_matches_a_reference() -> None:
    images = _noise(batch=2)
    matrix = tf.constant([np.eye(3) * 2.0, np.full((3, 3), 1 / 3)], tf.float32)
    offset = tf.constant([[[-100.0, 0.0, 50.0]], [[0.0, 0.0, 0.0]]])
    out = aug.colour(images, matrix, offset).numpy()
    x = images.astype(np.float64).reshape(2, -1, 3)
    want = np.clip(np.round(x @ matrix.numpy() + offset.numpy()), 0, 255).reshape(images.shape)
    assert out.dtype == np.uint8 and np.abs(out.astype(int) - want).max() <= 1
    assert out[0].min() == 0 and out[0].max() == 255  # clipped, not wrapped around


def test_every_op_alone_stays_in_range_and_changes_the_images() -> None:
    images = _noise(batch=8)
    for op in aug.OPS:
        d = {name: tf.zeros([8]) for name in aug.OPS}
        d[op] = tf.fill([8], aug.MAGNITUDE[op])  # at strength 1
        side = tf.constant(12.0)
        t = aug.affine_transforms(tf.zeros([8], tf.bool), d["rotate"], d["shear_x"], d["shear_y"],
                                  tf.exp(d["zoom"]), d["translate_x"] * side, d["translate_y"] * side, side,
                                  side)  # fmt: skip
        out = aug.colour(aug.warp(images, t), *aug._colour_args(images, d)).numpy()
        assert out.dtype == np.uint8 and out.shape == images.shape
        assert not np.array_equal(out, images), op


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory, make_store) -> Path:
    return make_store(tmp_path_factory.mktemp("store"), pattern="random", counts={"train": 21, "val": 4},
                      size=8, num_classes=4, records_per_shard=8)  # fmt: skip


def _epochs(ds: tf.data.Dataset, n: int) -> list[list[int]]:
    return [[int(v) for x, _ in ds for v in x[:, 0, 0, 0].numpy()] for _ in range(n)]


def test_in_memory_and_streamed_splits_give_every_sample_once_per_epoch_reshuffled(
    store: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    in_memory = _epochs(load(store, "train", 5, training=True, seed=3), 3)
    records = _epochs(load(store, "train", 5, training=True, seed=3, memory=False), 3)  # cached records
    monkeypatch.setattr(pipeline, "CACHE_BYTES", 0)
    streamed = _epochs(load(store, "train", 5, training=True, seed=3), 3)
    for epochs in (in_memory, records, streamed):
        assert all(sorted(e) == list(range(21)) for e in epochs)
        assert len({tuple(e) for e in epochs}) == 3  # a new order every epoch
    monkeypatch.undo()
    assert _epochs(load(store, "train", 5, training=True, seed=3), 3) == in_memory  # repeatable
    repeated = load(store, "train", 5, training=True, seed=3, repeat=True, drop_remainder=True)
    values = [int(v) for x, _ in repeated.take(8) for v in x[:, 0, 0, 0].numpy()]
    # Repeated, the stream is one whole epoch after another.
    assert sorted(values[:21]) == list(range(21)) and len(set(values[21:])) == 19


def test_a_split_held_in_memory_pairs_each_image_with_its_own_label(store: Path) -> None:
    def by_sample(ds: tf.data.Dataset) -> dict[int, list[float]]:
        return {
            int(x[0, 0, 0]): y.tolist() for xs, ys in ds for x, y in zip(xs.numpy(), ys.numpy(), strict=True)
        }

    in_order = by_sample(load(store, "train", 4))
    held = by_sample(load(store, "train", 4, training=True, seed=1))
    assert held == in_order and len(held) == 21


def test_op_ranks_are_the_double_argsort_ties_in_index_order() -> None:
    keys = tf.random.stateless_uniform([64, len(aug.OPS)], SEED)
    want = tf.argsort(tf.argsort(keys, axis=1, stable=True), axis=1, stable=True)
    np.testing.assert_array_equal(aug._ranks(keys).numpy(), want.numpy())
    tied = tf.constant([[0.5, 0.2, 0.5, 0.2], [0.0, 0.0, 0.0, 0.0]])
    np.testing.assert_array_equal(aug._ranks(tied).numpy(), [[2, 0, 3, 1], [0, 1, 2, 3]])
    compiled = tf.function(aug._ranks, jit_compile=True) if aug._xla_on_cpu() else aug._ranks
    np.testing.assert_array_equal(compiled(keys).numpy(), want.numpy())


@pytest.mark.parametrize("training", [True, False])
def test_pipelines_run_without_the_autotuner_whose_thread_delays_the_end_of_a_fit(
    store: Path, training: bool, sign_mnist_csv, tmp_path: Path
) -> None:
    from yolol_tf.data.sign_mnist import load_sign_mnist

    ds = load(store, "train", 8, training=training, augment=0.5, seed=0, repeat=training)
    assert ds.options().autotune.enabled is False
    assert next(iter(ds))[0].shape[0] == 8  # and it still yields batches
    csv = sign_mnist_csv(tmp_path / "signs.csv", [0, 1, 2, 3])
    sign_ds, _ = load_sign_mnist(csv, 2, training=training)
    assert sign_ds.options().autotune.enabled is False
