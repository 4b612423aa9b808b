"""The device check: one fixed training step compared across devices, `yolol-tf doctor`, and the check
before training (fall back to the CPU, cache the verdict). No GPU needed: a second logical CPU device and
runners that return perturbed numbers stand in for a GPU that agrees or disagrees."""

from __future__ import annotations

import json
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from yolol_tf.doctor import compare as cmp
from yolol_tf.doctor import gate
from yolol_tf.errors import UserError


@pytest.fixture(scope="module")
def cpu_step() -> cmp.StepResult:
    """The real step on the CPU, computed once; stub runners return perturbed copies of it."""
    return cmp.run_step("/CPU:0")


def perturbed(step: cmp.StepResult, *, output: float = 0.0, weight: float = 0.0) -> cmp.StepResult:
    """``step`` with one logit moved by ``output`` x the logits' scale and one weight of dense1 moved by
    ``weight`` x the scale of its update."""
    outputs = {k: v.copy() for k, v in step.outputs.items()}
    weights = {k: v.copy() for k, v in step.weights.items()}
    outputs["logits"][0, 0] += output * np.abs(step.outputs["logits"]).max()
    update = step.weights["dense1_kernel"] - cmp.fixed_batch()[0]["dense1_kernel"]
    weights["dense1_kernel"][5, 3] += weight * np.abs(update).max()
    return replace(step, outputs=outputs, weights=weights)


def runner_for(step: cmp.StepResult, **perturbation: float):
    """A runner: the real CPU step on /CPU:0, the perturbed one on any other device."""

    def run(device: str, jit: bool = False) -> cmp.StepResult:
        return step if device == cmp.REFERENCE else perturbed(step, **perturbation)

    return run


# --- the comparison --------------------------------------------------------------------------------


def test_a_device_that_computes_what_the_cpu_computes_agrees(cpu_step: cmp.StepResult) -> None:
    verdict = cmp.check_devices(["/GPU:0"], xla=True, runner=runner_for(cpu_step, output=0.002, weight=0.002))
    assert verdict.agree and verdict.use_gpu
    assert [r.device for r in verdict.results] == ["/GPU:0", "/GPU:0 (XLA)"]
    result = verdict.results[0]
    assert result.output_diff == pytest.approx(0.002 * np.abs(cpu_step.outputs["logits"]).max(), rel=1e-3)
    assert result.output_diff < result.output_tolerance and result.weight_name == "dense1_kernel"


@pytest.mark.parametrize(
    ("perturbation", "what"), [({"output": 0.05}, "logits"), ({"weight": 0.05}, "dense1_kernel")]
)
def test_a_device_off_by_more_than_the_tolerance_disagrees_and_is_named(
    cpu_step: cmp.StepResult, perturbation: dict, what: str
) -> None:
    verdict = cmp.check_devices(["/GPU:0"], xla=False, runner=runner_for(cpu_step, **perturbation))
    assert not verdict.agree and not verdict.use_gpu
    (result,) = verdict.results
    assert not result.ok and what in (result.output_name, result.weight_name)
    assert "DISAGREES" in result.describe() and what in result.describe()


def test_nan_wrong_shapes_and_a_failing_device_all_disagree(cpu_step: cmp.StepResult) -> None:
    nan = replace(cpu_step, outputs={**cpu_step.outputs, "logits": cpu_step.outputs["logits"] * np.nan})
    result = cmp.compare("/GPU:0", cpu_step, nan)
    assert not result.ok and "not finite" in result.describe()
    as_json = json.dumps(cmp.DeviceVerdict((result,)).to_dict(), allow_nan=False)  # strict JSON
    assert cmp.DeviceVerdict.from_dict(json.loads(as_json)).results[0].output_diff is None
    short = replace(cpu_step, weights={**cpu_step.weights, "conv1_bias": cpu_step.weights["conv1_bias"][:3]})
    assert not cmp.compare("/GPU:0", cpu_step, short).ok

    def broken(device: str, jit: bool = False) -> cmp.StepResult:
        if device != cmp.REFERENCE:
            raise RuntimeError("No registered '_FusedMatMul' OpKernel for 'GPU' devices\nmore detail")
        return cpu_step

    verdict = cmp.check_devices(["/GPU:0"], xla=False, runner=broken)
    assert not verdict.agree
    assert verdict.results[0].error == "RuntimeError: No registered '_FusedMatMul' OpKernel for 'GPU' devices"


