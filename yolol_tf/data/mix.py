"""MixUp and CutMix on batches of crops, with labels that stay exact multi-hot.

A crop's label follows one rule (``crops.py``): class k is on iff some object of class k shows at least
``min_visible`` of its area in the crop (the anchor always counts). Mixing makes a new picture; its label is
that rule applied to the new picture, never an area- or ``lam``-weighted soft label, which would say "0.1
of a cat" for a small cat pasted whole.

CutMix: a rectangle R of sample j (another sample of the batch) is pasted into sample i at the same place.
The store keeps, for every crop, the objects that make its label: class and whole box in the crop's
normalised coordinates, and C, the part of the crop its window's pixels fill (the rest is letterbox
padding). With ``area`` of a box its whole area (which may reach past the crop), the new label is:

- i's object o counts iff R misses it, or ``area(o ∩ C_i ∖ R) / area(o) >= min_visible``;
- j's object o counts iff ``area(o ∩ C_j ∩ R) / area(o) >= min_visible``;
- class k is on iff some counted object is of class k.

``>=``, as the crops count a box exactly ``min_visible`` inside (a float32 slack of 1e-6). An object that
was not in a crop's geometry was under ``min_visible`` there, and pasting only hides or cuts pixels, so it
stays off. Both pictures are judged apart: an object shown by two crops of one photo counts per crop.
``min_visible`` is the store's own (dataset.json). Stores prepared before store version 3 and Sign-MNIST
have no geometry: CutMix is then off, with one warning.

MixUp: image ``lam * x_i + (1 - lam) * x_j`` with ``lam ~ Beta(32, 32)`` clipped to [0.3, 0.7], as
YOLO detectors mix (Ultralytics); label = union (elementwise max) of both labels. Both objects stay whole
and in place, so both are in view: a ``lam``-weighted label would call a plainly visible object half
absent. ``lam`` is kept near 0.5 so that neither picture fades to a ghost that the label still claims.

Each sample is mixed with probability ``cutmix`` (then ``mixup``, on the result), independently of the
others, so the share of mixed samples does not depend on the batch size. A partner is another sample of
the batch (a random cyclic permutation: never itself). Everything is a pure function of the batch and an explicit seed
(``tf.random.stateless_*``), so it is the same eagerly and inside ``Dataset.map`` (tested).
"""

from __future__ import annotations

import sys

import tensorflow as tf

from yolol_tf.errors import UserError

GEOMETRY_FEATURES = {
    "objects": tf.io.FixedLenFeature([], tf.string),
    "content": tf.io.FixedLenFeature([], tf.string),
}
MIXUP_ALPHA = 32.0  # Beta(32, 32): lam is 0.5 +- 0.06
MIXUP_SHARE = 0.3  # the least share of either picture in a MixUp
_TOLERANCE = 1e-6  # float32 slack on min_visible
_WARNED: set[str] = set()  # sources already warned about
_SALT = 0x6D6978  # folded into the batch seed: draws independent of augment_batch's with the same seed


def check(mixup: float, cutmix: float) -> None:
    """Refuses probabilities outside [0, 1], naming the setting and its value."""
    for name, value in (("mixup", mixup), ("cutmix", cutmix)):
        if not 0.0 <= value <= 1.0:
            raise UserError(f"{name} must be a probability in [0, 1]. Received: {name}={value!r}")


def usable_cutmix(cutmix: float, has_geometry: bool, source: str) -> float:
    """``cutmix``, or 0 with a warning on stderr when the data records no object geometry."""
    if cutmix > 0 and not has_geometry:
        if source in _WARNED:  # once per source and process (a search opens the data every trial)
            return 0.0
        _WARNED.add(source)
        print(
            f"warning: CutMix is off: {source} records no object geometry, so a pasted region's labels "
            f"cannot be known. For a YOLO dataset, run `yolol-tf prepare` again (store version 3 or later).",
            file=sys.stderr,
        )
        return 0.0
    return cutmix


def parse_geometry(example: dict, max_objects: int) -> tuple[tf.Tensor, tf.Tensor]:
    """The objects ``[B, max_objects, 5]`` and content ``[B, 4]`` of parsed records (``GEOMETRY_FEATURES``)."""
    objects = tf.reshape(tf.io.decode_raw(example["objects"], tf.float32), [-1, max_objects, 5])
    content = tf.reshape(tf.io.decode_raw(example["content"], tf.float32), [-1, 4])
    return objects, content


def _area(boxes: tf.Tensor) -> tf.Tensor:
    return tf.maximum(boxes[..., 2] - boxes[..., 0], 0.0) * tf.maximum(boxes[..., 3] - boxes[..., 1], 0.0)


