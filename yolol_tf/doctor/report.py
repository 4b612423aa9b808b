"""``yolol-tf doctor``: what a bug report needs, and whether each GPU computes what the CPU computes.

:func:`diagnose` gathers the versions (read from the installed distributions, so they are reported even
when TensorFlow fails to import, as it does when a tensorflow-metal plugin does not match it), the
devices TensorFlow lists, the CPU, the precision and XLA defaults ``train`` picks here, and runs the
device comparison of :mod:`yolol_tf.doctor.compare`. A verdict it measures on a GPU is cached for
``train`` (see :mod:`yolol_tf.doctor.gate`).
"""

from __future__ import annotations

import json
import os
import platform
import sys
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

from yolol_tf.doctor.compare import BATCH, REFERENCE, SEED, DeviceVerdict, check_devices
from yolol_tf.errors import UserError

FORMATS = ("text", "json")
DISTRIBUTIONS = (
    "yolol-tf",
    "tensorflow",
    "tensorflow-macos",
    "tensorflow-metal",
    "keras",
    "keras-tuner",
    "numpy",
)
# TensorFlow versions each tensorflow-metal release is documented for: Apple's table in the package's PyPI
# description (as shipped in the 1.2.0 wheel, January 2025, the last release), with 1.1.0 ending at 2.17:
# it fails to load on 2.18 (tensorflow/tensorflow#81987, #84167), which 1.2.0 was released to fix.
METAL_SUPPORTS = {
    "0.1.2": ("2.5", "2.5"),
    "0.2.0": ("2.6", "2.6"),
    "0.3.0": ("2.7", "2.7"),
    "0.4.0": ("2.8", "2.8"),
    "0.5.0": ("2.9", "2.9"),
    "0.6.0": ("2.10", "2.10"),
    "0.7.0": ("2.11", "2.11"),
    "0.8.0": ("2.12", "2.12"),
    "1.0.0": ("2.13", "2.13"),
    "1.1.0": ("2.14", "2.17"),
    "1.2.0": ("2.18", "2.18"),
}


@dataclass(frozen=True)
class DoctorReport:
    """What ``yolol-tf doctor`` found.

    Args:
        versions: installed version of each distribution in :data:`DISTRIBUTIONS` (None: not installed).
        python: the Python version and executable.
        platform: the OS and machine (``platform.platform()``).
        tensorflow_error: why TensorFlow failed to import ("" when it imported).
        build: TensorFlow's build (CUDA and cuDNN versions) and the NVIDIA driver, where there are any.
        devices: the physical devices TensorFlow lists, by type ({"CPU": [...], "GPU": [...]}).
        gpus: each GPU's details (name, compute capability) as TensorFlow reports them.
        plugins: files in ``tensorflow-plugins`` folders, which TensorFlow loads at import.
        cpu: the CPU's name, cores and training-relevant features.
        defaults: what ``train`` uses here before the device check (device, precision, XLA).
        warnings: mismatches found (a plugin documented for another TensorFlow).
        check: the device comparison (None when it was not run).
        bf16: the cached bfloat16 speed probes of this CPU (see :mod:`yolol_tf.doctor.bf16`): each
            ``{"key": ..., "checked": ..., "verdict": ...}``.
    """

    versions: dict[str, str | None]
    python: str
    platform: str
    tensorflow_error: str = ""
    build: dict[str, Any] = field(default_factory=dict)
    devices: dict[str, list[str]] = field(default_factory=dict)
    gpus: list[dict[str, Any]] = field(default_factory=list)
    plugins: list[str] = field(default_factory=list)
    cpu: dict[str, Any] = field(default_factory=dict)
    defaults: dict[str, Any] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    check: DeviceVerdict | None = None
    bf16: list[dict[str, Any]] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """TensorFlow imports and every device agrees with the CPU."""
        return not self.tensorflow_error and (self.check is None or self.check.agree)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["check"] = self.check.to_dict() if self.check is not None else None
        return {**data, "ok": self.ok}


def check_format(fmt: str) -> None:
    """Refuses an unknown ``--format`` before anything runs."""
    if fmt not in FORMATS:
        raise UserError(f"--format must be one of {', '.join(FORMATS)}. Received: format={fmt!r}")


