"""Before ``train`` trusts a GPU: the comparison of :mod:`yolol_tf.doctor.compare`, once per machine.

:func:`check_devices_before_training` runs the comparison in a child process, caches the verdict per
machine, TensorFlow, plugin, driver and GPU (in ``<yolol-tf cache>/device-checks/``), and when a GPU
disagrees hides every GPU from TensorFlow, so that training runs on the CPU, with a warning on stderr.

Why a child process and ``tf.config.set_visible_devices``: a device can only be hidden before
TensorFlow's runtime starts (its first op, listing logical devices, making a one-device, mirrored or
multi-worker strategy; listing physical or visible devices, their details and
``tf.distribute.get_strategy()`` do not start it); after that ``set_visible_devices`` raises
``RuntimeError``. Running the check in this
process would start the runtime on the GPU being judged. Wrapping training in ``tf.device("/CPU:0")``
afterwards is no substitute: Keras' distribution strategy, its optimizer's variables and tf.data's
prefetching place themselves, and a ``MirroredStrategy`` pins its replicas to the GPUs regardless. A
child process also keeps a plugin that aborts or hangs from taking the training with it.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from yolol_tf.doctor.compare import CHECK_VERSION, RTOL, DeviceVerdict, check_devices
from yolol_tf.errors import UserError

# Distributions that add devices or kernels to TensorFlow: their versions are part of the cache key.
PLUGINS = ("tensorflow-metal", "intel-extension-for-tensorflow", "tensorflow-directml-plugin")
SKIP_ENV = "YOLOL_TF_DEVICE_CHECK"  # "off" skips the check before training
CHILD_TIMEOUT_S = 600


def cache_key(gpus: Sequence[Any]) -> dict[str, Any]:
    """What a verdict depends on: this machine, TensorFlow, its plugins, the driver and the GPUs.

    Args:
        gpus: the physical GPUs (``tf.config.get_visible_devices("GPU")``), or their names.
    """
    import tensorflow as tf

    build = tf.sysconfig.get_build_info()
    devices = []
    for gpu in gpus:
        if isinstance(gpu, str):
            devices.append(gpu)
            continue
        try:
            details = tf.config.experimental.get_device_details(gpu)
        except (ValueError, RuntimeError):
            details = {}
        devices.append(
            " ".join(str(v) for v in (gpu.name, details.get("device_name", "")) if v).strip()
            + (f" cc{details['compute_capability']}" if details.get("compute_capability") else "")
        )
    return {
        "check": CHECK_VERSION,
        "rtol": RTOL,
        "host": platform.node(),
        "platform": platform.platform(),
        "tensorflow": tf.__version__,
        "plugins": plugin_versions(),
        "cuda": build.get("cuda_version") if build.get("is_cuda_build") else None,
        "cudnn": build.get("cudnn_version") if build.get("is_cuda_build") else None,
        "driver": nvidia_driver(),
        "devices": devices,
    }


def plugin_versions() -> dict[str, str]:
    """Installed TensorFlow device plugins and their versions (``{"tensorflow-metal": "1.2.0"}``)."""
    from importlib import metadata

    found = {}
    for name in PLUGINS:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    return found


def nvidia_driver(path: str | Path = "/proc/driver/nvidia/version") -> str | None:
    """The NVIDIA kernel driver's version line, read without starting CUDA (Linux only)."""
    try:
        first = Path(path).read_text(encoding="utf-8", errors="replace").splitlines()[0]
    except (OSError, IndexError):
        return None
    return " ".join(first.split())


def cache_file(key: dict[str, Any], cache_dir: str | Path | None = None) -> Path:
    """Where the verdict for ``key`` is kept: ``<cache>/device-checks/<hash of key>.json``."""
    if cache_dir is None:
        from yolol_tf.data.demo import cache_root

        cache_dir = cache_root() / "device-checks"
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
    return Path(cache_dir) / f"{digest}.json"