def _intersect(a: tf.Tensor, b: tf.Tensor) -> tf.Tensor:
    """Box ``a`` ∩ box ``b`` (``x1, y1, x2, y2`` last), empty boxes having no area."""
    return tf.concat([tf.maximum(a[..., :2], b[..., :2]), tf.minimum(a[..., 2:], b[..., 2:])], axis=-1)


def visible_fractions(objects: tf.Tensor, content: tf.Tensor, rect: tf.Tensor, *, pasted: bool) -> tf.Tensor:
    """The share of each object's whole area that shows after a paste of ``rect``.

    Args:
        objects: ``[B, M, 5]`` rows ``(class, x1, y1, x2, y2)``.
        content: ``[B, 4]``, the part of each crop its pixels fill.
        rect: ``[B, 4]``, the pasted rectangle (normalised; zero area: nothing pasted).
        pasted: True for the objects of the pasted picture (the part inside ``rect`` shows), False for
            those of the picture pasted into (the part outside ``rect`` shows).

    Returns:
        ``[B, M]``; 0 for padding rows.
    """
    boxes = objects[..., 1:]
    area = _area(boxes)
    shown = _intersect(boxes, content[:, None, :])
    covered = _area(_intersect(shown, rect[:, None, :]))
    part = covered if pasted else _area(shown) - covered
    return tf.math.divide_no_nan(part, area)


def _classes(objects: tf.Tensor, counted: tf.Tensor, num_classes: int) -> tf.Tensor:
    """Multi-hot ``[B, num_classes]`` of the classes of counted objects (padding, class -1, is none)."""
    hot = tf.one_hot(tf.cast(objects[..., 0], tf.int32), num_classes)  # -1 gives a row of zeros
    return tf.reduce_max(hot * tf.cast(counted, tf.float32)[..., None], axis=1)


def cutmix_labels(
    objects: tf.Tensor,
    content: tf.Tensor,
    partner: tf.Tensor,
    rect: tf.Tensor,
    num_classes: int,
    min_visible: float,
) -> tf.Tensor:
    """The labels of crops after each gets ``rect`` of its partner pasted in (the module's rule).

    Args:
        objects: ``[B, M, 5]``, each crop's objects.
        content: ``[B, 4]``.
        partner: ``[B]`` int, the crop each one's rectangle comes from.
        rect: ``[B, 4]`` normalised ``x1, y1, x2, y2`` (zero area: the crop is unchanged).
        num_classes: length of the labels.
        min_visible: the share of an object's area that must show for its class to count.

    Returns:
        float32 multi-hot ``[B, num_classes]``.
    """
    threshold = min_visible - _TOLERANCE
    missed = _area(_intersect(objects[..., 1:], rect[:, None, :])) <= 0.0
    own = missed | (visible_fractions(objects, content, rect, pasted=False) >= threshold)
    theirs_objects, theirs_content = tf.gather(objects, partner), tf.gather(content, partner)
    theirs = visible_fractions(theirs_objects, theirs_content, rect, pasted=True) >= threshold
    return tf.maximum(_classes(objects, own, num_classes), _classes(theirs_objects, theirs, num_classes))


def _partners(seed: tf.Tensor, batch: tf.Tensor) -> tf.Tensor:
    """A random cyclic permutation: sample ``order[k]`` gets ``order[k + 1]``, never itself (batch > 1)."""
    order = tf.argsort(tf.random.stateless_uniform([batch], seed))
    return tf.scatter_nd(order[:, None], tf.roll(order, -1, axis=0), [batch])


def _cut_rects(seed: tf.Tensor, batch: tf.Tensor, height: tf.Tensor, width: tf.Tensor) -> tf.Tensor:
    """Standard CutMix rectangles in pixels ``[B, 4]`` (x1, y1, x2, y2; x2, y2 exclusive): a share ``u ~
    U(0, 1)`` of the area, sides ``sqrt(u)`` of the image's, centred anywhere, clipped to the image."""
    area_seed, centre_seed = tf.unstack(tf.random.experimental.stateless_split(seed, 2))
    side = tf.sqrt(tf.random.stateless_uniform([batch], area_seed))
    size = tf.cast(tf.stack([width, height]), tf.float32)
    half = tf.cast(tf.round(side[:, None] * size), tf.int32) // 2
    centre = tf.cast(tf.random.stateless_uniform([batch, 2], centre_seed) * size, tf.int32)
    limit = tf.stack([width, height])
    return tf.concat(
        [tf.clip_by_value(centre - half, 0, limit), tf.clip_by_value(centre + half, 0, limit)], 1
    )


def _beta(seed: tf.Tensor, shape: tf.Tensor, alpha: float) -> tf.Tensor:
    a_seed, b_seed = tf.unstack(tf.random.experimental.stateless_split(seed, 2))
    a = tf.random.stateless_gamma(shape, a_seed, alpha)
    b = tf.random.stateless_gamma(shape, b_seed, alpha)
    return a / (a + b)