def diagnose(
    *,
    check: bool = True,
    devices: Sequence[str] | None = None,
    progress: Callable[[str], None] | None = None,
) -> DoctorReport:
    """Gathers the report and, with ``check``, compares every GPU with the CPU on a fixed training step.

    Args:
        check: run the device comparison.
        devices: the devices to compare with the CPU; default every GPU.
        progress: called with a line as each device runs.
    """
    from yolol_tf import __version__

    versions = {name: _version(name) for name in DISTRIBUTIONS}
    versions["yolol-tf"] = versions["yolol-tf"] or __version__
    report = DoctorReport(
        versions=versions,
        python=f"{platform.python_version()} ({platform.python_implementation()}, {sys.executable})",
        platform=platform.platform(),
        plugins=_plugin_files(),
        warnings=metal_warnings(versions),
    )
    try:
        import tensorflow as tf
    except Exception as error:  # a plugin built for another TensorFlow fails the import itself
        return _replace(report, tensorflow_error=f"{type(error).__name__}: {error}".strip())
    report = _replace(report, **_tensorflow_facts(tf))
    if not check:
        return report
    verdict = check_devices(devices, progress=progress)
    if devices is None and report.devices.get("GPU"):
        _record(verdict)
    return _replace(report, check=verdict)


def format_report(report: DoctorReport, fmt: str = "text") -> str:
    """The report as text (for people) or JSON (for tools)."""
    check_format(fmt)
    if fmt == "json":
        return json.dumps(report.to_dict(), indent=2, allow_nan=False) + "\n"
    v = report.versions
    build = report.build
    tf_build = ", ".join(
        f"{name} {build[k]}" for k, name in (("cuda", "CUDA"), ("cudnn", "cuDNN")) if build.get(k)
    )
    lines = [
        "yolol-tf doctor",
        f"  yolol-tf          {v['yolol-tf']}",
        f"  Python            {report.python}",
        f"  TensorFlow        {v['tensorflow'] or v['tensorflow-macos'] or 'not installed'}"
        + (f" (built for {tf_build})" if tf_build else ""),
        f"  Keras             {v['keras'] or 'not installed'}"
        + (f" (backend {build['keras_backend']})" if build.get("keras_backend") else ""),
        f"  keras-tuner       {v['keras-tuner'] or 'not installed'}",
        f"  numpy             {v['numpy'] or 'not installed'}",
        f"  tensorflow-metal  {v['tensorflow-metal'] or 'not installed'}",
        f"  platform          {report.platform}",
        f"  NVIDIA driver     {build.get('nvidia_driver') or 'none found'}",
    ]
    if report.plugins:
        lines.append(f"  plugins loaded    {', '.join(report.plugins)}")
    lines += [f"warning: {w}" for w in report.warnings]
    if report.tensorflow_error:
        lines += [f"TensorFlow failed to import: {report.tensorflow_error}", "Result: FAILED"]
        return "\n".join(lines) + "\n"
    lines.append("Devices")
    for kind in ("CPU", "GPU"):
        lines.append(f"  {kind:16s}  {', '.join(report.devices.get(kind, [])) or 'none'}")
    lines += [f"  {g.get('name')}: {g.get('details')}" for g in report.gpus if g.get("details")]
    cpu = report.cpu
    features = ", ".join(cpu.get("features", ())) or "none of note"
    lines.append(f"CPU                 {cpu.get('name')}, {cpu.get('cores')} cores; features: {features}")
    d = report.defaults
    lines.append(
        f"train's defaults    {d.get('device')}: precision {d.get('precision')}, XLA {'on' if d.get('xla') else 'off'}"
    )
    if d.get("bf16_probe"):
        lines.append(
            "                    (mixed_bfloat16 instead where a probe of the model finds it faster)"
        )
    lines += bf16_lines(report.bf16, cpu.get("features", ()))
    verdict = report.check
    if verdict is not None:
        lines.append(
            f"Device check        one training step (float32, batch {BATCH}, seed {SEED}) on each device "
            f"against {REFERENCE}, tolerance {verdict.rtol:g} of each tensor's scale"
        )
        if verdict.loss is not None:
            lines.append(f"  {REFERENCE}: reference (loss {verdict.loss:.4f})")
        lines += [f"  {line}" for line in verdict.describe()]
        if verdict.results and not verdict.agree:
            lines.append("  train falls back to the CPU here (float32, no XLA) until this is fixed")
    lines.append("Result: OK" if report.ok else "Result: a device DISAGREES with the CPU")
    return "\n".join(lines) + "\n"