def read_cached(path: Path, key: dict[str, Any]) -> DeviceVerdict | None:
    """The verdict cached at ``path`` for exactly ``key``, or None (missing, unreadable or another key)."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        if data.get("key") != key:
            return None
        return replace(DeviceVerdict.from_dict(data["verdict"]), cached=True)
    except (OSError, ValueError, KeyError, TypeError):
        return None


def write_cached(path: Path, key: dict[str, Any], verdict: DeviceVerdict) -> None:
    """Caches a finished verdict (atomically); a check that did not finish is never cached."""
    from yolol_tf.config import atomic_write_text

    if not verdict.complete:
        return
    data = {"key": key, "checked": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "verdict": verdict.to_dict()}
    try:
        atomic_write_text(path, json.dumps(data, indent=1) + "\n")
    except OSError as error:  # a read-only home: check again next time rather than fail the training
        print(f"warning: could not cache the device check in {path}: {error}", file=sys.stderr)


def check_in_child(timeout_s: float = CHILD_TIMEOUT_S) -> DeviceVerdict:
    """Runs :func:`check_devices` in a fresh Python process and returns its verdict.

    The parent's TensorFlow runtime stays unstarted, so its GPUs can still be hidden, and a plugin that
    aborts or hangs takes the child down, not the training.
    """
    package_root = str(Path(__file__).resolve().parents[2])
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (package_root, env.get("PYTHONPATH")) if p)
    env["TF_FORCE_GPU_ALLOW_GROWTH"] = "true"  # take only the memory the check needs, not the whole GPU
    with tempfile.TemporaryDirectory(prefix="yolol-tf-check-") as tmp:
        out = Path(tmp) / "verdict.json"
        code = "import sys; from yolol_tf.doctor.gate import run_child; sys.exit(run_child(sys.argv[1:]))"
        command = [sys.executable, "-c", code, str(out)]
        try:
            done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=timeout_s)
        except subprocess.TimeoutExpired:
            return DeviceVerdict(complete=False, note=f"the device check did not finish in {timeout_s:.0f} s")
        if done.returncode != 0 or not out.is_file():
            tail = " | ".join(done.stderr.strip().splitlines()[-3:])
            return DeviceVerdict(
                complete=False,
                note=f"the device check process failed (exit status {done.returncode}): {tail}",
            )
        return DeviceVerdict.from_dict(json.loads(out.read_text(encoding="utf-8")))


def hide_gpus() -> None:
    """Hides every GPU from TensorFlow, so this process computes on the CPU.

    Only possible before TensorFlow's runtime has started (its first op, or listing logical devices):
    after that, a device placement cannot change for tensors, variables and functions that already
    exist, and ``tf.device("/CPU:0")`` around ``fit`` would not move Keras' variables, its distribution
    strategy's devices or tf.data's prefetching, so it is refused rather than half done.
    """
    import tensorflow as tf

    try:
        tf.config.set_visible_devices([], "GPU")
    except RuntimeError:
        if tf.config.get_visible_devices("GPU"):
            raise UserError(
                "A GPU disagrees with the CPU (see `yolol-tf doctor`), and TensorFlow had already started in "
                "this process, so it cannot be hidden any more. Start a new process and call "
                "yolol_tf.doctor.check_devices_before_training() before any other TensorFlow work, or "
                'hide the GPU yourself first: tf.config.set_visible_devices([], "GPU")',
                exit_code=1,
            ) from None


def check_devices_before_training(
    *,
    gpus: Sequence[Any] | None = None,
    cache_dir: str | Path | None = None,
    run_check: Callable[[], DeviceVerdict] = check_in_child,
    hide: Callable[[], None] = hide_gpus,
) -> DeviceVerdict:
    """Checks the GPUs once per machine before training, and hides them when they disagree with the CPU.

    Call it before TensorFlow's runtime starts (before a distribution strategy is made, a tensor or a
    model exists). On a machine without a GPU it does nothing. ``YOLOL_TF_DEVICE_CHECK=off`` skips it.

    Args:
        gpus: the GPUs to check; default the visible physical GPUs (listing them does not start the
            runtime).
        cache_dir: where verdicts are cached; default ``<yolol-tf cache>/device-checks``.
        run_check: measures a verdict when none is cached (default: :func:`check_in_child`).
        hide: hides the GPUs when they disagree (default: :func:`hide_gpus`).

    Returns:
        The verdict; ``use_gpu`` says whether training uses the GPUs.
    """
    import tensorflow as tf

    if gpus is None:
        gpus = tf.config.get_visible_devices("GPU")
    if not gpus:
        return DeviceVerdict(note="No GPU: nothing to check; training runs on the CPU.")
    if os.environ.get(SKIP_ENV, "").strip().lower() in ("off", "0", "no", "false"):
        return DeviceVerdict(note=f"{SKIP_ENV}=off: the GPUs were not checked", use_gpu=True)
    key = cache_key(gpus)
    path = cache_file(key, cache_dir)
    verdict = read_cached(path, key)
    if verdict is None:
        print(
            "Checking the GPU against the CPU on a test step (once per machine and version)...",
            file=sys.stderr,
        )
        verdict = run_check()
        write_cached(path, key, verdict)
    if verdict.agree and verdict.results:
        return replace(verdict, use_gpu=True)
    hide()
    problems = [r.describe() for r in verdict.results if not r.ok]
    if not problems:  # TensorFlow lists a GPU but could not make a device of it, or the check died
        problems = [
            verdict.note if not verdict.complete else "TensorFlow lists a GPU but could not run on it"
        ]
    print(
        "warning: the GPU cannot be trusted, so training runs on the CPU (slower, but right): "
        + "; ".join(problems)
        + (f" (verdict cached in {path})" if verdict.complete else "")
        + f". Run `yolol-tf doctor` for details; {SKIP_ENV}=off trains on the GPU regardless.",
        file=sys.stderr,
    )
    return replace(verdict, use_gpu=False)


def run_child(argv: list[str]) -> int:
    """The child process of :func:`check_in_child`: writes the verdict as JSON to ``argv[0]``."""
    from yolol_tf.config import atomic_write_text

    verdict = check_devices()
    atomic_write_text(argv[0], json.dumps(verdict.to_dict()))
    return 0


__all__ = [
    "SKIP_ENV",
    "cache_file",
    "cache_key",
    "check_devices_before_training",
    "check_in_child",
    "hide_gpus",
    "nvidia_driver",
    "plugin_versions",
    "read_cached",
    "write_cached",
]
