"""What an export wrote and how it compares with the Keras model, and the summary table it prints."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from yolol_tf.inference.export.recovery import Recovery


@dataclass(frozen=True)
class RecoveryReport:
    """How an int8 export that lost too much fully quantised was recovered (or not).

    Attributes:
        float_layers: the layers kept in float in the shipped model (empty when nothing passed).
        float_nodes: the same as TFLite node names (``denylisted_nodes``).
        full_int8_size_bytes: size of the fully quantised model.
        full_int8_latency_ms: its single-image latency, measured like the export's.
        full_int8_map: its mAP on the check crops (NaN when it did not run).
        ranking: the worst ops by the quantisation debugger's ``rmse/scale``, as (label, error), worst first.
        attempts: every model tried, as (layers kept in float, size in bytes, mAP, passed).
        most_float: the most layers kept in float in any attempt.
    """

    float_layers: tuple[str, ...]
    float_nodes: tuple[str, ...]
    full_int8_size_bytes: int
    full_int8_latency_ms: float
    full_int8_map: float | None
    ranking: tuple[tuple[str, float], ...]
    attempts: tuple[tuple[tuple[str, ...], int, float | None, bool], ...]
    most_float: int

    @classmethod
    def of(cls, found: Recovery, full_int8_latency_ms: float) -> RecoveryReport:
        """The report of a :class:`yolol_tf.inference.export.recovery.Recovery`."""
        chosen = found.chosen
        return cls(
            float_layers=() if chosen is None else chosen.float_layers,
            float_nodes=() if chosen is None else chosen.float_nodes,
            full_int8_size_bytes=found.full_int8.size_bytes,
            full_int8_latency_ms=full_int8_latency_ms,
            full_int8_map=found.full_int8.comparison.export_map,
            ranking=tuple((e.label, e.rmse_over_scale) for e in found.ranking[:8]),
            attempts=tuple(
                (a.float_layers, a.size_bytes, a.comparison.export_map, a.passed) for a in found.attempts
            ),
            most_float=max((len(a.float_layers) for a in found.attempts), default=0),
        )


@dataclass(frozen=True)
class ExportResult:
    """What an export wrote and how it compares with the Keras model.

    Attributes:
        path: the exported file or folder.
        labels_path: the labels file that travels with it.
        format: "savedmodel", "tflite" or "onnx".
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
        thresholds: the per-class thresholds written with the export.
        thresholds_retuned: True when they were tuned on this export's own outputs on the check crops
            (quantised exports), False when they are the run's (float32 exports, or no labelled crops).
        float_layers: for a recovered int8 export, the layers kept in float.
        recovery: for an int8 export that failed fully quantised, how the recovery went.
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
    thresholds: tuple[float, ...] = ()
    thresholds_retuned: bool = False
    float_layers: tuple[str, ...] = ()
    recovery: RecoveryReport | None = None

    @property
    def size_cost_bytes(self) -> int | None:
        """Bytes the layers kept in float add to the fully int8 model (None without a recovery)."""
        return None if self.recovery is None else self.size_bytes - self.recovery.full_int8_size_bytes

    @property
    def latency_cost_ms(self) -> float | None:
        """Milliseconds they add to a single-image call (None without a recovery)."""
        return None if self.recovery is None else self.latency_ms - self.recovery.full_int8_latency_ms

    def summary(self) -> str:
        """A small table: size, latency and mAP of the export beside the Keras model's."""
        name = self.format if self.quantize == "none" else f"{self.format} {self.quantize}"
        rows = [
            ("model", "size", "latency (1 image)", "mAP"),
            ("keras", _human(self.keras_size_bytes), f"{self.keras_latency_ms:.3f} ms", _map(self.keras_map)),
        ]
        r = self.recovery
        if r is not None:
            full = ("int8 fully", _human(r.full_int8_size_bytes), f"{r.full_int8_latency_ms:.3f} ms")
            rows.append((*full, _map(r.full_int8_map)))
        rows.append((name, _human(self.size_bytes), f"{self.latency_ms:.3f} ms", _map(self.export_map)))
        lines = ["  ".join(f"{c:<18}" for c in row).rstrip() for row in rows]
        lines.append(f"max |probability difference| on {self.checked} crops: {self.max_abs_diff:.2e}")
        if r is not None:
            lines += self._recovery_lines(r)
        if self.io_quantization is not None:
            (si, zi), (so, zo) = self.io_quantization
            lines.append(
                f"int8 input: q = round(pixel / {si:g}) {'-' if zi < 0 else '+'} {abs(zi)}; "
                f"int8 output: probability = (q {'+' if zo < 0 else '-'} {abs(zo)}) * {so:g}"
            )
        if self.thresholds_retuned:
            lines.append(
                f"thresholds tuned on this export's outputs on the {self.checked} check crops: "
                + ", ".join(f"{t:.3f}" for t in self.thresholds)
            )
        if self.forced:
            lines.append("FORCED: the export failed its check and was kept because of --force")
        lines.append(f"wrote {self.path} (labels: {self.labels_path})")
        return "\n".join(lines)

    def _recovery_lines(self, r: RecoveryReport) -> list[str]:
        drop = (
            ""
            if r.full_int8_map is None or self.keras_map is None
            else f" (lost {self.keras_map - r.full_int8_map:.4f} mAP)"
        )
        lines = [
            f"int8 fully quantised failed its check{drop}; quantisation debugger, worst ops first "
            f"(rmse/scale, rounding alone ~0.29): "
            + ", ".join(f"{label} {e:.2f}" for label, e in r.ranking[:4])
        ]
        if not self.float_layers:
            lines.append(f"no selection of layers kept in float passed ({len(r.attempts)} tried)")
            return lines
        size, latency = self.size_cost_bytes, self.latency_cost_ms
        lines.append(f"kept in float: {', '.join(self.float_layers)}")
        lines.append(
            f"cost against fully int8: {size:+d} B ({size / max(r.full_int8_size_bytes, 1):+.1%}), "
            f"{latency:+.3f} ms ({latency / max(r.full_int8_latency_ms, 1e-9):+.1%}); "
            f"{len(r.attempts)} selection(s) tried"
        )
        return lines


def _map(value: float | None) -> str:
    return "" if value is None else f"{value:.4f}"


def _human(n: float) -> str:
    """``512 B``, ``2.2 MB``."""
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)