def _version(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def _replace(report: DoctorReport, **changes: Any) -> DoctorReport:
    from dataclasses import replace

    return replace(report, **changes)


def _plugin_files() -> list[str]:
    """Files in the ``tensorflow-plugins`` folders on ``sys.path``: TensorFlow loads them all at import."""
    found = set()
    for entry in sys.path:
        folder = Path(entry or ".") / "tensorflow-plugins"
        if folder.is_dir():
            found.update(str(p) for p in folder.iterdir() if p.is_file())
    return sorted(found)


def metal_warnings(versions: dict[str, str | None]) -> list[str]:
    """A warning when the installed tensorflow-metal is documented for another TensorFlow."""
    metal, tf_version = (
        versions.get("tensorflow-metal"),
        versions.get("tensorflow") or versions.get("tensorflow-macos"),
    )
    if not metal or not tf_version:
        return []
    minor = ".".join(tf_version.split(".")[:2])
    supported = METAL_SUPPORTS.get(metal)
    if supported is None:
        return [
            f"tensorflow-metal {metal} is not in yolol-tf's table of known releases; the check below decides"
        ]
    low, high = supported
    if _minor_tuple(low) <= _minor_tuple(minor) <= _minor_tuple(high):
        return []
    documented = low if low == high else f"{low}-{high}"
    return [
        f"tensorflow-metal {metal} is documented for TensorFlow {documented}, and this is TensorFlow "
        f"{tf_version}: the plugin may fail to load or compute wrong results (see the README, Apple Silicon)"
    ]


def _minor_tuple(version: str) -> tuple[int, ...]:
    return tuple(int(part) for part in version.split(".")[:2] if part.isdigit())


def _tensorflow_facts(tf: Any) -> dict[str, Any]:
    """Devices, build, CPU and ``train``'s defaults, from an imported TensorFlow."""
    from yolol_tf import device
    from yolol_tf.doctor.gate import nvidia_driver

    info = tf.sysconfig.get_build_info()
    build = {
        "cuda": info.get("cuda_version") if info.get("is_cuda_build") else None,
        "cudnn": info.get("cudnn_version") if info.get("is_cuda_build") else None,
        "nvidia_driver": nvidia_driver(),
        "keras_backend": _keras_backend(),
    }
    devices = {kind: [d.name for d in tf.config.list_physical_devices(kind)] for kind in ("CPU", "GPU")}
    gpus = []
    for gpu in tf.config.list_physical_devices("GPU"):
        try:
            details = tf.config.experimental.get_device_details(gpu)
        except (ValueError, RuntimeError):
            details = {}
        gpus.append({"name": gpu.name, "details": {k: str(v) for k, v in details.items()}})
    chosen = device.choose(device.detect_device())
    cpu = {"name": device.cpu_name(), "cores": os.cpu_count(), "features": list(device.cpu_features())}
    defaults = {"device": chosen.device.name, "precision": chosen.policy, "xla": chosen.jit}
    from yolol_tf.doctor.bf16 import cached_verdicts, has_bf16

    if chosen.device.kind == "cpu" and has_bf16(chosen.device.cpu_features):
        defaults["bf16_probe"] = True  # "auto" probes mixed_bfloat16 on each model first
    mine = [v for v in cached_verdicts() if v.get("key", {}).get("cpu") == cpu["name"]]
    return {"build": build, "devices": devices, "gpus": gpus, "cpu": cpu, "defaults": defaults, "bf16": mine}


def bf16_lines(verdicts: list[dict[str, Any]], features: Sequence[str]) -> list[str]:
    """The doctor's lines on the cached bfloat16 speed probes of this CPU."""
    from yolol_tf.doctor.bf16 import MARGIN, has_bf16

    if not has_bf16(tuple(features)):
        return []
    if not verdicts:
        return ["bfloat16 probes    none cached yet (the first `train` of each model and size runs one)"]
    lines = [f"bfloat16 probes    mixed_bfloat16 step speed against float32; chosen from {MARGIN:g}x"]
    for entry in verdicts:
        key, verdict = entry.get("key", {}), entry.get("verdict", {})
        shape = "x".join(str(n) for n in key.get("input_shape", []))
        options = f" {key['options']}" if key.get("options") else ""
        lines.append(
            f"  {key.get('model')}{options} {shape} batch {key.get('batch_size')}: "
            f"{verdict.get('speedup', 0):.2f}x -> {verdict.get('policy')} "
            f"(TensorFlow {key.get('tensorflow')}, {entry.get('checked', '')})"
        )
    return lines


def _keras_backend() -> str | None:
    try:
        import keras

        return keras.backend.backend()
    except Exception:  # a broken Keras is reported by its version line, not here
        return None


def _record(verdict: DeviceVerdict) -> None:
    """Caches a verdict measured on this machine's GPUs, so that ``train`` need not measure it again."""
    import tensorflow as tf

    from yolol_tf.doctor.gate import cache_file, cache_key, write_cached

    key = cache_key(tf.config.get_visible_devices("GPU"))
    write_cached(cache_file(key), key, verdict)


__all__ = [
    "FORMATS",
    "METAL_SUPPORTS",
    "DoctorReport",
    "check_format",
    "diagnose",
    "format_report",
    "metal_warnings",
]
