"""Finding a YOLO dataset's images, label files and class names, and parsing label files.

Three layouts are understood:

- Ultralytics: a ``data.yaml`` with ``path``, ``train``, ``val`` and optional ``test`` (each a folder, a list of
  folders, or a ``.txt`` listing image paths) and ``names`` (a list or an ``{id: name}`` mapping).
- Roboflow and Kaggle exports: ``data.yaml`` beside ``train/ valid/ test/``, with paths such as
  ``../train/images`` that are resolved against the yaml's folder and, when wrong, retried without the
  leading ``../`` (as Ultralytics does).
- A plain folder with ``images/``, ``labels/`` and ``classes.txt`` (``images/train`` etc. become splits).

A label file sits where the image path has its last ``images`` segment replaced by ``labels`` and its
extension by ``.txt``; :mod:`yolol_tf.data.labels` parses it. Problems with the data are collected as
``Problem`` records rather than raised, so a dataset converts what is sound.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from yolol_tf.config import read_yaml
from yolol_tf.data.labels import PROBLEM_KINDS, Box, Problem, parse_labels
from yolol_tf.data.names import check_names, yaml_name_lines
from yolol_tf.errors import UserError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp")
SPLITS = ("train", "val", "test")
# Keys a data.yaml may use for each split; Roboflow writes "valid".
_SPLIT_KEYS = {"train": ("train",), "val": ("val", "valid", "validation"), "test": ("test",)}


@dataclass(frozen=True)
class ImageItem:
    """An image of the dataset and where its label file would be.

    Attributes:
        image: absolute path of the image.
        label: absolute path of its label file (which may not exist: no objects).
        rel: the image path relative to the dataset root, with ``/`` separators.
    """

    image: str
    label: str
    rel: str


@dataclass(frozen=True)
class YoloDataset:
    """A YOLO dataset found on disk.

    Attributes:
        root: the dataset root (index.csv paths are relative to it).
        source: the data.yaml or folder the user named.
        names: class names by id.
        splits: images per split ("train", "val", "test"), sorted, splits without images left out.
        problems: problems found while listing (missing images, label files without an image).
    """

    root: Path
    source: Path
    names: list[str]
    splits: dict[str, list[ImageItem]]
    problems: list[Problem] = field(default_factory=list)


def is_image(path: str | os.PathLike) -> bool:
    """Whether ``path`` has one of the image extensions, in any letter case."""
    return os.fspath(path).lower().endswith(IMAGE_SUFFIXES)


def label_path(image: str) -> str:
    """The label file of ``image``: last ``images`` segment replaced by ``labels``, extension ``.txt``."""
    sa, sb = f"{os.sep}images{os.sep}", f"{os.sep}labels{os.sep}"
    return os.path.splitext(sb.join(image.rsplit(sa, 1)))[0] + ".txt"


def find_dataset(data: str | os.PathLike) -> YoloDataset:
    """Finds the layout of a YOLO dataset and lists its images.

    Args:
        data: a data.yaml, or a dataset folder (holding a data.yaml, or images/, labels/, classes.txt).

    Raises:
        UserError: when the dataset or one of the folders its yaml names does not exist, or its class
            names are missing or malformed.
    """
    path = Path(data).expanduser().absolute()
    if not path.exists():
        raise UserError(f"Dataset not found: {path}")
    if path.is_file():
        if path.suffix.lower() not in (".yaml", ".yml"):
            raise UserError(f"Expected a data.yaml or a dataset folder. Received: {path}")
        return _from_yaml(path)
    for name in ("data.yaml", "data.yml", "dataset.yaml"):
        if (path / name).is_file():
            return _from_yaml(path / name)
    yamls = sorted(p for p in path.iterdir() if p.suffix.lower() in (".yaml", ".yml") and p.is_file())
    if len(yamls) == 1 and not (path / "classes.txt").is_file():
        return _from_yaml(yamls[0])
    return _from_folder(path)


def _parse_names(names: Any, nc: Any, source: Path) -> list[str]:
    """Class names from a yaml's ``names`` (list or {id: name}) and ``nc``."""
    if isinstance(names, dict):
        try:
            by_id = {int(k): v for k, v in names.items()}
        except (TypeError, ValueError):
            raise UserError(f"{source}: 'names' keys must be class ids. Received: {list(names)}") from None
        if sorted(by_id) != list(range(len(by_id))):
            raise UserError(f"{source}: 'names' ids must be 0..{len(by_id) - 1}. Received: {sorted(by_id)}")
        result = [by_id[i] for i in range(len(by_id))]
    elif isinstance(names, (list, tuple)):
        result = list(names)
    elif names is None and isinstance(nc, int) and nc > 0:
        result = [str(i) for i in range(nc)]
    else:
        raise UserError(f"{source}: 'names' must be a list or an {{id: name}} mapping. Received: {names!r}")
    if not result:
        raise UserError(f"{source}: 'names' is empty")
    if nc is not None and nc != len(result):
        raise UserError(f"{source}: 'nc' does not match the {len(result)} names. Received: nc={nc!r}")
    return check_names(result, source, yaml_name_lines(source, len(result)))


