"""Which data a run uses and how a YOLO dataset is cut into samples: one dataclass for every stage.

``prepare``, ``open_data``, training (``TrainConfig``) and tuning (``TuneConfig``) share
:class:`DataSettings`; the two configs inherit it, so an experiments YAML keeps its flat keys
(``data: ...``, ``size: 32``) and each setting is declared once.

The image size has one source of truth: the data. ``size: None`` means "the data's own": a YOLO dataset
is prepared at :data:`DEFAULT_SIZE`, a prepared store or a Sign-MNIST CSV keeps the size it has, and an
explicit size that differs from a store's or CSV's is refused (:func:`check_size`). A run records the
size its data had, and everything after training reads the model's input shape.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from yolol_tf.errors import UserError

DEFAULT_SIZE = 64
MODES = ("crop", "image")
MIN_SIZE, MAX_SIZE = 8, 1024


@dataclass(frozen=True)
class DataSettings:
    """The data and the options that decide which samples a model sees.

    Args:
        data: a YOLO data.yaml or folder, a prepared store, or a Sign-MNIST CSV; None = the demo dataset.
        val: only with a CSV: a second Sign-MNIST CSV reported as "test" (never used for model selection).
        size: side of the square samples in pixels; None = the data's own (64 for a YOLO dataset).
        context: grow each box side by this fraction of its width/height before cutting.
        min_visible: another box's class counts when this fraction of its area is inside the crop.
        min_box: boxes narrower or lower than this many pixels are skipped (and counted).
        mode: "crop" (one sample per box) or "image" (one sample per image, labelled with every class).
    """

    data: str | None = None
    val: str | None = None
    size: int | None = None
    context: float = 0.0
    min_visible: float = 0.5
    min_box: float = 2.0
    mode: str = "crop"

    @classmethod
    def of(cls, settings: Any = None, **overrides: Any) -> DataSettings:
        """The data settings of ``settings`` (any ``DataSettings``, e.g. a ``TrainConfig``), or the defaults,
        with ``overrides`` (None values ignored) applied."""
        names = [f.name for f in dataclasses.fields(cls)]
        values = {n: getattr(settings, n) for n in names} if settings is not None else {}
        unknown = sorted(set(overrides) - set(names))
        if unknown:
            raise TypeError(f"unknown data setting(s) {', '.join(unknown)}. Known: {', '.join(names)}")
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)

    def crop_options(self) -> dict[str, Any]:
        """The options a conversion depends on (the store's fingerprint), with the size resolved."""
        return {
            "size": DEFAULT_SIZE if self.size is None else self.size,
            "context": self.context,
            "min_visible": self.min_visible,
            "min_box": self.min_box,
            "mode": self.mode,
        }

    def check(self) -> None:
        """Refuses options no conversion can use, naming the option and its value."""
        size = self.size
        if size is not None and (
            isinstance(size, bool) or not isinstance(size, int) or not MIN_SIZE <= size <= MAX_SIZE
        ):
            raise UserError(f"--size must be an integer in {MIN_SIZE}..{MAX_SIZE}. Received: size={size!r}")
        if not self.context >= 0:
            raise UserError(f"--context must be >= 0. Received: context={self.context!r}")
        if not 0 <= self.min_visible <= 1:
            raise UserError(f"--min-visible must be in [0, 1]. Received: min_visible={self.min_visible!r}")
        if not self.min_box >= 0:
            raise UserError(f"--min-box must be >= 0. Received: min_box={self.min_box!r}")
        if self.mode not in MODES:
            raise UserError(f"--mode must be one of {', '.join(MODES)}. Received: mode={self.mode!r}")


def check_size(size: int | None, actual: int, source: str) -> None:
    """Refuses an explicit size that differs from the size a store or CSV holds.

    Args:
        size: the size asked for (None: the data's own, always fine).
        actual: the side of the data's samples.
        source: the data, for the message.
    """
    if size is not None and size != actual:
        raise UserError(
            f"size {size} was asked for but the data {source} holds {actual}x{actual} images "
            f"(size {actual}). Leave out --size (or size: in the YAML) to use {actual}, or prepare "
            f"the data again with --size {size}"
        )
