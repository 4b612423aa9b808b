"""Whether mixed_bfloat16 trains faster than float32 on this CPU: a short speed probe, once per workload.

On a CPU with bfloat16 instructions (``avx512_bf16`` or ``amx_bf16``) the answer depends on the CPU and
the model: measured on a 2-core AMD EPYC with AVX512-BF16, ResNet50 trained at 1.52x float32 under
mixed_bfloat16 and the cnn at 1.28x; on an Intel Xeon with AMX the switch ran at 0.8x. So before a run
with ``mixed_precision="auto"`` on such a CPU, :func:`bf16_verdict` trains a few steady-state steps of the
run's own model (name, options, input size, batch size) under each policy and picks bfloat16 when it is
at least :data:`MARGIN` times faster. The probe runs in a child process, as the GPU check of
:mod:`yolol_tf.doctor.gate` does (the dtype policy is global, and the child's models and traced functions
go with it), and the verdict is cached beside the GPU verdicts (``<yolol-tf cache>/device-checks/``,
``bf16-<hash>.json``), keyed by the CPU, TensorFlow and the workload, so it runs once.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

MARGIN = 1.1  # bfloat16 must beat float32 by this factor: below it, float32's accuracy is worth more
PROBE_VERSION = 1
SKIP_ENV = "YOLOL_TF_BF16_PROBE"  # "off": never probe; "auto" on a CPU then means float32
CHILD_TIMEOUT_S = 300
PREFIX = "bf16-"
BF16_FLAGS = ("avx512_bf16", "amx_bf16")


@dataclass(frozen=True)
class Workload:
    """What a run trains, as far as its speed goes: the probe trains the same.

    Args:
        model: a name of ``yolol_tf.models.MODEL_NAMES``.
        model_options: the builder's options.
        input_shape: ``(height, width, channels)``.
        num_classes: logits (not part of the cache key: the head is a small part of a step).
        batch_size: samples per step.
    """

    model: str
    model_options: dict
    input_shape: tuple[int, ...]
    num_classes: int
    batch_size: int


@dataclass(frozen=True)
class Bf16Verdict:
    """Seconds per training step under each policy, and what follows from them.

    Args:
        float32_s: median seconds per step under float32.
        bfloat16_s: median seconds per step under mixed_bfloat16.
        cached: read from the cache rather than measured now.
    """

    float32_s: float
    bfloat16_s: float
    cached: bool = False

    @property
    def speedup(self) -> float:
        """float32's step time over bfloat16's (above 1: bfloat16 is faster)."""
        return self.float32_s / self.bfloat16_s if self.bfloat16_s > 0 else 0.0

    @property
    def policy(self) -> str:
        """The dtype policy to train with: "mixed_bfloat16" when it is at least :data:`MARGIN` faster."""
        return decide(self.float32_s, self.bfloat16_s)

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "speedup": round(self.speedup, 3), "policy": self.policy}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Bf16Verdict:
        return cls(float(data["float32_s"]), float(data["bfloat16_s"]))


def decide(float32_s: float, bfloat16_s: float, margin: float = MARGIN) -> str:
    """ "mixed_bfloat16" when a bfloat16 step takes at most 1/``margin`` of a float32 step, else "float32"."""
    if bfloat16_s > 0 and float32_s / bfloat16_s >= margin:
        return "mixed_bfloat16"
    return "float32"


def has_bf16(cpu_features: tuple[str, ...]) -> bool:
    """Whether the CPU has bfloat16 instructions worth probing."""
    return any(flag in cpu_features for flag in BF16_FLAGS)


def cache_key(workload: Workload, cpu: str, cpu_features: tuple[str, ...]) -> dict[str, Any]:
    """What a verdict depends on: the CPU (model, flags, cores), TensorFlow and the workload."""
    import tensorflow as tf

    return {
        "probe": PROBE_VERSION,
        "cpu": cpu,
        "features": list(cpu_features),
        "cores": os.cpu_count(),
        "tensorflow": tf.__version__,
        "model": workload.model,
        "options": json.loads(json.dumps(workload.model_options, sort_keys=True, default=str)),
        "input_shape": list(workload.input_shape),
        "batch_size": workload.batch_size,
    }


def cache_file(key: dict[str, Any], cache_dir: str | Path | None = None) -> Path:
    """``<cache>/device-checks/bf16-<hash of key>.json``, beside the GPU verdicts."""
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
    return _cache_dir(cache_dir) / f"{PREFIX}{digest}.json"


def _cache_dir(cache_dir: str | Path | None) -> Path:
    if cache_dir is None:
        from yolol_tf.data.demo import cache_root

        return cache_root() / "device-checks"
    return Path(cache_dir)


def read_cached(path: Path, key: dict[str, Any]) -> Bf16Verdict | None:
    """The verdict cached at ``path`` for exactly ``key``, or None."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(data, dict) or data.get("key") != key:
            return None
        return replace(Bf16Verdict.from_dict(data["verdict"]), cached=True)
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None


def write_cached(path: Path, key: dict[str, Any], verdict: Bf16Verdict) -> None:
    """Caches a verdict atomically; a read-only cache means probing again next time, not failing."""
    from yolol_tf.config import atomic_write_text

    data = {"key": key, "checked": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "verdict": verdict.to_dict()}
    try:
        atomic_write_text(path, json.dumps(data, indent=1) + "\n")
    except OSError as error:
        print(f"warning: could not cache the bfloat16 probe in {path}: {error}", file=sys.stderr)


def cached_verdicts(cache_dir: str | Path | None = None) -> list[dict[str, Any]]:
    """Every cached bfloat16 verdict (``{"key": ..., "checked": ..., "verdict": ...}``), for the doctor."""
    found = []
    for path in sorted(_cache_dir(cache_dir).glob(f"{PREFIX}*.json")):
        try:
            found.append(json.loads(path.read_text(encoding="utf-8")))
        except (OSError, ValueError):
            continue
    return found


