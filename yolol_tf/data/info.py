"""What a dataset holds (classes, sample shape, counts), read from a store's ``dataset.json``.

Kept free of TensorFlow so that commands which only describe a store stay fast.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from yolol_tf.errors import UserError

STORE_FORMAT = "yolol-tf-store"
# 2: dataset.json lists every file's size and CRC32C and each shard's record count ("files").
# 3: each record holds its objects' geometry, dataset.json their most per record ("max_objects").
STORE_VERSION = 3
READABLE_VERSIONS = (1, 2, 3)  # version 1 stores are still read, with the checks their dataset.json allows
INFO_FILE = "dataset.json"
INDEX_FILE = "index.csv"
SPLITS = ("train", "val", "test")


@dataclass(frozen=True)
class DatasetInfo:
    """Describes the samples a dataset yields.

    Args:
        names: class names; index = position in the label vector.
        num_classes: ``len(names)``.
        image_shape: (height, width, channels) of one sample.
        counts: samples per split, e.g. ``{"train": 1200, "val": 240}``.
        single_label: True when every sample has exactly one class (softmax fits), False for multi-hot.
        source: where the samples came from (a store folder or a CSV file), for reports.
    """

    names: list[str]
    num_classes: int
    image_shape: tuple[int, int, int]
    counts: dict[str, int] = field(default_factory=dict)
    single_label: bool = False
    source: str = ""


def read_store_json(store: str | os.PathLike, *, check_files: bool = True) -> dict[str, Any]:
    """Reads and checks ``STORE/dataset.json``; a missing, half-written or damaged store is a ``UserError``.

    Args:
        store: the store folder (the one ``yolol-tf prepare`` wrote).
        check_files: also check the store's files against it (a ``stat`` each: see
            :func:`yolol_tf.data.integrity.damage`), so that a truncated shard, a missing index.csv or an
            edited dataset.json is refused here rather than by TensorFlow mid-training.
    """
    store = Path(store)
    path = store / INFO_FILE
    if not store.is_dir():
        raise UserError(f"Store folder not found: {store}")
    if not path.is_file():
        raise UserError(
            f"{store} is not a complete store: {INFO_FILE} is missing (it is written last, so an "
            f"interrupted `yolol-tf prepare` leaves none). Run `yolol-tf prepare DATA --out {store}` again."
        )
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise UserError(f"{path}: not valid JSON ({e})") from None
    if not isinstance(meta, dict) or meta.get("format") != STORE_FORMAT:
        raise UserError(f'{path}: not a yolol-tf store (expected "format": "{STORE_FORMAT}")')
    if type(meta.get("version")) is not int or meta["version"] not in READABLE_VERSIONS:
        raise UserError(
            f"{path}: store version {meta.get('version')!r} is not supported (this yolol-tf reads versions "
            f"{', '.join(map(str, READABLE_VERSIONS))}); prepare the dataset again."
        )
    keys = ("names", "num_classes", "size", "splits") + (("files",) if meta["version"] >= 2 else ())
    for key in keys:
        if key not in meta:
            raise UserError(f"{path}: incomplete store, key {key!r} is missing")
    if len(meta["names"]) != meta["num_classes"]:
        raise UserError(f"{path}: {len(meta['names'])} names but num_classes={meta['num_classes']}")
    for split, entry in meta["splits"].items():
        for key in ("crops", "shards"):
            if key not in entry:
                raise UserError(f"{path}: incomplete store, splits.{split}.{key} is missing")
    if check_files:
        from yolol_tf.data import integrity  # it reads this module's names

        problem = integrity.damage(store, meta)
        if problem:
            raise integrity.damaged(store, meta, problem)
    return meta


def read_info(store: str | os.PathLike) -> DatasetInfo:
    """The :class:`DatasetInfo` of a store folder.

    Args:
        store: the store folder.

    Example:
        >>> info = read_info("store")  # doctest: +SKIP
        >>> info.names, info.counts["train"]  # doctest: +SKIP
    """
    meta = read_store_json(store)
    size = int(meta["size"])
    return DatasetInfo(
        names=[str(n) for n in meta["names"]],
        num_classes=int(meta["num_classes"]),
        image_shape=(size, size, 3),
        counts={split: int(entry["crops"]) for split, entry in meta["splits"].items()},
        # Crops cut from detection data can show several objects, so stores are always multi-label.
        single_label=False,
        source=str(Path(store)),
    )


def describe_store(store: str | os.PathLike) -> str:
    """One line about a store: classes, sample size and mode, and samples per split."""
    meta = read_store_json(store)
    counts = ", ".join(f"{split} {entry['crops']}" for split, entry in meta["splits"].items())
    return (
        f"Store: {store} ({meta['num_classes']} classes, {meta['size']}x{meta['size']} {meta.get('mode', '')} "
        f"samples: {counts or 'none'})"
    )
