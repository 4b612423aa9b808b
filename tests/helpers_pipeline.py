"""Writes a small store by hand, following the store format of the shared contract exactly.

It lets the reading side (``load``, ``read_info``, ``open_data``) be tested on its own, with known
pixels and labels, and serves as a fixture wherever a tiny store is needed.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np


def write_store(
    out: Path,
    samples: dict[str, list[tuple[np.ndarray, list[int]]]],
    names: list[str],
    *,
    records_per_shard: int = 8,
) -> Path:
    """Writes ``out/`` as a crop store.

    Args:
        out: the store folder.
        samples: per split, a list of (uint8 image [S, S, 3], class ids).
        names: class names.
        records_per_shard: how many records go into one shard file.
    """
    import tensorflow as tf

    size = next(iter(s for v in samples.values() for s in v))[0].shape[0]
    (out / "shards").mkdir(parents=True, exist_ok=True)
    rows, splits, row = [], {}, 0
    for split, items in samples.items():
        shards = []
        for start in range(0, len(items), records_per_shard):
            shard = f"shards/{split}-{len(shards):05d}.tfrecord"
            shards.append(shard)
            with tf.io.TFRecordWriter(str(out / shard)) as writer:
                for image, ids in items[start : start + records_per_shard]:
                    label = np.zeros(len(names), np.uint8)
                    label[list(ids)] = 1
                    feature = {
                        "image": tf.train.Feature(bytes_list=tf.train.BytesList(value=[image.tobytes()])),
                        "label": tf.train.Feature(bytes_list=tf.train.BytesList(value=[label.tobytes()])),
                        "row": tf.train.Feature(int64_list=tf.train.Int64List(value=[row])),
                    }
                    writer.write(
                        tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString()
                    )
                    ids_text = ";".join(str(i) for i in sorted(set(ids)))
                    rows.append([split, f"images/{split}/{row}.jpg", 0, 0, 0, size, size, ids_text])
                    row += 1
        splits[split] = {"images": len(items), "crops": len(items), "shards": shards}
    with (out / "index.csv").open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["split", "image", "box", "x1", "y1", "x2", "y2", "label_ids"])
        writer.writerows(rows)
    meta = {
        "format": "yolol-tf-store",
        "version": 1,
        "names": names,
        "num_classes": len(names),
        "size": size,
        "mode": "crop",
        "options": {"size": size, "context": 0.0, "min_visible": 0.5, "min_box": 2.0, "mode": "crop"},
        "source": "hand-written test store",
        "splits": splits,
        "problems": 0,
        "skipped_small": 0,
        "fingerprint": "test",
    }
    (out / "dataset.json").write_text(json.dumps(meta, indent=2), encoding="utf-8")
    return out


def random_store(
    out: Path, *, counts: dict[str, int] | None = None, size: int = 8, num_classes: int = 4, seed: int = 0
) -> Path:
    """A store of random pixels and random 1-3 class label sets; sample i's top-left pixel is i % 256."""
    rng = np.random.default_rng(seed)
    counts = counts or {"train": 20, "val": 10}
    samples = {}
    for split, n in counts.items():
        items = []
        for i in range(n):
            image = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
            image[0, 0, 0] = i % 256  # lets tests see the order records come out in
            ids = sorted(rng.choice(num_classes, int(rng.integers(1, 4)), replace=False).tolist())
            items.append((image, ids))
        samples[split] = items
    return write_store(out, samples, [f"class{k}" for k in range(num_classes)])
