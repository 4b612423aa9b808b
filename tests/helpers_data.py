"""Tiny YOLO datasets written into a test's tmp_path, in each layout users have."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import yaml

NAMES = ["apple", "banana", "cherry"]
COLOURS = [(40, 40, 220), (40, 220, 220), (200, 40, 120)]  # BGR, one per class

# split -> image stem -> (width, height, [(class, x1, y1, x2, y2) in pixels])
IMAGES = {
    "train": {
        "a": (64, 48, [(0, 4, 4, 28, 28), (1, 20, 10, 44, 34)]),
        "b": (48, 64, [(2, 8, 8, 40, 40)]),
        "c": (64, 48, [(1, 30, 6, 60, 40), (0, 2, 20, 14, 44), (2, 34, 8, 58, 30)]),
    },
    "val": {"d": (64, 48, [(0, 10, 10, 30, 30)]), "e": (64, 48, [])},
    "test": {"f": (40, 40, [(2, 5, 5, 35, 35), (1, 0, 0, 12, 12)])},
}
LAYOUTS = ("ultralytics", "ultralytics_txt", "roboflow", "folder")


def yolo_line(cls: int, box: tuple[float, float, float, float], width: int, height: int) -> str:
    """A label line ``class cx cy w h`` for a pixel box."""
    x1, y1, x2, y2 = box
    return f"{cls} {(x1 + x2) / 2 / width:.6f} {(y1 + y2) / 2 / height:.6f} {(x2 - x1) / width:.6f} {(y2 - y1) / height:.6f}"


def draw_image(path: Path, width: int, height: int, boxes: list[tuple]) -> None:
    """Writes a grey image with each box drawn as a filled rectangle of its class colour."""
    image = np.full((height, width, 3), 90, dtype=np.uint8)
    for cls, x1, y1, x2, y2 in boxes:
        cv2.rectangle(image, (x1, y1), (x2 - 1, y2 - 1), COLOURS[cls], thickness=-1)
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), image)


def write_split(images_dir: Path, labels_dir: Path, images: dict, ext: str = ".jpg") -> list[Path]:
    """Writes images and their label files; returns the image paths."""
    paths = []
    for stem, (width, height, boxes) in images.items():
        path = images_dir / f"{stem}{ext}"
        draw_image(path, width, height, boxes)
        labels_dir.mkdir(parents=True, exist_ok=True)
        lines = [yolo_line(c, (x1, y1, x2, y2), width, height) for c, x1, y1, x2, y2 in boxes]
        (labels_dir / f"{stem}.txt").write_text("".join(line + "\n" for line in lines))
        paths.append(path)
    return paths


def write_dataset(root: Path, layout: str = "ultralytics", images: dict | None = None) -> Path:
    """Writes the tiny dataset ``IMAGES`` in ``layout`` under ``root``; returns what to pass to prepare.

    Layouts: "ultralytics" (data.yaml with folders, names as a mapping), "ultralytics_txt" (data.yaml
    with .txt image lists, names as a list), "roboflow" (data.yaml beside train/ valid/ test/ with the
    export's ``../`` paths) and "folder" (images/, labels/, classes.txt; one split, PNG images).
    """
    images = IMAGES if images is None else images
    root.mkdir(parents=True, exist_ok=True)
    if layout == "ultralytics":
        for split, imgs in images.items():
            write_split(root / "images" / split, root / "labels" / split, imgs)
        cfg = {"path": ".", **{s: f"images/{s}" for s in images}, "names": dict(enumerate(NAMES))}
    elif layout == "ultralytics_txt":
        cfg = {"path": str(root), "names": NAMES}
        for split, imgs in images.items():
            paths = write_split(root / "images" / split, root / "labels" / split, imgs)
            (root / f"{split}.txt").write_text("".join(f"./images/{split}/{p.name}\n" for p in paths))
            cfg[split] = f"{split}.txt"
    elif layout == "roboflow":
        cfg = {"nc": len(NAMES), "names": NAMES}
        for split, imgs in images.items():
            folder = "valid" if split == "val" else split
            write_split(root / folder / "images", root / folder / "labels", imgs)
            cfg[split] = f"../{folder}/images"
    elif layout == "folder":
        merged = {f"{s}_{k}": v for s, imgs in images.items() for k, v in imgs.items()}
        write_split(root / "images", root / "labels", merged, ext=".png")
        (root / "classes.txt").write_text("\n".join(NAMES) + "\n")
        return root
    else:
        raise ValueError(layout)
    (root / "data.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    return root / "data.yaml"
