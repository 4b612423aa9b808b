"""Does a GPU compute what the CPU computes? One fixed training step on each device, compared.

:func:`check_devices` runs one fixed batch (fixed seed) through a small network on the CPU and on every
GPU, forward and one SGD step, and compares the outputs and the updated weights.

The network uses the kernels our models train with: convolutions (fused with their bias and
activation, and the convolution-then-add that Keras layers emit), batch statistics, dense layers over
2048 inputs, a sigmoid cross-entropy and their gradients, in float32 and in graph mode
(``tf.function``), where plugins fuse ops; on an NVIDIA GPU also XLA-compiled, as ``train`` runs it
there. The fused ``Conv2D/MatMul + BiasAdd + Relu`` patterns are compared forward (see :func:`forward`).

Tolerance: a tensor agrees when ``max|got - cpu| <= ATOL + RTOL * max|cpu|``, each tensor against its own
scale (for weights, the scale of the update ``w1 - w0``, so a wrong gradient is not hidden behind the
weights' size). Measured on this step: oneDNN against Eigen (``TF_ENABLE_ONEDNN_OPTS=0``) and XLA
against graph mode differ by at most 1.6e-5 of the scale. TensorFlow computes float32 matmuls and
convolutions in TensorFloat-32 on NVIDIA Ampere and later by default (10-bit mantissa); rounding every
matmul and convolution operand of the step to TF32 moves outputs and updates by up to 1.1e-3 of their
scale (``tests/test_doctor.py`` measures it again), so a tolerance of 1e-3 would fail a correct H100.
``RTOL = 1e-2`` leaves 9x above that, and is still 100x below the wrong results reported for
tensorflow-metal (errors of tens of units on outputs of a few units). ``ATOL = 1e-6`` only keeps an
all-zero tensor from demanding an exact zero.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace
from typing import Any

import numpy as np

CHECK_VERSION = 1  # in the cache key: a change to the step or the tolerance checks every machine again
RTOL = 1e-2
ATOL = 1e-6
REFERENCE = "/CPU:0"
SEED = 20261201
BATCH, SIZE, CHANNELS, CLASSES = 8, 16, 3, 10
LEARNING_RATE = 0.5


@dataclass(frozen=True)
class StepResult:
    """What one device computed for the fixed batch.

    Args:
        outputs: the forward pass's tensors by name (see :func:`forward`).
        weights: every trained variable after one SGD step, by name.
        loss: the loss before the step.
        seconds: wall time of the step, compilation included.
    """

    outputs: dict[str, np.ndarray]
    weights: dict[str, np.ndarray]
    loss: float
    seconds: float = 0.0


@dataclass(frozen=True)
class DeviceResult:
    """One device compared with the CPU.

    Args:
        device: the TensorFlow device ("/GPU:0"), with " (XLA)" when the step was XLA-compiled.
        ok: within tolerance everywhere (and no error).
        output_diff: max |device - CPU| of the forward pass, on the output closest to (or furthest past)
            its tolerance, named by ``output_name``; ``output_tolerance`` is what was allowed there.
        weight_diff: max |device - CPU| of the updated weights, on the variable closest to (or furthest
            past) its tolerance, named by ``weight_name``; ``weight_tolerance`` is what was allowed there.
        error: the exception the device raised instead of computing ("" if none).
    """

    device: str
    ok: bool
    output_diff: float | None = None
    output_tolerance: float | None = None
    output_name: str = ""
    weight_diff: float | None = None
    weight_tolerance: float | None = None
    weight_name: str = ""
    error: str = ""

    def describe(self) -> str:
        if self.error:
            return f"{self.device}: FAILED to run the step: {self.error}"
        verdict = "agrees with the CPU" if self.ok else "DISAGREES with the CPU"
        return (
            f"{self.device}: {verdict}: outputs differ by {_num(self.output_diff)} (allowed "
            f"{_num(self.output_tolerance)}, {self.output_name}), updated weights by "
            f"{_num(self.weight_diff)} (allowed {_num(self.weight_tolerance)}, {self.weight_name})"
        )


def _num(value: float | None) -> str:
    """A difference for people: NaN, infinity and a wrong shape (None in JSON) read "not finite"."""
    return f"{value:.2g}" if value is not None and math.isfinite(value) else "not finite"


@dataclass(frozen=True)
class DeviceVerdict:
    """Whether the GPUs compute what the CPU computes, and what training does about it.

    Args:
        results: one per compared device; empty when there was no GPU to compare.
        complete: False when the check itself did not finish (the child process crashed or hung); such
            a verdict is never cached.
        note: why nothing was compared, or why the check did not finish.
        use_gpu: training's decision: train on the GPUs.
        cached: the verdict was read from the cache rather than measured now.
        reference: the device the others are compared with.
        rtol: the relative tolerance used (see the module docstring); ``atol`` the absolute one.
        loss: the CPU's loss on the fixed batch (None when the check did not run).
    """

    results: tuple[DeviceResult, ...] = ()
    complete: bool = True
    note: str = ""
    use_gpu: bool = False
    cached: bool = False
    reference: str = REFERENCE
    rtol: float = RTOL
    atol: float = ATOL
    loss: float | None = None

    @property
    def agree(self) -> bool:
        """Every compared device agrees with the CPU (True when there was nothing to compare)."""
        return self.complete and all(r.ok for r in self.results)

    def to_dict(self) -> dict[str, Any]:
        """As plain JSON values: a difference that is not finite becomes None."""
        data = asdict(self)
        for result in data["results"]:
            for name, value in result.items():
                if isinstance(value, float) and not math.isfinite(value):
                    result[name] = None
        return {**data, "agree": self.agree}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> DeviceVerdict:
        data = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        data["results"] = tuple(DeviceResult(**r) for r in data.get("results", ()))
        return cls(**data)

    def describe(self) -> list[str]:
        """The verdict as lines of text."""
        lines = [r.describe() for r in self.results]
        if self.note:
            lines.append(self.note)
        return lines


def fixed_batch(seed: int = SEED) -> tuple[dict[str, np.ndarray], np.ndarray, np.ndarray]:
    """The initial weights (He-scaled, so activations stay near 1), images in [0, 1) and multi-hot labels.

    Weights whose names start with ``probe_`` feed the forward-only ReLU patterns and are not trained.
    """
    rng = np.random.default_rng(seed)

    def normal(shape: tuple[int, ...], fan_in: int) -> np.ndarray:
        return (rng.standard_normal(shape) * np.sqrt(2.0 / fan_in)).astype(np.float32)

    def small(n: int) -> np.ndarray:
        return rng.uniform(-0.1, 0.1, n).astype(np.float32)

    features = (SIZE // 2) ** 2 * 32
    weights = {
        "conv1_kernel": normal((3, 3, CHANNELS, 16), 9 * CHANNELS),
        "conv1_bias": small(16),
        "bn_gamma": (1.0 + small(16)).astype(np.float32),
        "bn_beta": small(16),
        "conv2_kernel": normal((3, 3, 16, 32), 9 * 16),
        "conv2_bias": small(32),
        "dense1_kernel": normal((features, 64), features),
        "dense1_bias": small(64),
        "dense2_kernel": normal((64, CLASSES), 64),
        "dense2_bias": small(CLASSES),
        "probe_conv_kernel": normal((3, 3, CHANNELS, 16), 9 * CHANNELS),
        "probe_conv_bias": small(16),
        "probe_dense_kernel": normal((features, 64), features),
        "probe_dense_bias": small(64),
    }
    images = rng.uniform(0.0, 1.0, (BATCH, SIZE, SIZE, CHANNELS)).astype(np.float32)
    labels = (rng.uniform(size=(BATCH, CLASSES)) < 0.3).astype(np.float32)
    return weights, images, labels


def forward(w: dict[str, Any], images: Any, operand: Callable[[Any], Any] = lambda t: t) -> dict[str, Any]:
    """The check network in training mode (batch statistics): its logits and the ReLU probes.

    The trained path uses ELU, whose derivative is continuous: with ReLU, a pre-activation within
    rounding distance of zero flips its unit's gradient between 0 and 1, and one flip moves an updated
    weight by several percent of the update, on a correct GPU too. ReLU's fused patterns are checked
    forward only, in probes of their own (separate ops, each with one consumer, so that they are fused).

    Args:
        w: the variables, by the names of :func:`fixed_batch`.
        images: a float32 batch (B, 16, 16, 3).
        operand: applied to every matmul and convolution operand (the tests round them to TF32).

    Returns:
        ``{"logits": ..., "probe_conv_relu": ..., "probe_dense_relu": ...}``.
    """
    import tensorflow as tf

    def conv(x: Any, kernel: Any, stride: int = 1) -> Any:
        return tf.nn.conv2d(operand(x), operand(kernel), stride, "SAME")

    def matmul(x: Any, kernel: Any) -> Any:
        return tf.matmul(operand(x), operand(kernel))

    # Conv2D + BiasAdd + Elu: fused into one kernel in graph mode.
    x = tf.nn.elu(tf.nn.bias_add(conv(images, w["conv1_kernel"]), w["conv1_bias"]))
    mean, variance = tf.nn.moments(x, axes=[0, 1, 2])
    x = tf.nn.batch_normalization(x, mean, variance, w["bn_beta"], w["bn_gamma"], 1e-3)
    # Conv2D then an add, as Keras 3 layers emit it.
    x = tf.nn.elu(conv(x, w["conv2_kernel"], 2) + w["conv2_bias"])
    flat = tf.reshape(x, [tf.shape(x)[0], -1])
    x = tf.nn.elu(matmul(flat, w["dense1_kernel"]) + w["dense1_bias"])
    return {
        "logits": matmul(x, w["dense2_kernel"]) + w["dense2_bias"],
        "probe_conv_relu": tf.nn.relu(
            tf.nn.bias_add(conv(images, w["probe_conv_kernel"]), w["probe_conv_bias"])
        ),
        # MatMul + BiasAdd + Relu over 2048 inputs: the pattern tensorflow-metal has computed wrong.
        "probe_dense_relu": tf.nn.relu(
            tf.nn.bias_add(matmul(flat, w["probe_dense_kernel"]), w["probe_dense_bias"])
        ),
    }


def run_step(device: str, *, jit: bool = False, operand: Callable[[Any], Any] | None = None) -> StepResult:
    """Runs the fixed batch forward and one SGD step on ``device``, in graph mode.

    Args:
        device: a TensorFlow device name ("/GPU:0", "/CPU:0").
        jit: compile the step with XLA.
        operand: see :func:`forward`.
    """
    import tensorflow as tf

    initial, images, labels = fixed_batch()
    start = time.perf_counter()
    with tf.device(device):
        w = {name: tf.Variable(value, name=name) for name, value in initial.items()}
        trained = {name: v for name, v in w.items() if not name.startswith("probe_")}
        x, y = tf.constant(images), tf.constant(labels)

        @tf.function(jit_compile=jit)
        def step() -> tuple[dict[str, Any], Any]:
            with tf.device(device):  # explicit inside the graph too: nothing is left to the placer
                with tf.GradientTape() as tape:
                    outputs = forward(w, x, operand or (lambda t: t))
                    loss = tf.reduce_mean(tf.nn.sigmoid_cross_entropy_with_logits(y, outputs["logits"]))
                grads = tape.gradient(loss, trained)
                for name, variable in trained.items():
                    variable.assign_sub(LEARNING_RATE * grads[name])
                return outputs, loss

        quiet = logging.getLogger("tensorflow")
        level = quiet.level
        quiet.setLevel(logging.ERROR)  # a fresh function per device is intended, not a retracing problem
        try:
            outputs, loss = step()
        finally:
            quiet.setLevel(level)
        result = StepResult(
            {k: v.numpy() for k, v in outputs.items()},
            {k: v.numpy() for k, v in trained.items()},
            float(loss),
            time.perf_counter() - start,
        )
    return result


def compare(
    device: str, reference: StepResult, result: StepResult, *, rtol: float = RTOL, atol: float = ATOL
) -> DeviceResult:
    """Compares ``result`` with the CPU's ``reference`` (see the module docstring for the tolerance)."""
    initial = fixed_batch()[0]

    def check(got: np.ndarray | None, want: np.ndarray, scale_of: np.ndarray) -> tuple[float, float]:
        tolerance = atol + rtol * float(np.max(np.abs(scale_of)))
        if got is None or got.shape != want.shape or not np.all(np.isfinite(got)):
            return float("inf"), tolerance
        return float(np.max(np.abs(got.astype(np.float64) - want))), tolerance

    def worst(checks: dict[str, tuple[float, float]]) -> str:
        return max(checks, key=lambda n: checks[n][0] / checks[n][1])

    outputs = {n: check(result.outputs.get(n), want, want) for n, want in reference.outputs.items()}
    weights = {
        n: check(result.weights.get(n), want, want - initial[n]) for n, want in reference.weights.items()
    }
    out_name, w_name = worst(outputs), worst(weights)
    ok = all(diff <= tol for diff, tol in (*outputs.values(), *weights.values()))
    return DeviceResult(device, ok, *outputs[out_name], out_name, *weights[w_name], w_name)