def bf16_verdict(
    workload: Workload,
    cpu: str,
    cpu_features: tuple[str, ...],
    *,
    cache_dir: str | Path | None = None,
    run_probe: Callable[[Workload], Bf16Verdict | None] | None = None,
) -> Bf16Verdict | None:
    """The cached verdict for this CPU and workload, else a new one measured (and cached).

    Args:
        workload: the run's model, options, input shape and batch size.
        cpu: the CPU's model name.
        cpu_features: its training-relevant flags (see :func:`yolol_tf.device.cpu_features`).
        cache_dir: default ``<yolol-tf cache>/device-checks``.
        run_probe: measures a verdict (default: :func:`probe_in_child`); None from it: no verdict.

    Returns:
        The verdict, or None: no bfloat16 instructions, ``YOLOL_TF_BF16_PROBE=off``, or the probe failed
        (then the run trains in float32).
    """
    if not has_bf16(cpu_features):
        return None
    if os.environ.get(SKIP_ENV, "").strip().lower() in ("off", "0", "no", "false"):
        return None
    key = cache_key(workload, cpu, cpu_features)
    path = cache_file(key, cache_dir)
    verdict = read_cached(path, key)
    if verdict is not None:
        return verdict
    print(
        f"Timing {workload.model} under float32 and mixed_bfloat16 on this CPU (once per CPU, model, "
        f"size and batch size)...",
        file=sys.stderr,
    )
    verdict = (run_probe or probe_in_child)(workload)
    if verdict is not None:
        write_cached(path, key, verdict)
    return verdict


def probe_in_child(workload: Workload, timeout_s: float = CHILD_TIMEOUT_S) -> Bf16Verdict | None:
    """Runs :func:`measure` in a fresh Python process on the CPU; None when it fails or overruns."""
    package_root = str(Path(__file__).resolve().parents[2])
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (package_root, env.get("PYTHONPATH")) if p)
    env["CUDA_VISIBLE_DEVICES"] = ""  # the CPU is what is being timed, even beside a hidden GPU
    with tempfile.TemporaryDirectory(prefix="yolol-tf-bf16-") as tmp:
        out = Path(tmp) / "verdict.json"
        args = json.dumps({**asdict(workload), "input_shape": list(workload.input_shape)})
        code = "import sys; from yolol_tf.doctor.bf16 import run_child; sys.exit(run_child(sys.argv[1:]))"
        try:
            done = subprocess.run(
                [sys.executable, "-c", code, args, str(out)],
                env=env,
                capture_output=True,
                text=True,
                timeout=timeout_s,
            )
        except subprocess.TimeoutExpired:
            print(f"warning: the bfloat16 probe did not finish in {timeout_s:.0f} s", file=sys.stderr)
            return None
        if done.returncode != 0 or not out.is_file():
            tail = " | ".join(done.stderr.strip().splitlines()[-3:])
            print(f"warning: the bfloat16 probe failed (exit {done.returncode}): {tail}", file=sys.stderr)
            return None
        return Bf16Verdict.from_dict(json.loads(out.read_text(encoding="utf-8")))


def measure(workload: Workload, *, warmup: int = 2, steps: int = 3, rounds: int = 5, budget_s: float = 8.0):
    """Median seconds per training step of ``workload`` under float32 and under mixed_bfloat16.

    Both models are built and traced first, then timed in alternating rounds of ``steps`` steps, so that a
    neighbour's load falls on both alike; timing stops after ``rounds`` rounds, or after two once
    ``budget_s`` is spent. Sets the global dtype policy; run it in a process of its own.
    """
    import keras
    import numpy as np
    import tensorflow as tf

    from yolol_tf.models import build_model

    rng = np.random.default_rng(0)
    shape = (workload.batch_size, *workload.input_shape)
    x = tf.constant(rng.integers(0, 256, shape).astype("float32"))
    y = tf.constant((rng.random((workload.batch_size, workload.num_classes)) < 0.3).astype("float32"))
    models = {}
    for policy in ("float32", "mixed_bfloat16"):
        keras.mixed_precision.set_global_policy(policy)
        keras.utils.set_random_seed(0)
        model = build_model(
            workload.model, workload.input_shape, workload.num_classes, **workload.model_options
        )
        model.compile(
            optimizer=keras.optimizers.AdamW(1e-3),
            loss=keras.losses.BinaryCrossentropy(from_logits=True),
            jit_compile=False,
        )
        for _ in range(warmup):  # the trace, then one step in the steady state
            model.train_on_batch(x, y)
        models[policy] = model
    keras.mixed_precision.set_global_policy("float32")
    times: dict[str, list[float]] = {policy: [] for policy in models}
    start = time.perf_counter()
    for round_ in range(rounds):
        for policy, model in models.items():
            begin = time.perf_counter()
            for _ in range(steps):
                model.train_on_batch(x, y)  # returns numbers: the step has finished
            times[policy].append((time.perf_counter() - begin) / steps)
        if round_ >= 1 and time.perf_counter() - start > budget_s:
            break
    return Bf16Verdict(float(np.median(times["float32"])), float(np.median(times["mixed_bfloat16"])))


def run_child(argv: list[str]) -> int:
    """The child process of :func:`probe_in_child`: ``argv`` is the workload as JSON and the output path."""
    from yolol_tf.config import atomic_write_text

    spec = json.loads(argv[0])
    spec["input_shape"] = tuple(spec["input_shape"])
    verdict = measure(Workload(**spec))
    atomic_write_text(argv[1], json.dumps(verdict.to_dict()))
    return 0
