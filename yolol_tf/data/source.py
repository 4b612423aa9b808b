"""One entry point from a user's ``--data`` to tf.data datasets: demo data, a store, YOLO or Sign-MNIST.

``train``, ``evaluate`` and ``tune`` call :func:`open_data` and then ``source.dataset(split, ...)``,
never caring which kind of data is behind it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from yolol_tf.data.info import INFO_FILE, SPLITS, DatasetInfo, read_info
from yolol_tf.data.settings import DataSettings, check_size
from yolol_tf.errors import UserError


@dataclass(frozen=True)
class DataSource:
    """Where the samples come from, and how to get each split as a dataset.

    Args:
        info: classes, sample shape and counts per split.
        store: the store folder, or None for Sign-MNIST CSVs.
        splits: splits that have samples, in the order train, val, test.
        csv_files: for Sign-MNIST, per split: (CSV path, validation_fraction, subset) as passed to
            :func:`yolol_tf.data.load_sign_mnist`.
        csv_classes: for Sign-MNIST, the label values that are classes (those in the data).
    """

    info: DatasetInfo
    store: Path | None
    splits: list[str]
    csv_files: dict[str, tuple[Path, float | None, str | None]] = field(default_factory=dict)
    csv_classes: tuple[int, ...] = ()

    def dataset(self, split: str, batch_size: int = 32, **options: Any) -> Any:
        """The split as a ``tf.data.Dataset`` of (uint8 images, float32 labels).

        Args:
            split: one of ``self.splits``.
            batch_size: samples per batch.
            **options: how to read it, as :func:`yolol_tf.data.load` takes them (``training``,
                ``augment``, ``seed``, ``drop_remainder``, ``repeat``, ``memory``), for a store and a CSV
                alike.
        """
        if split not in self.splits:
            raise UserError(f"No {split!r} split in {self.info.source}. Splits: {', '.join(self.splits)}")
        if self.store is not None:
            from yolol_tf.data.pipeline import load

            return load(self.store, split, batch_size, **options)
        from yolol_tf.data.sign_mnist import load_sign_mnist

        options.pop("memory", None)  # a CSV is always held in memory
        path, fraction, subset = self.csv_files[split]
        ds, _ = load_sign_mnist(
            path, batch_size, validation_fraction=fraction, subset=subset, classes=list(self.csv_classes),
            **options,
        )  # fmt: skip
        return ds


def _sign_mnist_source(train_csv: Path, val_csv: Path | None) -> DataSource:
    from yolol_tf.data.sign_mnist import NAMES, SIDE, present_classes, read_sign_mnist, split_indices

    fraction = 0.1
    train_idx, val_idx = split_indices(len(read_sign_mnist(train_csv)[1]), fraction)
    counts = {"train": len(train_idx), "val": len(val_idx)}
    csv_files: dict[str, tuple[Path, float | None, str | None]] = {
        "train": (train_csv, fraction, "train"),
        "val": (train_csv, fraction, "val"),
    }
    if val_csv is not None:  # the separate file is held back for the final report only
        counts["test"] = len(read_sign_mnist(val_csv)[1])
        csv_files["test"] = (val_csv, None, "test")
    # The classes are the labels that occur; the held-back file may not bring a class training never saw.
    classes = present_classes(train_csv)
    info = DatasetInfo(
        names=[NAMES[c] for c in classes], num_classes=len(classes), image_shape=(SIDE, SIDE, 1),
        counts=counts, single_label=True, source=str(train_csv),
    )  # fmt: skip
    return DataSource(
        info=info, store=None, splits=list(counts), csv_files=csv_files, csv_classes=tuple(classes)
    )


def _store_source(store: Path) -> DataSource:
    info = read_info(store)
    splits = [s for s in SPLITS if info.counts.get(s, 0) > 0]
    splits += [s for s in info.counts if s not in splits and info.counts[s] > 0]
    return DataSource(info=info, store=store, splits=splits)


def _is_csv(path: Path) -> bool:
    return path.suffix.lower() == ".csv"


def open_data(
    data: str | os.PathLike | DataSettings | None = None,
    *,
    strict: bool = False,
    workers: int | None = None,
    **options: Any,
) -> DataSource:
    """Opens the user's ``--data``, preparing a store first where needed.

    Args:
        data: the data settings (a :class:`~yolol_tf.data.settings.DataSettings`, or a ``TrainConfig`` or
            ``TuneConfig``, which are ones), or just the data: None (the embedded demo dataset), a
            Sign-MNIST CSV, a store folder (with dataset.json), or a YOLO dataset (a data.yaml or a
            dataset folder), which is converted once into a cached store.
        strict: fail on the first data problem, as in ``prepare``.
        workers: processes ``prepare`` decodes images with (None: one per core).
        **options: data settings given one by one (``val=``, ``size=``, ``context=``, ``min_visible=``,
            ``min_box=``, ``mode=``), over those of ``data``. ``val`` is only for a CSV: a second
            Sign-MNIST CSV used as the "test" split; "train" and "val" are a fixed 90/10 split of the
            first. A ``size`` that differs from a store's or CSV's own is refused.

    Example:
        >>> source = open_data(None)  # doctest: +SKIP
        >>> train_ds = source.dataset("train", 32, training=True, augment=0.5)  # doctest: +SKIP
    """
    if isinstance(data, DataSettings):
        settings = DataSettings.of(data, **options)
    else:
        settings = DataSettings.of(None, data=None if data is None else str(data), **options)
    source = _open(settings, strict, workers)
    check_size(settings.size, int(source.info.image_shape[0]), source.info.source)
    return source


def _open(settings: DataSettings, strict: bool, workers: int | None) -> DataSource:
    data, val = settings.data, settings.val
    if data is None:
        from yolol_tf.data.demo import demo_data_path

        data = demo_data_path()
    path = Path(data).expanduser()
    if val is not None and not _is_csv(path):
        raise UserError(
            f"--val is only for Sign-MNIST CSV data (a YOLO dataset names its own splits). Received: val={val}"
        )
    if _is_csv(path):
        if not path.is_file():
            raise UserError(f"Sign-MNIST CSV not found: {path}")
        val_path = Path(val).expanduser() if val is not None else None
        if val_path is not None and not val_path.is_file():
            raise UserError(f"--val CSV not found: {val_path}")
        return _sign_mnist_source(path, val_path)
    if not path.exists():
        raise UserError(
            f"--data not found: {path} (expected a data.yaml, a dataset folder, a store or a CSV)"
        )
    if path.is_dir() and (path / INFO_FILE).is_file():
        return _store_source(path)
    from yolol_tf.data.store import prepare

    return _store_source(prepare(path, settings=settings, strict=strict, workers=workers))
