"""Sign Language MNIST CSVs: parsing, the fixed train/val split, and bad rows named by file and line."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from yolol_tf.data import load_sign_mnist, open_data
from yolol_tf.data.sign_mnist import HEADER, read_sign_mnist
from yolol_tf.errors import UserError


def write_csv(path: Path, labels: list[int], *, seed: int = 0, header: list[str] | None = None) -> Path:
    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 256, (len(labels), 784))
    pixels[:, 0] = np.arange(len(labels))  # the top-left pixel numbers the row
    lines = [",".join(header or HEADER)]
    lines += [",".join(map(str, [label, *row])) for label, row in zip(labels, pixels, strict=True)]
    path.write_text("\n".join(lines) + "\n")
    return path


def _edit(path: Path, line: int, column: int, value: str) -> None:
    lines = path.read_text().splitlines()
    cells = lines[line - 1].split(",")
    cells[column] = value
    lines[line - 1] = ",".join(cells)
    path.write_text("\n".join(lines) + "\n")


def test_reads_images_and_labels(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "train.csv", [0, 24, 3, 10])
    images, labels = read_sign_mnist(path)
    assert images.shape == (4, 28, 28, 1) and images.dtype == np.uint8
    assert labels.tolist() == [0, 24, 3, 10]
    raw = np.loadtxt(path, delimiter=",", skiprows=1, dtype=int)
    np.testing.assert_array_equal(images.reshape(4, -1), raw[:, 1:])  # row-major 28x28


def test_dataset_is_one_hot_over_the_classes_present_with_letter_names(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "train.csv", [0, 24, 3, 10, 5])
    ds, info = load_sign_mnist(path, batch_size=2)
    assert info.names == ["A", "D", "F", "K", "Y"], "classes are the labels that occur, named by letter"
    assert info.num_classes == 5 and info.single_label and info.image_shape == (28, 28, 1)
    assert info.counts == {"train": 5}
    xs, ys = zip(*[(x.numpy(), y.numpy()) for x, y in ds], strict=True)
    x, y = np.concatenate(xs), np.concatenate(ys)
    assert x.dtype == np.uint8 and x.shape == (5, 28, 28, 1)
    assert y.dtype == np.float32 and y.shape == (5, 5)
    assert y.argmax(1).tolist() == [0, 4, 1, 3, 2] and y.sum(1).tolist() == [1.0] * 5


def test_a_csv_with_ten_labels_has_ten_classes_and_a_test_label_training_never_saw_is_named(
    tmp_path: Path,
) -> None:
    train = write_csv(tmp_path / "train.csv", [i % 10 for i in range(40)])
    source = open_data(train)
    assert source.info.num_classes == 10 and source.info.names == list("ABCDEFGHIJ")
    test = write_csv(tmp_path / "test.csv", [1, 2, 12], seed=1)
    source = open_data(train, val=test)
    with pytest.raises(UserError, match=r"test.csv:4: label 12 does not occur in the training data"):
        next(iter(source.dataset("test", 8)))


def test_the_real_files_24_letters_keep_their_names_without_j(tmp_path: Path) -> None:
    train = write_csv(tmp_path / "train.csv", [i for i in range(25) if i != 9] * 2)
    info = open_data(train).info
    assert info.num_classes == 24 and "J" not in info.names and info.names[9] == "K"


def test_split_is_fixed_disjoint_and_complete(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "train.csv", [i % 24 for i in range(50)])

    def rows(subset: str, seed: int) -> list[int]:
        ds, info = load_sign_mnist(path, 8, training=True, seed=seed, validation_fraction=0.1, subset=subset)
        assert info.counts == {"train": 45, "val": 5}
        return sorted(int(v) for x, _ in ds for v in x.numpy()[:, 0, 0, 0])

    train, val = rows("train", 0), rows("val", 0)
    assert len(train) == 45 and len(val) == 5
    assert sorted(train + val) == list(range(50))
    assert rows("val", 1) == val  # the training seed does not move the split


def test_augmented_training_batches_stay_uint8(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "train.csv", list(range(8)))
    ds, _ = load_sign_mnist(path, 4, training=True, augment=0.8, seed=0)
    x, y = next(iter(ds))
    assert x.dtype.name == "uint8" and x.shape == (4, 28, 28, 1) and y.shape == (4, 8)  # the 8 labels present


@pytest.mark.parametrize(
    ("line", "column", "value", "message"),
    [
        (3, 5, "abc", r"train.csv:3: pixel5 must be a whole number. Received: 'abc'"),
        (2, 0, "25", r"train.csv:2: label must be in 0..24. Received: 25"),
        (4, 784, "256", r"train.csv:4: pixel784 must be in 0..255. Received: 256"),
        (3, 7, "1.5", r"train.csv:3: pixel7 must be a whole number. Received: 1.5"),
        (2, 9, "", r"train.csv:2: pixel9 must be a whole number. Received: \(empty\)"),
    ],
)
def test_bad_values_name_file_line_and_value(
    tmp_path: Path, line: int, column: int, value: str, message: str
) -> None:
    path = write_csv(tmp_path / "train.csv", [1, 2, 3])
    _edit(path, line, column, value)
    with pytest.raises(UserError, match=message):
        read_sign_mnist(path)


def test_bad_files(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="not found"):
        read_sign_mnist(tmp_path / "missing.csv")
    wrong = write_csv(tmp_path / "wrong.csv", [1], header=["label"] + [f"px{i}" for i in range(1, 785)])
    with pytest.raises(UserError, match=r"wrong.csv:1: header column 2 should be 'pixel1'. Received: 'px1'"):
        read_sign_mnist(wrong)
    extra = write_csv(tmp_path / "extra.csv", [1, 2])
    extra.write_text(extra.read_text() + "3," + ",".join(["0"] * 785) + "\n")
    with pytest.raises(UserError, match=r"extra.csv: .*line 4"):
        read_sign_mnist(extra)
    (tmp_path / "empty.csv").write_text("")
    with pytest.raises(UserError, match="empty"):
        read_sign_mnist(tmp_path / "empty.csv")
    path = write_csv(tmp_path / "ok.csv", [1, 2])
    with pytest.raises(UserError, match="subset must be 'train' or 'val'"):
        load_sign_mnist(path, validation_fraction=0.1)


def test_open_data_on_csvs(tmp_path: Path) -> None:
    train = write_csv(tmp_path / "sign_mnist_train.csv", [i % 24 for i in range(20)])
    test = write_csv(tmp_path / "sign_mnist_test.csv", [1, 2, 3], seed=1)
    source = open_data(train, val=test)
    assert source.store is None and source.splits == ["train", "val", "test"]
    assert source.info.counts == {"train": 18, "val": 2, "test": 3} and source.info.single_label
    x, y = next(iter(source.dataset("test", 8)))
    assert x.shape == (3, 28, 28, 1) and y.numpy().argmax(1).tolist() == [1, 2, 3]
    with pytest.raises(UserError, match="--val CSV not found"):
        open_data(train, val=tmp_path / "nope.csv")
