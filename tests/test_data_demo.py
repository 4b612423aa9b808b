"""The embedded demo dataset: deterministic, all classes present, boxes that match the drawn objects."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import yaml

from yolol_tf.data import demo

SMALL = {"train": 6, "val": 3, "test": 3}


def _labels(path: Path) -> list[tuple[int, float, float, float, float]]:
    rows = []
    for line in path.read_text(encoding="utf-8").splitlines():
        c, *v = line.split()
        rows.append((int(c), *map(float, v)))
    return rows


@pytest.fixture(scope="module")
def full_demo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return demo.demo_data(tmp_path_factory.mktemp("demo"))


def test_full_dataset_has_every_class_in_every_split(full_demo: Path) -> None:
    meta = yaml.safe_load(full_demo.read_text())
    assert len(meta["names"]) >= 8
    root = Path(meta["path"])
    assert root == full_demo.parent
    for split, count in demo.SPLIT_SIZES.items():
        images = sorted((root / meta[split]).glob("*.jpg"))
        assert len(images) == count
        classes, per_image, overlapping = set(), [], 0
        for image in images:
            rows = _labels(root / "labels" / split / f"{image.stem}.txt")
            classes |= {r[0] for r in rows}
            per_image.append(len(rows))
            boxes = [(cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2) for _, cx, cy, w, h in rows]
            overlapping += any(
                min(a[2], b[2]) > max(a[0], b[0]) and min(a[3], b[3]) > max(a[1], b[1])
                for i, a in enumerate(boxes) for b in boxes[i + 1 :]
            )  # fmt: skip
            for x1, y1, x2, y2 in boxes:
                assert -1e-5 <= x1 < x2 <= 1 + 1e-5 and -1e-5 <= y1 < y2 <= 1 + 1e-5, (image, x1, y1, x2, y2)
        assert classes == set(range(len(demo.CLASSES))), split
        assert 2 <= min(per_image) and max(per_image) <= 6
        assert overlapping >= count // 10, f"{split}: too few images with overlapping objects"


def test_same_bytes_twice_and_a_new_seed_differs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(demo, "SPLIT_SIZES", SMALL)
    a, b, c = (demo.demo_data(tmp_path / n, seed=s).parent for n, s in (("a", 0), ("b", 0), ("c", 1)))
    files = sorted(p.relative_to(a) for p in a.rglob("*") if p.is_file() and p.name != "data.yaml")
    assert len(files) == 2 * sum(SMALL.values())
    for rel in files:
        assert (a / rel).read_bytes() == (b / rel).read_bytes(), rel
    assert any((a / rel).read_bytes() != (c / rel).read_bytes() for rel in files if rel.suffix == ".jpg")


def test_boxes_are_the_drawn_objects(tmp_path: Path) -> None:
    for index in range(8):
        image, background, objects = demo.render_sample(0, "train", index)
        h, w = image.shape[:2]
        assert 2 <= len(objects) <= 6
        shown = np.full((h, w), -1)
        for k, obj in enumerate(objects):
            shown[obj.mask] = k
        for k, obj in enumerate(objects):
            ys, xs = np.nonzero(obj.mask)
            assert obj.box == (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1)
            visible = shown == k
            # Every object stays mostly visible, and where it shows, the picture is not the table.
            assert visible.sum() >= demo.MIN_VISIBLE * obj.mask.sum() - 1
            diff = np.abs(image[visible].astype(int) - background[visible].astype(int)).mean()
            assert diff > 15, (index, k, demo.CLASSES[obj.class_id], diff)


def test_label_files_match_rendered_boxes(full_demo: Path) -> None:
    root = full_demo.parent
    for index in (0, 5):
        image, _, objects = demo.render_sample(0, "val", index)
        h, w = image.shape[:2]
        rows = _labels(root / "labels" / "val" / f"val_{index:04d}.txt")
        assert [r[0] for r in rows] == [o.class_id for o in objects]
        for (_, cx, cy, bw, bh), obj in zip(rows, objects, strict=True):
            got = ((cx - bw / 2) * w, (cy - bh / 2) * h, (cx + bw / 2) * w, (cy + bh / 2) * h)
            assert np.allclose(got, obj.box, atol=0.01)


def test_demo_data_path_generates_once_into_the_cache(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("YOLOL_TF_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(demo, "SPLIT_SIZES", SMALL)
    path = demo.demo_data_path()
    assert path == tmp_path / "cache" / demo.DEMO_VERSION / "data.yaml"
    assert yaml.safe_load(path.read_text())["path"] == str(path.parent)
    assert len(list((path.parent / "images" / "train").glob("*.jpg"))) == SMALL["train"]
    stamp = path.stat().st_mtime_ns
    calls = []
    monkeypatch.setattr(demo, "_write_dataset", lambda *a: calls.append(a))
    assert demo.demo_data_path() == path
    assert calls == [] and path.stat().st_mtime_ns == stamp
    assert [p.name for p in (tmp_path / "cache").iterdir()] == [demo.DEMO_VERSION]  # no temp folders left


def test_demo_data_path_survives_a_race(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cache = tmp_path / "cache"
    monkeypatch.setenv("YOLOL_TF_CACHE", str(cache))

    def racing_write(root: Path, seed: int, yaml_root: Path) -> None:
        # Another process finishes first while this one is still writing.
        (root / "data.yaml").write_text("mine")
        (cache / demo.DEMO_VERSION).mkdir()
        (cache / demo.DEMO_VERSION / "data.yaml").write_text("theirs")

    monkeypatch.setattr(demo, "_write_dataset", racing_write)
    path = demo.demo_data_path()
    assert path.read_text() == "theirs"
    assert [p.name for p in cache.iterdir()] == [demo.DEMO_VERSION]
