"""A store's record: a ``tf.train.Example`` of raw pixels, a multi-hot label and its index.csv row.

Since store version 3 a record also holds its objects' geometry (see :func:`yolol_tf.data.crops.geometry`):
``objects``, float32 ``[max_objects, 5]`` rows ``(class, x1, y1, x2, y2)`` padded with class -1, and
``content``, float32 ``[4]``, both raw little-endian bytes; ``max_objects`` is the store's, in dataset.json.

Encoded by hand (protobuf wire format), so ``prepare``'s workers need no TensorFlow. A record's length
follows from the crop size, the number of classes, ``max_objects`` and its row alone, so :func:`shard_bytes` says exactly
how large a shard of them must be: a reader checks a shard against dataset.json (truncated? cut at another
size or for other classes?) with one ``stat``, without reading it.
"""

from __future__ import annotations

from yolol_tf.data.tfrecord import framed_size

CHANNELS = 3  # crops are RGB
OBJECT_FIELDS = 5  # class, x1, y1, x2, y2
FLOAT_BYTES = 4


def _varint(n: int) -> bytes:
    out = bytearray()
    while n > 0x7F:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def _field(number: int, payload: bytes) -> bytes:
    return _varint(number << 3 | 2) + _varint(len(payload)) + payload


def _entry(key: bytes, feature: bytes) -> bytes:
    """One entry of the ``Features.feature`` map (field 1): key = 1, value = 2."""
    return _field(1, _field(1, key) + _field(2, feature))


def _bytes_entry(key: bytes, value: bytes) -> bytes:
    return _entry(key, _field(1, _field(1, value)))  # Feature.bytes_list = 1, BytesList.value = 1


def encode_features(image: bytes, label: bytes, geometry: tuple[bytes, bytes] | None = None) -> bytes:
    """The image and label entries of an Example's feature map, and the objects and content entries."""
    features = _bytes_entry(b"image", image) + _bytes_entry(b"label", label)
    if geometry is not None:
        features += _bytes_entry(b"objects", geometry[0]) + _bytes_entry(b"content", geometry[1])
    return features


def with_row(features: bytes, row: int) -> bytes:
    """A serialized ``tf.train.Example``: ``features`` plus the row entry (Feature.int64_list = 3, packed)."""
    return _field(1, features + _entry(b"row", _field(3, _field(1, _varint(row)))))  # Example.features = 1


def encode_example(
    image: bytes, label: bytes, row: int, geometry: tuple[bytes, bytes] | None = None
) -> bytes:
    """A serialized ``tf.train.Example`` with features image (bytes), label (bytes) and row (int64), and
    objects and content (bytes) when ``geometry`` is given."""
    return with_row(encode_features(image, label, geometry), row)


# The same encoding, counting bytes instead of writing them (a field with field number < 16 has a 1-byte tag).
def _field_len(payload: int) -> int:
    return 1 + len(_varint(payload)) + payload


def _entry_len(key: int, feature: int) -> int:
    return _field_len(_field_len(key) + _field_len(feature))


def example_size(image: int, label: int, row: int, max_objects: int = 0) -> int:
    """The length of ``encode_example`` for an image of ``image`` bytes and a label of ``label`` bytes,
    with the geometry of ``max_objects`` objects (0: none)."""
    features = _entry_len(5, _field_len(_field_len(image))) + _entry_len(5, _field_len(_field_len(label)))
    if max_objects:
        objects = max_objects * OBJECT_FIELDS * FLOAT_BYTES
        features += _entry_len(7, _field_len(_field_len(objects))) + _entry_len(7, _field_len(_field_len(16)))
    return _field_len(features + _entry_len(3, _field_len(_field_len(len(_varint(row))))))


def shard_bytes(size: int, num_classes: int, first_row: int, records: int, max_objects: int = 0) -> int:
    """The exact size of a shard file holding ``records`` crops of rows ``first_row`` onwards.

    Args:
        size: the crop side (crops are ``size x size x 3`` uint8).
        num_classes: the length of the multi-hot label.
        first_row: the index.csv row of the shard's first record; rows follow on one by one.
        records: how many records the shard holds.
        max_objects: the store's ``max_objects`` (0 for a store without geometry).
    """
    image = size * size * CHANNELS
    total, row, end = 0, first_row, first_row + records
    while row < end:  # rows grouped by the length of their varint: 1 byte below 128, 2 below 16384, ...
        group_end = min(end, 1 << (7 * len(_varint(row))))
        total += (group_end - row) * framed_size(example_size(image, num_classes, row, max_objects))
        row = group_end
    return total