def test_the_tolerance_passes_tf32_rounding_and_xla_with_room_to_spare(cpu_step: cmp.StepResult) -> None:
    """The module docstring's figures: TF32 (NVIDIA's default for float32 matmuls and convolutions) moves
    the step by about 1e-3 of each tensor's scale, XLA by about 1e-5; both must pass well inside RTOL."""
    import tensorflow as tf

    def tf32(t: tf.Tensor) -> tf.Tensor:  # round to a 10-bit mantissa, the gradient passing straight through
        bits = tf.bitcast(t, tf.int32)
        rounded = tf.bitcast(
            tf.bitwise.bitwise_and(bits + 0x1000, tf.constant(~0x1FFF, tf.int32)), tf.float32
        )
        return t + tf.stop_gradient(rounded - t)

    for step, most in ((cmp.run_step("/CPU:0", operand=tf32), 0.3), (cmp.run_step("/CPU:0", jit=True), 0.01)):
        result = cmp.compare("/GPU:0", cpu_step, step)
        assert result.ok
        assert result.output_diff / result.output_tolerance < most
        assert result.weight_diff / result.weight_tolerance < most


def test_two_logical_cpu_devices_agree_and_a_perturbed_one_does_not(run_python) -> None:
    """The real placement path: variables and the step's ops on /CPU:1, compared with /CPU:0."""
    done = run_python("-m", "tests.support.device_check")
    assert done.returncode == 0, done.stderr[-2000:]
    same, wrong = json.loads(done.stdout.strip().splitlines()[-1])
    assert same["agree"] and [r["device"] for r in same["results"]] == ["/CPU:1", "/CPU:1 (XLA)"]
    assert same["results"][0]["output_diff"] < 1e-4
    assert not wrong["agree"] and wrong["results"][0]["output_name"] == "probe_dense_relu"


# --- before training: fall back, cache ---------------------------------------------------------------


class Calls:
    """A stand-in for the check process and for hiding the GPUs, counting its calls."""

    def __init__(self, verdict: cmp.DeviceVerdict):
        self.verdict, self.checks, self.hides = verdict, 0, 0

    def run_check(self) -> cmp.DeviceVerdict:
        self.checks += 1
        return self.verdict

    def hide(self) -> None:
        self.hides += 1


