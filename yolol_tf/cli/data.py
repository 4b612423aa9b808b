"""CLI commands: prepare, demo-data (registered on the shared Typer app)."""

from __future__ import annotations

import enum
import sys
from pathlib import Path
from typing import Annotated

import typer

from yolol_tf.cli.app import app


class Mode(str, enum.Enum):
    """What one sample is: a crop around each box, or the whole image."""

    crop = "crop"
    image = "image"


@app.command("prepare")
def prepare_command(
    data: Annotated[
        Path, typer.Argument(help="A data.yaml, or a dataset folder (images/ labels/ classes.txt).")
    ],
    out: Annotated[
        Path | None, typer.Option("--out", "-o", help="Store folder to write. Default: a cache folder.")
    ] = None,
    size: Annotated[
        int | None, typer.Option(help="Side of the square samples, in pixels [default: 64].")
    ] = None,
    context: Annotated[
        float, typer.Option(help="Grow each box side by this fraction of its width/height.")
    ] = 0.0,
    min_visible: Annotated[
        float, typer.Option(help="Another box's class counts if this fraction of its area is in the crop.")
    ] = 0.5,
    min_box: Annotated[float, typer.Option(help="Skip boxes narrower or lower than this many pixels.")] = 2.0,
    mode: Annotated[
        Mode, typer.Option(help="crop: one sample per box; image: one per whole image.")
    ] = Mode.crop,
    strict: Annotated[bool, typer.Option("--strict", help="Fail on the first data problem.")] = False,
    force: Annotated[
        bool, typer.Option("--force", help="Convert again even if the store is whole and up to date.")
    ] = False,
    workers: Annotated[
        int | None, typer.Option(help="Decoding processes. Default: one per CPU core.")
    ] = None,
) -> None:
    """Convert a YOLO dataset into a crop store that training reads at full speed.

    Each box becomes a letterboxed crop labelled with its class and the classes of the boxes mostly
    inside it. Running it again on an unchanged dataset reuses the store, once its files are checked
    against the sizes and checksums recorded when it was written (a damaged store is converted again).
    Problems in the data are listed (file, line, value) and skipped; --strict stops at the first.

    Example: yolol-tf prepare data.yaml --out store --size 64
    """
    from yolol_tf.data.info import describe_store
    from yolol_tf.data.store import prepare

    store = prepare(
        data, out, size=size, context=context, min_visible=min_visible, min_box=min_box, mode=mode.value,
        strict=strict, force=force, workers=workers,
    )  # fmt: skip
    print(describe_store(store), file=sys.stderr)


@app.command("demo-data")
def demo_data_command(
    out: Annotated[Path, typer.Argument(help="Folder to write the dataset into.")],
    seed: Annotated[int, typer.Option(help="Another seed draws another dataset of the same size.")] = 0,
) -> None:
    """Write the embedded demo dataset: drawn fruit and vegetables in YOLO format (10 classes).

    560 images (train 400, val 80, test 80) in the Ultralytics layout, with a data.yaml. Commands
    given no --data use the same dataset from a cache folder.

    Example: yolol-tf demo-data demo && yolol-tf prepare demo/data.yaml --out store
    """
    from yolol_tf.data.demo import CLASSES, SPLIT_SIZES, demo_data

    path = demo_data(out, seed=seed)
    sizes = ", ".join(f"{split} {n}" for split, n in SPLIT_SIZES.items())
    print(f"Wrote {path} ({sizes} images; {len(CLASSES)} classes: {', '.join(CLASSES)})", file=sys.stderr)
