"""Which device trains (NVIDIA GPU, Apple Metal or CPU) and the precision and XLA settings fastest on it.

Defaults come from measurements, not hopes: on CPU, float32 without XLA (XLA's CPU code trained our
models about 8x slower); mixed_bfloat16 on a CPU with bfloat16 instructions only where a short probe of the
run's own model finds it faster (1.52x for ResNet50 on an AMD EPYC with AVX512-BF16, but 0.8x on a Xeon
with AMX; see :mod:`yolol_tf.doctor.bf16`); on an NVIDIA GPU,
mixed_float16 with XLA allowed; on Apple Metal, float32 and no XLA (the Metal plugin does not run XLA).
``--mixed-precision`` and ``--jit/--no-jit`` override them.
"""

from __future__ import annotations

import os
import platform
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from yolol_tf.errors import UserError

PRECISIONS = {"auto": None, "off": "float32", "float16": "mixed_float16", "bfloat16": "mixed_bfloat16"}

# CPU flags that matter for training speed: vector width and bfloat16 support.
_CPU_FLAGS = ("avx2", "fma", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile")


@dataclass(frozen=True)
class Device:
    """The device TensorFlow trains on.

    Args:
        kind: "cuda" (NVIDIA GPU), "metal" (Apple GPU through tensorflow-metal) or "cpu".
        name: a human-readable description.
        cpu_features: relevant CPU flags found (Linux only).
    """

    kind: str
    name: str
    cpu_features: tuple[str, ...] = ()


@dataclass(frozen=True)
class DeviceSetup:
    """The settings chosen for a device.

    Args:
        device: the detected device.
        policy: the Keras dtype policy ("float32", "mixed_float16" or "mixed_bfloat16").
        jit: whether to compile the train step with XLA.
        bf16_speedup: on a CPU with bfloat16 instructions and precision "auto": how many times faster the
            probe found mixed_bfloat16 than float32 (None: not probed).
    """

    device: Device
    policy: str
    jit: bool
    bf16_speedup: float | None = None

    def describe(self) -> str:
        extra = f" (CPU features: {', '.join(self.device.cpu_features)})" if self.device.cpu_features else ""
        probe = (
            f" (bfloat16 probe: {self.bf16_speedup:.2f}x float32)" if self.bf16_speedup is not None else ""
        )
        return (
            f"Device: {self.device.name}{extra}; precision {self.policy}{probe}; "
            f"XLA {'on' if self.jit else 'off'}"
        )


def cpu_features(cpuinfo: str | Path = "/proc/cpuinfo") -> tuple[str, ...]:
    """The training-relevant flags of the first CPU in ``/proc/cpuinfo`` (empty where there is none)."""
    try:
        text = Path(cpuinfo).read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ()
    for line in text.splitlines():
        if line.startswith("flags"):
            flags = set(line.split(":", 1)[1].split())
            return tuple(f for f in _CPU_FLAGS if f in flags)
    return ()


def cpu_name(cpuinfo: str | Path = "/proc/cpuinfo") -> str:
    """The CPU model ("Intel(R) Xeon(R) ...") where ``/proc/cpuinfo`` says, else the architecture."""
    try:
        for line in Path(cpuinfo).read_text(encoding="utf-8", errors="replace").splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def detect_device() -> Device:
    """Finds the device TensorFlow will train on: the first visible GPU if any, else the CPU.

    Visible, not merely present: a GPU hidden because it disagreed with the CPU (see
    :func:`check_devices_before_training`) is still listed by ``tf.config.list_physical_devices``.
    """
    import tensorflow as tf

    gpus = tf.config.get_visible_devices("GPU")
    if gpus:
        if sys.platform == "darwin":
            return Device("metal", f"Apple GPU (Metal), {len(gpus)} device(s)")
        try:
            details = tf.config.experimental.get_device_details(gpus[0])
            name = details.get("device_name", "NVIDIA GPU")
        except (ValueError, RuntimeError):
            name = "NVIDIA GPU"
        return Device("cuda", f"{name} ({len(gpus)} GPU(s))")
    return Device("cpu", f"CPU {cpu_name()}, {os.cpu_count()} cores", cpu_features())


def choose(device: Device, mixed_precision: str = "auto", jit: bool | None = None) -> DeviceSetup:
    """The dtype policy and XLA setting for ``device``, with user overrides.

    Args:
        device: from :func:`detect_device`.
        mixed_precision: "auto" (fastest on the device), "off", "float16" or "bfloat16".
        jit: True/False forces XLA on/off; None picks the device default.
    """
    if mixed_precision not in PRECISIONS:
        raise UserError(
            f"mixed_precision must be one of {', '.join(PRECISIONS)}. Received: mixed_precision={mixed_precision!r}"
        )
    policy = PRECISIONS[mixed_precision]
    if policy is None:
        policy = "mixed_float16" if device.kind == "cuda" else "float32"
    if jit is None:
        jit = device.kind == "cuda"
    if jit and device.kind == "metal":
        raise UserError("--jit is not supported on Apple Metal (tensorflow-metal has no XLA); use --no-jit")
    return DeviceSetup(device, policy, bool(jit))


def check_devices_before_training() -> Any:
    """Compares each GPU with the CPU once per machine and hides the GPUs when they disagree.

    Call it before TensorFlow's runtime starts (before the distribution strategy): see
    :mod:`yolol_tf.doctor.gate`. Does nothing where there is no GPU.

    Returns:
        The :class:`yolol_tf.doctor.DeviceVerdict`.
    """
    from yolol_tf.doctor.gate import check_devices_before_training as check

    return check()


def setup(
    mixed_precision: str = "auto", jit: bool | None = None, workload: Any = None, probe: Any = None
) -> DeviceSetup:
    """Detects the device, chooses its settings and applies the dtype policy globally.

    Args:
        mixed_precision: see :func:`choose`.
        jit: see :func:`choose`.
        workload: the run's :class:`yolol_tf.doctor.bf16.Workload`: with "auto" on a CPU with bfloat16
            instructions, mixed_bfloat16 is used where a probe of it (cached) finds it faster. None: no
            probe (float32).
        probe: measures a verdict when none is cached (default: a child process; tests inject one).
    """
    import keras

    chosen = prefer_bf16(choose(detect_device(), mixed_precision, jit), mixed_precision, workload, probe)
    keras.mixed_precision.set_global_policy(chosen.policy)
    return chosen


def prefer_bf16(chosen: DeviceSetup, mixed_precision: str, workload: Any, probe: Any = None) -> DeviceSetup:
    """``chosen`` with mixed_bfloat16 where "auto" meets a CPU with bfloat16 that the probe finds faster.

    An explicit ``mixed_precision`` ("off", "bfloat16", ...), a GPU, a CPU without bfloat16 instructions
    or no ``workload`` keep ``chosen`` as it is, without a probe.
    """
    from dataclasses import replace

    if mixed_precision != "auto" or chosen.device.kind != "cpu" or workload is None:
        return chosen
    from yolol_tf.doctor.bf16 import bf16_verdict

    verdict = bf16_verdict(workload, cpu_name(), chosen.device.cpu_features, run_probe=probe)
    if verdict is None:
        return chosen
    return replace(chosen, policy=verdict.policy, bf16_speedup=round(verdict.speedup, 3))