def test_a_disagreeing_gpu_makes_training_fall_back_to_the_cpu_and_the_verdict_is_reused(
    cpu_step: cmp.StepResult, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    calls = Calls(cmp.check_devices(["/GPU:0"], xla=False, runner=runner_for(cpu_step, output=0.5)))
    args = dict(
        gpus=["/GPU:0 Apple M2 (METAL)"], cache_dir=tmp_path, run_check=calls.run_check, hide=calls.hide
    )
    first = gate.check_devices_before_training(**args)
    assert not first.use_gpu and not first.cached and (calls.checks, calls.hides) == (1, 1)
    warning = capsys.readouterr().err
    assert "training runs on the CPU" in warning and "DISAGREES" in warning and "yolol-tf doctor" in warning
    assert len(list(tmp_path.glob("*.json"))) == 1, "the verdict was not cached"

    again = gate.check_devices_before_training(**args)
    assert again.cached and not again.use_gpu, "a cached disagreement must still fall back"
    assert (calls.checks, calls.hides) == (1, 2), "the cached verdict was measured again"


def test_an_agreeing_gpu_is_used_and_checked_once(cpu_step: cmp.StepResult, tmp_path: Path) -> None:
    calls = Calls(cmp.check_devices(["/GPU:0"], xla=False, runner=runner_for(cpu_step)))
    args = dict(gpus=["/GPU:0 NVIDIA H200"], cache_dir=tmp_path, run_check=calls.run_check, hide=calls.hide)
    assert gate.check_devices_before_training(**args).use_gpu
    assert gate.check_devices_before_training(**args).cached
    assert (calls.checks, calls.hides) == (1, 0)


def test_a_check_that_crashed_falls_back_but_is_not_cached(tmp_path: Path) -> None:
    calls = Calls(cmp.DeviceVerdict(complete=False, note="the device check process failed (exit status -6)"))
    args = dict(gpus=["/GPU:0"], cache_dir=tmp_path, run_check=calls.run_check, hide=calls.hide)
    for _ in range(2):
        assert not gate.check_devices_before_training(**args).use_gpu
    assert (calls.checks, calls.hides) == (2, 2) and not list(tmp_path.iterdir())


def test_without_a_gpu_or_when_switched_off_nothing_is_checked(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = Calls(cmp.DeviceVerdict())
    args = dict(cache_dir=tmp_path, run_check=calls.run_check, hide=calls.hide)
    assert not gate.check_devices_before_training(gpus=[], **args).use_gpu
    monkeypatch.setenv(gate.SKIP_ENV, "off")
    assert gate.check_devices_before_training(gpus=["/GPU:0"], **args).use_gpu
    assert (calls.checks, calls.hides) == (0, 0) and not list(tmp_path.iterdir())


def test_the_cache_key_covers_machine_tensorflow_plugin_and_device(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import tensorflow as tf

    key = gate.cache_key(["/GPU:0 NVIDIA H200"])
    assert key["tensorflow"] == tf.__version__ and key["host"] and key["devices"] == ["/GPU:0 NVIDIA H200"]
    assert key["check"] == cmp.CHECK_VERSION and key["rtol"] == cmp.RTOL
    path = gate.cache_file(key, tmp_path)
    assert gate.cache_file(gate.cache_key(["/GPU:0 NVIDIA H200"]), tmp_path) == path, "not stable"
    assert gate.cache_file(gate.cache_key(["/GPU:0 NVIDIA A100"]), tmp_path) != path
    for name, value in (("tensorflow", "2.18.0"), ("host", "other"), ("driver", "575.57")):
        assert gate.cache_file({**key, name: value}, tmp_path) != path, name
    monkeypatch.setattr(gate, "plugin_versions", lambda: {"tensorflow-metal": "1.2.0"})
    assert gate.cache_file(gate.cache_key(["/GPU:0 NVIDIA H200"]), tmp_path) != path

    gate.write_cached(
        path, key, cmp.DeviceVerdict(results=(cmp.DeviceResult("/GPU:0", True, 0, 1, "x", 0, 1, "y"),))
    )
    assert gate.read_cached(path, key).results[0].device == "/GPU:0"
    assert gate.read_cached(path, {**key, "tensorflow": "9.9"}) is None, "a file with another key was used"
    assert gate.nvidia_driver(tmp_path / "missing") is None


def test_the_check_process_reports_back(tmp_path: Path) -> None:
    verdict = gate.check_in_child()
    assert verdict.complete and verdict.results == () and "No GPU" in verdict.note and verdict.loss > 0


def test_hiding_is_refused_once_tensorflow_has_started_with_the_gpu(monkeypatch: pytest.MonkeyPatch) -> None:
    import tensorflow as tf

    def started(devices: list, kind: str) -> None:
        raise RuntimeError("Visible devices cannot be modified after being initialized")

    monkeypatch.setattr(tf.config, "set_visible_devices", started)
    monkeypatch.setattr(tf.config, "get_visible_devices", lambda kind=None: ["GPU:0"])
    with pytest.raises(UserError, match="already started"):
        gate.hide_gpus()


def test_a_hidden_gpu_is_not_trained_on_with_gpu_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    import tensorflow as tf

    from yolol_tf.device import choose, detect_device

    monkeypatch.setattr(tf.config, "list_physical_devices", lambda kind=None: ["/physical_device:GPU:0"])
    monkeypatch.setattr(tf.config, "get_visible_devices", lambda kind=None: [])
    chosen = choose(detect_device())
    assert chosen.device.kind == "cpu" and (chosen.policy, chosen.jit) == ("float32", False)


def test_train_checks_the_devices_before_anything_else(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, tiny_train_config
) -> None:
    from yolol_tf.training import train

    class Checked(Exception):
        pass

    def check() -> None:
        raise Checked

    monkeypatch.setattr(gate, "check_devices_before_training", check)
    with pytest.raises(Checked):
        train(tiny_train_config(tmp_path, tmp_path / "run"))  # no data is read before the check
    assert not (tmp_path / "run").exists()


# --- yolol-tf doctor ---------------------------------------------------------------------------------


def test_doctor_json_is_the_only_thing_on_stdout(run_cli) -> None:
    done = run_cli("doctor", "--format", "json")
    assert done.returncode == 0, done.stderr[-2000:]
    report = json.loads(done.stdout)  # fails on any stray line
    import tensorflow as tf

    assert report["ok"] and report["versions"]["tensorflow"] == tf.__version__
    assert report["devices"]["GPU"] == [] and report["defaults"]["precision"] == "float32"
    assert report["check"]["loss"] > 0 and "No GPU" in report["check"]["note"]
    assert "Running the check step on /CPU:0" in done.stderr


def test_doctor_exits_non_zero_when_a_device_disagrees(
    cpu_step: cmp.StepResult, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    from yolol_tf.cli import main
    from yolol_tf.doctor import report

    def check_devices(devices=None, progress=None):
        return cmp.check_devices(["/GPU:0"], xla=False, runner=runner_for(cpu_step, weight=0.3))

    monkeypatch.setattr(report, "check_devices", check_devices)
    assert main(["doctor"]) == 1
    text = capsys.readouterr().out
    assert "/GPU:0: DISAGREES with the CPU" in text and "falls back to the CPU" in text
    assert text.rstrip().endswith("Result: a device DISAGREES with the CPU")
    assert main(["doctor", "--format", "json"]) == 1
    assert json.loads(capsys.readouterr().out)["ok"] is False
    assert main(["doctor", "--format", "xml"]) == 2
    assert "--format must be one of text, json. Received: format='xml'" in capsys.readouterr().err


def test_doctor_still_reports_versions_when_tensorflow_fails_to_import(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from yolol_tf.doctor.report import diagnose, format_report

    monkeypatch.setitem(
        sys.modules, "tensorflow", None
    )  # import tensorflow now raises, as a bad plugin makes it
    result = diagnose()
    assert not result.ok and "tensorflow" in result.tensorflow_error
    text = format_report(result)
    assert "TensorFlow failed to import" in text and result.versions["numpy"] in text


@pytest.mark.parametrize(
    ("metal", "tensorflow", "warned"),
    [("1.2.0", "2.18.1", False), ("1.2.0", "2.21.0", True), ("1.1.0", "2.16.2", False), ("1.1.0", "2.18.0", True),
     ("0.5.0", "2.9.2", False), ("9.0.0", "2.30.0", True), (None, "2.21.0", False)],
)  # fmt: skip
def test_doctor_warns_of_a_metal_plugin_documented_for_another_tensorflow(
    metal: str | None, tensorflow: str, warned: bool
) -> None:
    from yolol_tf.doctor.report import metal_warnings

    assert bool(metal_warnings({"tensorflow-metal": metal, "tensorflow": tensorflow})) == warned
