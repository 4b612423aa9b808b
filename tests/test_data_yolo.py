"""Reading YOLO datasets: layouts, label parsing, bad input, image reading and letterboxing."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml
from PIL import Image, ImageOps

from tests.support.data import IMAGES, LAYOUTS, YOLO_NAMES
from yolol_tf.data.images import letterbox, letterbox_geometry, read_image
from yolol_tf.data.yolo import find_dataset, label_path, parse_labels
from yolol_tf.errors import UserError


@pytest.mark.parametrize("layout", LAYOUTS)
def test_each_layout_finds_every_image_its_label_and_the_names(tmp_path, layout, make_yolo_dataset):
    ds = find_dataset(make_yolo_dataset(tmp_path / "ds", layout))
    assert ds.names == YOLO_NAMES
    assert ds.problems == []
    found = {s: sorted(Path(i.rel).stem for i in items) for s, items in ds.splits.items()}
    if layout == "folder":
        assert found == {"train": sorted(f"{s}_{k}" for s, imgs in IMAGES.items() for k in imgs)}
    else:
        assert found == {s: sorted(imgs) for s, imgs in IMAGES.items()}
    for item in (i for items in ds.splits.values() for i in items):
        assert Path(item.image).is_file() and Path(item.label).is_file()
        assert (ds.root / item.rel).resolve() == Path(item.image).resolve()


def test_label_path_replaces_the_last_images_segment(tmp_path):
    image = str(tmp_path / "images" / "x" / "images" / "a.b.JPG")
    assert label_path(image) == str(tmp_path / "images" / "x" / "labels" / "a.b.txt")


def test_wrong_yaml_path_and_roboflow_dotdot_are_tolerated(tmp_path, make_yolo_dataset):
    data = make_yolo_dataset(tmp_path / "ds", "roboflow")
    cfg = yaml.safe_load(data.read_text())
    cfg["path"] = "/content/datasets/not-here"  # the exporting machine's path
    data.write_text(yaml.safe_dump(cfg))
    ds = find_dataset(data)
    assert ds.root == tmp_path / "ds"
    assert [i.rel for i in ds.splits["val"]] == ["valid/images/d.jpg", "valid/images/e.jpg"]


def test_a_folder_with_one_yaml_of_another_name_uses_it(tmp_path, make_yolo_dataset):
    data = make_yolo_dataset(tmp_path / "ds", "roboflow")
    data.rename(data.with_name("fruit.yaml"))
    assert find_dataset(tmp_path / "ds").source == tmp_path / "ds" / "fruit.yaml"


def test_upper_case_extensions_are_images(tmp_path, make_yolo_dataset):
    data = make_yolo_dataset(tmp_path / "ds", "ultralytics")
    a = tmp_path / "ds/images/train/a.jpg"
    a.rename(a.with_name("A.JPEG"))
    (tmp_path / "ds/labels/train/a.txt").rename(tmp_path / "ds/labels/train/A.txt")
    rels = [i.rel for i in find_dataset(data).splits["train"]]
    assert "images/train/A.JPEG" in rels


@pytest.mark.parametrize(
    "names, message",
    [({"names": ["a", "b"], "nc": 3}, "nc"), ({"names": {0: "a", 2: "b"}}, "0..1"), ({}, "names")],
)
def test_bad_names_say_what_is_wrong(tmp_path, names, message, make_yolo_dataset):
    data = make_yolo_dataset(tmp_path / "ds", "ultralytics")
    cfg = {k: v for k, v in yaml.safe_load(data.read_text()).items() if k not in ("names", "nc")}
    data.write_text(yaml.safe_dump({**cfg, **names}))
    with pytest.raises(UserError, match=message) as e:
        find_dataset(data)
    assert str(data) in e.value.message and e.value.exit_code == 2


def test_missing_dataset_and_missing_split_folder_are_user_errors(tmp_path, make_yolo_dataset):
    with pytest.raises(UserError, match="not found"):
        find_dataset(tmp_path / "nope.yaml")
    data = make_yolo_dataset(tmp_path / "ds", "ultralytics")
    cfg = yaml.safe_load(data.read_text())
    data.write_text(yaml.safe_dump({**cfg, "val": "images/missing"}))
    with pytest.raises(UserError, match="images/missing"):
        find_dataset(data)
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="classes.txt"):
        find_dataset(tmp_path / "empty")


def _labels(tmp_path: Path, text: str | bytes) -> Path:
    path = tmp_path / "l.txt"
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    return path


def test_box_and_segmentation_lines(tmp_path):
    path = _labels(
        tmp_path, "1 0.5 0.5 0.2 0.4\n\n2 0.1 0.2 0.3 0.1 0.2 0.6 0.0004 0.5\n0 0.9995 0.5 0.002 0.2\n"
    )
    boxes, problems = parse_labels(str(path), 3)
    assert problems == []
    assert [(b.line, b.cls) for b in boxes] == [(0, 1), (2, 2), (3, 0)]
    assert (boxes[0].x1, boxes[0].y1, boxes[0].x2, boxes[0].y2) == pytest.approx((0.4, 0.3, 0.6, 0.7))
    assert (boxes[1].x1, boxes[1].y1, boxes[1].x2, boxes[1].y2) == pytest.approx((0.0004, 0.1, 0.3, 0.6))
    assert boxes[2].x2 == 1.0  # 1.0005 is within the tolerance: clipped


def test_boxes_sticking_out_of_the_image_are_clipped_when_their_values_are_in_0_1(tmp_path):
    # Ultralytics' rule: cx, cy, w, h (or each polygon coordinate) in [0, 1]; the corners may stick out.
    path = _labels(tmp_path, "0 0.95 0.95 0.3 0.3\n1 0 0.5 0.4 1\n2 0.9 0.9 1.0 0.95 1.0005 1.0\n")
    boxes, problems = parse_labels(str(path), 3)
    assert problems == []
    assert [c for b in boxes for c in (b.x1, b.y1, b.x2, b.y2)] == pytest.approx(
        [0.8, 0.8, 1.0, 1.0] + [0.0, 0.0, 0.2, 1.0] + [0.9, 0.9, 1.0, 1.0]
    )


@pytest.mark.parametrize(
    "line, named",
    [
        ("0 0.5 1.3 0.2 0.2", "cy=1.3"),
        ("0 0.5 0.5 0.2 -0.5", "h=-0.5"),
        ("0 0.1 0.2 0.3 0.1 0.2 1.01", "y3=1.01"),
    ],
)
def test_a_value_outside_0_1_is_named_in_the_problem(tmp_path, line, named):
    path = _labels(tmp_path, line + "\n")
    (problem,) = parse_labels(str(path), 3)[1]
    assert problem.kind == "bounds" and f"{path}:1: {named} is outside [0, 1]" in str(problem)


def test_empty_or_missing_label_file_means_no_objects(tmp_path):
    assert parse_labels(str(_labels(tmp_path, "")), 3) == ([], [])
    assert parse_labels(str(tmp_path / "missing.txt"), 3) == ([], [])


@pytest.mark.parametrize(
    "line, kind, value",
    [
        ("3 0.5 0.5 0.2 0.2", "class", "3"),
        ("-1 0.5 0.5 0.2 0.2", "class", "-1"),
        ("0 0.5 0.5 0.2", "fields", "0 0.5 0.5 0.2"),
        ("0 0.5 0.5 0.2 0.2 0.9", "fields", "0 0.5 0.5 0.2 0.2 0.9"),
        ("0 0.5 abc 0.2 0.2", "number", "abc"),
        ("0 0.5 nan 0.2 0.2", "number", "nan"),
        ("1.5 0.5 0.5 0.2 0.2", "number", "1.5"),
        ("0 1.05 0.5 0.2 0.2", "bounds", "0 1.05 0.5 0.2 0.2"),
        ("0 0.5 0.5 1.2 0.2", "bounds", "0 0.5 0.5 1.2 0.2"),
        ("0 0.5 0.5 -0.2 0.2", "bounds", "0 0.5 0.5 -0.2 0.2"),
        ("0 0.1 0.2 1.3 0.2 0.5 0.5", "bounds", "0 0.1 0.2 1.3 0.2 0.5 0.5"),
        ("0 0.5 0.5 0 0.2", "zero_size", "0 0.5 0.5 0 0.2"),
        ("0 0.1 0.2 0.1 0.5 0.1 0.9", "zero_size", "0 0.1 0.2 0.1 0.5 0.1 0.9"),
        (b"0 0.5 0.5 0.2 0.2 \xff\xfe", "encoding", "\\xff"),
    ],
)
def test_each_bad_line_is_reported_once_with_file_line_and_value(tmp_path, line, kind, value):
    good = "1 0.5 0.5 0.2 0.2\n"
    text = good.encode() + (line if isinstance(line, bytes) else line.encode()) + b"\n" + good.encode()
    path = _labels(tmp_path, text)
    boxes, problems = parse_labels(str(path), 3)
    assert [b.line for b in boxes] == [0, 2]  # the sound lines are kept
    assert len(problems) == 1
    p = problems[0]
    assert (p.kind, p.file, p.line) == (kind, str(path), 2)
    assert value in p.value
    assert f"{path}:2" in str(p) and value in str(p)


def test_orphan_labels_and_listed_missing_images_are_reported(tmp_path, make_yolo_dataset):
    data = make_yolo_dataset(tmp_path / "ds", "ultralytics_txt")
    (tmp_path / "ds/labels/train/ghost.txt").write_text("0 0.5 0.5 0.1 0.1\n")
    with open(tmp_path / "ds/train.txt", "a") as f:
        f.write("./images/train/gone.jpg\n")
    ds = find_dataset(data)
    kinds = {(p.kind, Path(p.file).name, p.line) for p in ds.problems}
    assert kinds == {("orphan_label", "ghost.txt", None), ("image", "train.txt", 4)}
    assert len(ds.splits["train"]) == 3


def _exif_image(path: Path, orientation: int) -> np.ndarray:
    """Writes a wide image with a white top-left corner and EXIF orientation; returns what it shows."""
    pixels = np.zeros((20, 40, 3), np.uint8)
    pixels[:5, :8] = 255
    pixels[:, 30:] = (255, 0, 0)
    exif = Image.Exif()
    exif[0x0112] = orientation
    Image.fromarray(pixels).save(path, exif=exif.tobytes(), quality=95)
    return np.asarray(ImageOps.exif_transpose(Image.open(path)).convert("RGB"))


@pytest.mark.parametrize("suffix", [".jpg", ".png", ".webp"])
@pytest.mark.parametrize("orientation", [3, 6, 8])
def test_read_image_applies_exif_orientation_like_pillow(tmp_path, suffix, orientation):
    path = tmp_path / f"o{suffix}"
    expected = _exif_image(path, orientation)
    image = read_image(path)
    assert image.shape == expected.shape and image.dtype == np.uint8
    assert np.abs(image.astype(int) - expected).mean() < 4


def test_read_image_makes_grayscale_and_rgba_rgb(tmp_path):
    Image.fromarray(np.full((6, 8), 200, np.uint8)).save(tmp_path / "g.png")
    rgba = np.zeros((6, 8, 4), np.uint8)
    rgba[..., 0], rgba[..., 3] = 255, 128
    Image.fromarray(rgba).save(tmp_path / "rgba.png")
    gray = read_image(tmp_path / "g.png")
    assert gray.shape == (6, 8, 3) and (gray == 200).all()
    red = read_image(tmp_path / "rgba.png")
    assert red.shape == (6, 8, 3) and (red[..., 0] == 255).all() and (red[..., 1:] == 0).all()


def test_unreadable_or_missing_image_is_a_user_error_naming_the_file(tmp_path):
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"not an image")
    for path in (bad, tmp_path / "missing.png"):
        with pytest.raises(UserError, match=str(path)):
            read_image(path)


def test_letterbox_geometry_keeps_aspect_and_centres():
    g = letterbox_geometry(50, 100, 64)  # height 50, width 100
    assert (g.scale, g.width, g.height, g.left, g.top) == (0.64, 64, 32, 0, 16)
    g = letterbox_geometry(30, 10, 60)
    assert (g.scale, g.width, g.height, g.left, g.top) == (2.0, 20, 60, 20, 0)


def test_letterbox_places_the_image_and_pads_with_114():
    image = np.zeros((50, 100, 3), np.uint8)
    image[:, :50] = (255, 0, 0)
    out = letterbox(image, 64)
    assert out.shape == (64, 64, 3) and out.dtype == np.uint8
    assert (out[:16] == 114).all() and (out[48:] == 114).all()
    assert (out[16:48, :30] == (255, 0, 0)).all() and (out[16:48, 34:] == 0).all()
    same = np.arange(48, dtype=np.uint8).reshape(4, 4, 3)
    assert np.array_equal(letterbox(same, 4), same)
    assert letterbox(cv2.cvtColor(image, cv2.COLOR_RGB2GRAY), 32).shape == (32, 32, 3)


def test_a_label_file_shared_by_two_images_is_a_problem_naming_both(tmp_path, make_yolo_dataset):
    data = make_yolo_dataset(tmp_path / "ds", "ultralytics")
    image = tmp_path / "ds/images/train/a.jpg"
    cv2.imwrite(str(image.with_suffix(".png")), cv2.imread(str(image)))
    ds = find_dataset(data)
    (problem,) = ds.problems
    assert (problem.kind, problem.file) == ("shared_label", str(tmp_path / "ds/labels/train/a.txt"))
    assert problem.value == "images/train/a.jpg, images/train/a.png"
    assert "a.jpg" in str(problem) and "a.png" in str(problem)
    # Whose boxes they are cannot be known: neither image is used, the others are.
    assert [i.rel for i in ds.splits["train"]] == ["images/train/b.jpg", "images/train/c.jpg"]


def test_splits_reading_the_same_files_report_each_listing_problem_once(tmp_path, make_yolo_dataset):
    data = make_yolo_dataset(tmp_path / "ds", "ultralytics_txt")
    with open(tmp_path / "ds/train.txt", "a") as f:
        f.write("./images/train/gone.jpg\n")
    cfg = yaml.safe_load(data.read_text())
    data.write_text(yaml.safe_dump({**cfg, "val": "train.txt"}))  # val is the train, as some exports have it
    ds = find_dataset(data)
    assert [(p.kind, Path(p.file).name, p.line) for p in ds.problems] == [("image", "train.txt", 4)]
    assert ds.splits["val"] == ds.splits["train"]