def _resolve(entry: str, root: Path, yaml_dir: Path) -> Path | None:
    """An existing path for a yaml entry, tolerating the wrong ``../`` of Roboflow exports."""
    p = Path(entry).expanduser()
    if p.is_absolute():
        return p if p.exists() else None
    candidates = [root / p, yaml_dir / p]
    if entry.startswith("../"):
        candidates += [root / entry[3:], yaml_dir / entry[3:]]
    return next((Path(os.path.normpath(c)) for c in candidates if c.exists()), None)


def _from_yaml(yaml_path: Path) -> YoloDataset:
    """An Ultralytics or Roboflow dataset described by ``yaml_path``."""
    cfg = read_yaml(yaml_path)
    names = _parse_names(cfg.get("names"), cfg.get("nc"), yaml_path)
    yaml_dir = yaml_path.parent
    root = yaml_dir
    if cfg.get("path"):
        given = Path(str(cfg["path"])).expanduser()
        given = given if given.is_absolute() else yaml_dir / given
        # Exports often carry the exporting machine's absolute path: fall back to the yaml's folder.
        if given.is_dir():
            root = Path(os.path.normpath(given))
    if not any(cfg.get(k) for keys in _SPLIT_KEYS.values() for k in keys):
        raise UserError(
            f"{yaml_path}: no split is named in it. Expected 'train', 'val' and optionally 'test'"
        )
    splits: dict[str, list[ImageItem]] = {}
    problems: list[Problem] = []
    for split, keys in _SPLIT_KEYS.items():
        key = next((k for k in keys if cfg.get(k)), None)
        if key is None:
            continue
        entries = cfg[key] if isinstance(cfg[key], list) else [cfg[key]]
        images: list[str] = []
        for entry in entries:
            found = _resolve(str(entry), root, yaml_dir)
            if found is None:
                raise UserError(f"{yaml_path}: '{key}' not found (looked in {root}). Received: {entry!r}")
            images += _list_images(found, root, problems)
        splits[split] = _items(images, root)
    return _finish(root, yaml_path, names, splits, problems)


def _from_folder(root: Path) -> YoloDataset:
    """A plain folder with images/, labels/ and classes.txt (images/<split>/ or train/images/ for splits)."""
    classes = root / "classes.txt"
    if not classes.is_file():
        raise UserError(
            f"{root}: no data.yaml and no classes.txt. Expected one of them in the dataset folder"
        )
    try:
        # Split at newlines only: splitlines() also breaks at form feeds and other controls within a line.
        names = [n.strip() for n in classes.read_text(encoding="utf-8-sig").split("\n")]
    except UnicodeDecodeError as e:
        raise UserError(f"{classes}: not UTF-8 text ({e.reason} at byte {e.start})") from None
    while names and not names[-1]:
        names.pop()  # trailing blank lines name no class; a blank line before a name would shift its id
    if not names:
        raise UserError(f"{classes}: no class names (expected one name a line)")
    names = check_names(names, classes, range(1, len(names) + 1))
    problems: list[Problem] = []
    splits: dict[str, list[ImageItem]] = {}
    for split, keys in _SPLIT_KEYS.items():
        for key in keys:
            for folder in (root / "images" / key, root / key / "images"):
                if folder.is_dir():
                    splits.setdefault(split, [])
                    splits[split] += _items(_list_images(folder, root, problems), root)
    if not splits:
        if not (root / "images").is_dir():
            raise UserError(f"{root}: no images/ folder and no data.yaml")
        splits["train"] = _items(_list_images(root / "images", root, problems), root)
    return _finish(root, root, names, splits, problems)


