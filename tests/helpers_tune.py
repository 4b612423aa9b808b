"""Test helpers for the search: a tiny in-memory data source and a process entry point for chief/worker tests.

``python -m tests.helpers_tune --out DIR --chief HOST:PORT`` (or ``--worker HOST:PORT --worker-id ID``)
runs a tiny search on :class:`TinySource`, as the distributed test's subprocesses do.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from yolol_tf.config import atomic_write_text
from yolol_tf.data.info import DatasetInfo


class TinySource:
    """A stand-in for ``yolol_tf.data.DataSource``: small learnable multi-label crops held in memory.

    Each class adds its own colour to a quadrant, so a tiny model learns something in one epoch.

    Args:
        size: crop side.
        num_classes: classes (<= 4).
        counts: samples per split.
        seed: random seed of the pixels and labels.
    """

    def __init__(
        self, size: int = 32, num_classes: int = 3, counts: dict[str, int] | None = None, seed: int = 0
    ):
        counts = counts or {"train": 48, "val": 24}
        rng = np.random.default_rng(seed)
        self.arrays: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        for split, n in counts.items():
            y = (rng.random((n, num_classes)) < 0.4).astype(np.float32)
            y[np.arange(n), rng.integers(0, num_classes, n)] = 1.0
            x = rng.integers(0, 60, (n, size, size, 3)).astype(np.float32)
            half = size // 2
            for c in range(num_classes):
                r, q = divmod(c, 2)
                x[y[:, c] > 0, r * half : (r + 1) * half, q * half : (q + 1) * half, c % 3] += 150
            self.arrays[split] = (x.clip(0, 255).astype(np.uint8), y)
        self.info = DatasetInfo(
            names=[f"c{i}" for i in range(num_classes)],
            num_classes=num_classes,
            image_shape=(size, size, 3),
            counts=dict(counts),
            single_label=False,
            source="tiny",
        )
        self.store = None
        self.splits = list(counts)

    def write_store(self, root: str | os.PathLike) -> Path:
        """Writes these samples as a store folder (the documented format) that ``open_data`` reads."""
        import tensorflow as tf

        root = Path(root)
        (root / "shards").mkdir(parents=True, exist_ok=True)
        rows, splits = ["split,image,box,x1,y1,x2,y2,label_ids"], {}
        size = self.info.image_shape[0]
        for split, (x, y) in self.arrays.items():
            shard = f"shards/{split}-00000.tfrecord"
            with tf.io.TFRecordWriter(str(root / shard)) as writer:
                for image, label in zip(x, y.astype(np.uint8), strict=True):
                    ids = ";".join(str(c) for c in np.flatnonzero(label))
                    rows.append(f"{split},{split}/{len(rows)}.jpg,0,0,0,{size},{size},{ids}")
                    feature = {
                        "image": tf.train.Feature(bytes_list=tf.train.BytesList(value=[image.tobytes()])),
                        "label": tf.train.Feature(bytes_list=tf.train.BytesList(value=[label.tobytes()])),
                        "row": tf.train.Feature(int64_list=tf.train.Int64List(value=[len(rows) - 2])),
                    }
                    writer.write(
                        tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString()
                    )
            splits[split] = {"images": len(x), "crops": len(x), "shards": [shard]}
        atomic_write_text(root / "index.csv", "\n".join(rows) + "\n")
        meta = {
            "format": "yolol-tf-store",
            "version": 1,
            "names": self.info.names,
            "num_classes": self.info.num_classes,
            "size": size,
            "mode": "crop",
            "options": {},
            "source": "tiny",
            "splits": splits,
            "problems": 0,
            "skipped_small": 0,
            "fingerprint": "tiny",
        }
        atomic_write_text(root / "dataset.json", json.dumps(meta))
        return root

    def dataset(
        self,
        split: str,
        batch_size: int,
        *,
        training: bool = False,
        augment: float = 0.0,
        seed: int | None = None,
        drop_remainder: bool = False,
        repeat: bool = False,
    ) -> Any:
        import tensorflow as tf

        x, y = self.arrays[split]
        ds = tf.data.Dataset.from_tensor_slices((x, y))
        if training:
            ds = ds.shuffle(len(x), seed=seed)
        if repeat:
            ds = ds.repeat()
        return ds.batch(batch_size, drop_remainder=drop_remainder)


# A small, fast space: tiny cnn widths and depths, one epoch each.
TINY_SPACE = "width: [4, 8]\ndepths: [1-1]\nbatch_size: 16\n"


def tiny_config(out: str, **overrides: Any) -> Any:
    """A TuneConfig for a 2-trial random search of a tiny cnn at 32 px (a space file is written to ``out``'s parent)."""
    from yolol_tf.tuning.search import TuneConfig

    space = os.path.join(os.path.dirname(os.path.abspath(out)), "tiny_space.yaml")
    if not os.path.exists(space):
        atomic_write_text(space, TINY_SPACE)
    values = dict(
        model="cnn", size=32, tuner="random", max_trials=2, epochs=1, out=out, space=space, verbose=0
    )
    values.update(overrides)
    return TuneConfig(**values)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", required=True)
    parser.add_argument("--chief")
    parser.add_argument("--worker")
    parser.add_argument("--worker-id")
    parser.add_argument("--max-trials", type=int, default=3)
    args = parser.parse_args()
    from yolol_tf.tuning.search import tune

    config = tiny_config(
        args.out, chief=args.chief, worker=args.worker, worker_id=args.worker_id, max_trials=args.max_trials
    )
    tune(config, source=None if args.chief else TinySource())


if __name__ == "__main__":
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")
    main()
