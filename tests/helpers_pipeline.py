"""Writes a small crop store by hand, in the store format of the shared contract.

It lets the reading side (``load``, ``read_info``, ``open_data``) be tested on its own, with known
pixels and labels, and is the one store writer behind every test helper that needs a tiny store. Records
come from the package's own encoder and the files follow ``yolol_tf.data.store``'s layout, so these
stores differ from prepared ones only in what the samples show.
"""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path

import numpy as np

from yolol_tf.data.info import INDEX_FILE, INFO_FILE
from yolol_tf.data.store import CROPS_PER_SHARD, FORMAT, VERSION, encode_example
from yolol_tf.data.tfrecord import file_crc32c


def write_store(
    root: str | os.PathLike,
    samples: dict[str, list[tuple[np.ndarray, np.ndarray]]],
    names: list[str],
    *,
    size: int | None = None,
    records_per_shard: int = CROPS_PER_SHARD,
) -> Path:
    """Writes ``root/`` as a crop store (shards, index.csv, then dataset.json) and returns its path.

    Args:
        root: the store folder; created if missing.
        samples: per split, in order, a list of (uint8 image [S, S, 3], multi-hot label [len(names)]);
            the label may be any numeric dtype holding 0s and 1s.
        names: class names.
        size: the crop side S; None takes it from the first image (needed only when there is none).
        records_per_shard: how many records go into one shard file (the default puts a small split in one).

    Raises:
        ValueError: when an image or label does not have the shape and type the store records.
    """
    import tensorflow as tf

    root = Path(root)
    if size is None:
        first = next((image for items in samples.values() for image, _ in items), None)
        if first is None:
            raise ValueError("write_store needs size= when no split holds a sample")
        size = int(first.shape[0])
    (root / "shards").mkdir(parents=True, exist_ok=True)
    rows, splits, files, row = [], {}, {}, 0
    for split, items in samples.items():
        shards = []
        for start in range(0, len(items), records_per_shard):
            shard = f"shards/{split}-{len(shards):05d}.tfrecord"
            shards.append(shard)
            chunk = items[start : start + records_per_shard]
            with tf.io.TFRecordWriter(str(root / shard)) as writer:
                for i, (image, label) in enumerate(chunk, start):
                    image, label = _checked(image, label, size, len(names), f"{split}[{i}]")
                    writer.write(encode_example(image.tobytes(), label.tobytes(), row))
                    ids = ";".join(map(str, np.flatnonzero(label)))
                    rows.append([split, f"images/{split}/{i}.jpg", 0, 0, 0, size, size, ids])
                    row += 1
            files[shard] = {**_entry(root / shard), "records": len(chunk)}
        splits[split] = {"images": len(items), "crops": len(items), "shards": shards}
    with open(root / INDEX_FILE, "w", newline="", encoding="utf-8") as f:
        index = csv.writer(f, lineterminator="\n")
        index.writerow(["split", "image", "box", "x1", "y1", "x2", "y2", "label_ids"])
        index.writerows(rows)
    files[INDEX_FILE] = _entry(root / INDEX_FILE)
    options = {"size": size, "context": 0.0, "min_visible": 0.5, "min_box": 2.0, "mode": "crop"}
    info = {
        "format": FORMAT,
        "version": VERSION,
        "names": list(names),
        "num_classes": len(names),
        "size": size,
        "mode": "crop",
        "options": options,
        "source": "hand-written test store",
        "splits": splits,
        "problems": 0,
        "skipped_small": 0,
        "fingerprint": "test",
        "files": files,
    }
    # Written last, as prepare() does: its presence marks the store complete.
    (root / INFO_FILE).write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")
    return root


def _entry(path: Path) -> dict:
    """A file's entry in dataset.json's ``files``: its size and CRC32C."""
    return {"bytes": path.stat().st_size, "crc32c": f"{file_crc32c(path):08x}"}


def _checked(
    image: np.ndarray, label: np.ndarray, size: int, num_classes: int, where: str
) -> tuple[np.ndarray, np.ndarray]:
    """The sample as the store holds it (uint8 pixels, uint8 multi-hot), or a ValueError naming it."""
    image, label = np.asarray(image), np.asarray(label)
    # Raw bytes go into the record, so a wrong dtype or shape would be read back as garbage, not fail.
    if image.dtype != np.uint8 or image.shape != (size, size, 3):
        raise ValueError(
            f"sample {where}: image must be uint8 {(size, size, 3)}, got {image.dtype} {image.shape}"
        )
    if label.shape != (num_classes,) or not np.isin(label, (0, 1)).all():
        raise ValueError(f"sample {where}: label must be a 0/1 vector of {num_classes}, got {label.tolist()}")
    return image, label.astype(np.uint8)


def random_store(
    out: Path, *, counts: dict[str, int] | None = None, size: int = 8, num_classes: int = 4, seed: int = 0
) -> Path:
    """A store of random pixels and random 1-3 class label sets, 8 records a shard.

    Sample i of a split has top-left pixel i % 256.
    """
    rng = np.random.default_rng(seed)
    counts = counts or {"train": 20, "val": 10}
    samples = {}
    for split, n in counts.items():
        items = []
        for i in range(n):
            image = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
            image[0, 0, 0] = i % 256  # lets tests see the order records come out in
            label = np.zeros(num_classes, np.uint8)
            label[rng.choice(num_classes, int(rng.integers(1, 4)), replace=False)] = 1
            items.append((image, label))
        samples[split] = items
    # Small shards, so that reading in order is tested across shard boundaries.
    return write_store(out, samples, [f"class{k}" for k in range(num_classes)], records_per_shard=8)