def _finish(
    root: Path, source: Path, names: list[str], splits: dict[str, list[ImageItem]], problems: list[Problem]
) -> YoloDataset:
    if not any(splits.values()):
        raise UserError(f"{source}: no images found (extensions: {', '.join(IMAGE_SUFFIXES)})")
    every = [i for items in splits.values() for i in items]
    problems += _orphan_labels(every)
    shared = _shared_labels(every)
    problems += shared.values()
    splits = {
        s: sorted({i for i in items if i.label not in shared}, key=lambda i: i.rel)
        for s, items in splits.items()
    }
    splits = {s: items for s, items in splits.items() if items}
    if not splits:
        raise UserError(f"{source}: no image left to convert. {next(iter(shared.values()))}")
    # Splits that read the same files (a val that is the train) find the same problems: report each once.
    problems = list(dict.fromkeys(problems))
    return YoloDataset(root, source, names, {s: splits[s] for s in SPLITS if s in splits}, problems)


def _list_images(path: Path, root: Path, problems: list[Problem]) -> list[str]:
    """Image paths in a folder (recursively) or listed in a .txt file, as absolute strings."""
    if path.is_dir():
        return sorted(
            os.path.join(d, f)
            for d, _, files in os.walk(path, followlinks=True)
            for f in files
            if is_image(f)
        )
    if not path.suffix.lower() == ".txt":
        return [str(path)] if is_image(path) else []
    images = []
    for n, raw in enumerate(path.read_bytes().split(b"\n"), start=1):
        try:
            line = raw.decode("utf-8").strip().lstrip("\ufeff")
        except UnicodeDecodeError:
            problems.append(Problem("encoding", str(path), n, repr(raw)[2:-1], "not UTF-8 text"))
            continue
        if not line:
            continue
        p = Path(line).expanduser()
        found = p if p.is_absolute() else next((c for c in (path.parent / p, root / p) if c.exists()), None)
        if found is None or not found.is_file():
            problems.append(Problem("image", str(path), n, line, "image listed but not found"))
        else:
            images.append(os.path.normpath(found))
    return images


def _items(images: list[str], root: Path) -> list[ImageItem]:
    return [ImageItem(i, label_path(i), Path(os.path.relpath(i, root)).as_posix()) for i in images]


def _shared_labels(items: list[ImageItem]) -> dict[str, Problem]:
    """A problem for each label file that several images would read (``a.jpg`` and ``a.png``), by label path.

    Whose objects the file describes cannot be known, so none of those images is converted.
    """
    images: dict[str, dict[str, str]] = {}
    for i in items:
        images.setdefault(i.label, {})[i.image] = i.rel
    problems = {}
    for label, by_path in images.items():
        if len(by_path) > 1 and os.path.isfile(label):
            rels = sorted(by_path.values())
            message = f"label file shared by {len(rels)} images, so none of them is converted"
            problems[label] = Problem("shared_label", label, None, ", ".join(rels), message)
    return problems


def _orphan_labels(items: list[ImageItem]) -> list[Problem]:
    """Label files in the dataset's label folders that belong to no image."""
    expected = {i.label for i in items}
    folders = sorted({os.path.dirname(i.label) for i in items})
    seen = set()
    problems = []
    for folder in folders:
        if not os.path.isdir(folder):
            continue
        for f in sorted(os.listdir(folder)):
            path = os.path.join(folder, f)
            if f.endswith(".txt") and f != "classes.txt" and path not in expected and path not in seen:
                seen.add(path)
                problems.append(Problem("orphan_label", path, None, f, "label file without an image"))
    return problems


__all__ = [
    "PROBLEM_KINDS",
    "Box",
    "ImageItem",
    "Problem",
    "YoloDataset",
    "find_dataset",
    "label_path",
    "parse_labels",
]
