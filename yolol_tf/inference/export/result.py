"""What an export wrote and how it compares with the Keras model, and the summary table it prints."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class ExportResult:
    """What an export wrote and how it compares with the Keras model.

    Attributes:
        path: the exported file or folder.
        labels_path: the labels file that travels with it.
        format: "savedmodel" or "tflite".
        quantize: "none", "float16" or "int8".
        size_bytes: size of the export (a folder's files summed).
        keras_size_bytes: size of the ``.keras`` file it came from.
        latency_ms: single-image latency of the export, median of ``runs``.
        keras_latency_ms: the same for the Keras model (a traced ``tf.function``).
        checked: how many crops the export was compared on.
        max_abs_diff: largest probability difference against Keras on those crops.
        keras_map: mAP of the Keras model on them (None without labelled data).
        export_map: mAP of the export on them.
        forced: True when the export failed its check but ``force`` kept it.
        io_quantization: for int8, the input and output ``(scale, zero_point)`` pairs a runner needs.
    """

    path: Path
    labels_path: Path
    format: str
    quantize: str
    size_bytes: int
    keras_size_bytes: int
    latency_ms: float
    keras_latency_ms: float
    checked: int
    max_abs_diff: float
    keras_map: float | None = None
    export_map: float | None = None
    forced: bool = False
    io_quantization: tuple[tuple[float, int], tuple[float, int]] | None = None

    def summary(self) -> str:
        """A small table: size, latency and mAP of the export beside the Keras model's."""
        name = self.format if self.quantize == "none" else f"{self.format} {self.quantize}"
        kmap = "" if self.keras_map is None else f"{self.keras_map:.4f}"
        emap = "" if self.export_map is None else f"{self.export_map:.4f}"
        rows = [
            ("model", "size", "latency (1 image)", "mAP"),
            ("keras", _human(self.keras_size_bytes), f"{self.keras_latency_ms:.3f} ms", kmap),
            (name, _human(self.size_bytes), f"{self.latency_ms:.3f} ms", emap),
        ]
        lines = ["  ".join(f"{c:<18}" for c in row).rstrip() for row in rows]
        lines.append(f"max |probability difference| on {self.checked} crops: {self.max_abs_diff:.2e}")
        if self.io_quantization is not None:
            (si, zi), (so, zo) = self.io_quantization
            lines.append(
                f"int8 input: q = round(pixel / {si:g}) {'-' if zi < 0 else '+'} {abs(zi)}; "
                f"int8 output: probability = (q {'+' if zo < 0 else '-'} {abs(zo)}) * {so:g}"
            )
        if self.forced:
            lines.append("FORCED: the export failed its check and was kept because of --force")
        lines.append(f"wrote {self.path} (labels: {self.labels_path})")
        return "\n".join(lines)


def _human(n: float) -> str:
    """``512 B``, ``2.2 MB``."""
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)
