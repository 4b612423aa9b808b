"""Whether a converted store can be reused: the fingerprint of a dataset and its options, and what stands in the
way of reusing a store (another dataset, other options, an older format, damaged files)."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

from yolol_tf.data import integrity
from yolol_tf.data.info import INFO_FILE, STORE_FORMAT, STORE_VERSION, read_store_json
from yolol_tf.data.yolo import YoloDataset
from yolol_tf.errors import UserError


def fingerprint(dataset: YoloDataset, options: dict[str, Any]) -> str:
    """A hash of the options, the class names, every image's path, size and mtime, and every label file.

    Label files are hashed by content: they are small, and an edit that keeps a file's size and mtime (a
    class id changed in place, a tool that restores times, a checkout) must not reuse crops labelled from
    the old text. Images are keyed by path, size and mtime only: hashing them would read the whole dataset
    at every reuse (gigabytes, a good part of a conversion), and an image edited in place to the same size
    with its mtime restored is far rarer than a relabelled box.
    """
    h = hashlib.sha256(
        json.dumps([STORE_FORMAT, STORE_VERSION, options, dataset.names], sort_keys=True).encode()
    )
    labels: dict[str, str] = {}  # a label file read by two splits is read once
    for split, items in dataset.splits.items():
        for item in items:
            try:
                st = os.stat(item.image)
                h.update(f"{split}\0{item.image}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
            except OSError:
                h.update(f"{split}\0{item.image}\0-\n".encode())
            if item.label not in labels:
                labels[item.label] = _file_hash(item.label)
            h.update(f"{split}\0{item.label}\0{labels[item.label]}\n".encode())
    for p in dataset.problems:
        h.update(f"{p}\n".encode())
    return h.hexdigest()


def _file_hash(path: str) -> str:
    try:
        with open(path, "rb") as f:
            return hashlib.sha256(f.read()).hexdigest()
    except OSError:
        return "-"  # missing (an image without labels) or unreadable (reported when converting)


def reuse_problem(out: Path, fp: str, dataset: YoloDataset, options: dict[str, Any]) -> str | None:
    """Why the store at ``out`` cannot be reused for ``fp``: "" when there is none, None when it can be.

    A store is reused only when it was converted from this dataset with these options, its dataset.json
    still says so, and every file is there, of the size and CRC32C it was written with (see
    :mod:`yolol_tf.data.integrity` for the cost).
    """
    if not (out / INFO_FILE).is_file():
        return ""
    try:
        meta = read_store_json(out, check_files=False)
    except UserError as e:
        return e.message
    if meta["version"] != STORE_VERSION:
        return f"it was written by an older yolol-tf (store version {meta['version']})"
    if meta.get("fingerprint") != fp:
        return "the dataset or the options changed"
    expected = {"names": dataset.names, "num_classes": len(dataset.names), "size": options["size"],
                "mode": options["mode"], "options": options}  # fmt: skip
    for key, value in expected.items():
        if meta.get(key) != value:
            return f"dataset.json says {key} is {meta.get(key)!r}, the dataset and options give {value!r}"
    return integrity.damage(out, meta) or integrity.checksum_damage(out, meta)