def gpu_names() -> list[str]:
    """The logical GPUs TensorFlow sees ("/GPU:0", ...); starts TensorFlow's runtime."""
    import tensorflow as tf

    return [d.name.replace("/device:", "/") for d in tf.config.list_logical_devices("GPU")]


def check_devices(
    devices: Sequence[str] | None = None,
    *,
    xla: bool | None = None,
    runner: Callable[..., StepResult] = run_step,
    rtol: float = RTOL,
    atol: float = ATOL,
    progress: Callable[[str], None] | None = None,
) -> DeviceVerdict:
    """Runs the fixed step on the CPU and on each of ``devices`` and compares them.

    Args:
        devices: the devices to check; default every GPU TensorFlow sees.
        xla: also check each device with the step XLA-compiled; default: on an NVIDIA GPU, where
            training compiles with XLA (see :mod:`yolol_tf.device`).
        runner: runs the step on one device (tests pass one that perturbs the numbers).
        rtol: relative tolerance (see the module docstring); ``atol`` the absolute one.
        progress: called with a line before each device runs (the CLI prints it on stderr).

    Returns:
        The verdict; ``use_gpu`` is set when there were GPUs and all agree.
    """
    if devices is None:
        devices = gpu_names()
    if xla is None:
        from yolol_tf.device import detect_device

        xla = bool(devices) and detect_device().kind == "cuda"
    say = progress or (lambda line: None)
    say(f"Running the check step on {REFERENCE} (reference)")
    reference = runner(REFERENCE)
    results = []
    for device in devices:
        for jit in (False, True) if xla else (False,):
            label = f"{device} (XLA)" if jit else device
            say(f"Running the check step on {label}")
            try:
                result = runner(device, jit=jit)
            except Exception as error:  # a plugin that fails is a device that cannot be trusted
                message = str(error).strip().splitlines()[0] if str(error).strip() else ""
                results.append(DeviceResult(label, False, error=f"{type(error).__name__}: {message}"))
                continue
            results.append(compare(label, reference, result, rtol=rtol, atol=atol))
    verdict = DeviceVerdict(tuple(results), rtol=rtol, atol=atol, loss=reference.loss)
    note = "" if devices else "No GPU: nothing to compare; training runs on the CPU."
    return replace(verdict, note=note, use_gpu=bool(devices) and verdict.agree)


__all__ = [
    "ATOL",
    "CHECK_VERSION",
    "REFERENCE",
    "RTOL",
    "DeviceResult",
    "DeviceVerdict",
    "StepResult",
    "check_devices",
    "compare",
    "fixed_batch",
    "forward",
    "run_step",
]