def mix_batch(
    images: tf.Tensor,
    labels: tf.Tensor,
    seed: tf.Tensor,
    *,
    mixup: float = 0.0,
    cutmix: float = 0.0,
    objects: tf.Tensor | None = None,
    content: tf.Tensor | None = None,
    min_visible: float = 0.5,
) -> tuple[tf.Tensor, tf.Tensor]:
    """CutMix, then MixUp, on a batch (see the module's docstring for the labels).

    Args:
        images: uint8 ``[B, H, W, C]``.
        labels: float32 multi-hot ``[B, num_classes]``.
        seed: int ``[2]``, the stateless random seed; the same seed gives the same output.
        mixup: probability that a sample is mixed with another.
        cutmix: probability that a sample gets a rectangle of another pasted in; needs ``objects`` and
            ``content`` (``[B, M, 5]`` and ``[B, 4]``, from :func:`parse_geometry`).
        min_visible: the share of an object's area that must show for its class to count.

    Returns:
        uint8 images and float32 multi-hot labels, of the same shapes.
    """
    seed = tf.cast(seed, tf.int64)
    seeds = tf.unstack(tf.random.experimental.stateless_split(seed, 6))
    shape = tf.shape(images)
    batch, index = shape[0], tf.range(shape[0])
    x, y = images, labels
    if cutmix > 0:
        if objects is None or content is None:
            raise ValueError("cutmix needs the objects and content of the batch's crops")
        partner = _partners(seeds[0], batch)
        on = (tf.random.stateless_uniform([batch], seeds[1]) < cutmix) & (partner != index)
        rect = _cut_rects(seeds[2], batch, shape[1], shape[2]) * tf.cast(on, tf.int32)[:, None]
        cols, rows = tf.range(shape[2]), tf.range(shape[1])
        in_x = (cols[None, :] >= rect[:, 0:1]) & (cols[None, :] < rect[:, 2:3])
        in_y = (rows[None, :] >= rect[:, 1:2]) & (rows[None, :] < rect[:, 3:4])
        mask = (in_y[:, :, None] & in_x[:, None, :])[..., None]
        x = tf.where(mask, tf.gather(x, partner), x)
        size = tf.cast(tf.stack([shape[2], shape[1], shape[2], shape[1]]), tf.float32)
        new = cutmix_labels(
            objects, content, partner, tf.cast(rect, tf.float32) / size, y.shape[-1], min_visible
        )
        y = tf.where(on[:, None], new, y)
    if mixup > 0:
        partner = _partners(seeds[3], batch)
        on = (tf.random.stateless_uniform([batch], seeds[4]) < mixup) & (partner != index)
        lam = tf.clip_by_value(_beta(seeds[5], [batch], MIXUP_ALPHA), MIXUP_SHARE, 1.0 - MIXUP_SHARE)
        lam = tf.where(on, lam, 1.0)[:, None, None, None]
        mixed = lam * tf.cast(x, tf.float32) + (1.0 - lam) * tf.cast(tf.gather(x, partner), tf.float32)
        x = tf.cast(tf.round(tf.clip_by_value(mixed, 0.0, 255.0)), tf.uint8)
        y = tf.where(on[:, None], tf.maximum(y, tf.gather(y, partner)), y)
    return tf.ensure_shape(x, images.shape), tf.ensure_shape(y, labels.shape)


def mix_dataset(
    ds: tf.data.Dataset, *, mixup: float, cutmix: float, min_visible: float, seed: int | None
) -> tf.data.Dataset:
    """Maps :func:`mix_batch` over batches ``(images, labels)``, or ``(images, labels, objects, content)``
    with ``cutmix``; yields ``(images, labels)``, one seed per batch.

    Args:
        ds: batched dataset.
        mixup: MixUp probability per sample.
        cutmix: CutMix probability per sample (0 when ``ds`` has no geometry).
        min_visible: the store's ``min_visible``.
        seed: makes the draws repeatable; they differ every epoch.
    """
    check(mixup, cutmix)
    if mixup <= 0 and cutmix <= 0:
        return ds.map(lambda x, y, *_: (x, y)) if len(ds.element_spec) > 2 else ds
    seeds = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True).batch(2)

    def mix(batch: tuple, s: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        geometry = dict(zip(("objects", "content"), batch[2:], strict=False))
        s = tf.random.experimental.stateless_fold_in(s, _SALT)
        return mix_batch(
            batch[0], batch[1], s, mixup=mixup, cutmix=cutmix, min_visible=min_visible, **geometry
        )

    return tf.data.Dataset.zip((ds, seeds)).map(mix, num_parallel_calls=tf.data.AUTOTUNE)
