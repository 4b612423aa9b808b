"""mixed_bfloat16 on a CPU with bfloat16 instructions: chosen from a cached speed probe, never on a guess; and our
models stay float32 where it matters (normalisation statistics, logits, loss)."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import keras
import numpy as np
import pytest

from yolol_tf.device import Device, choose, prefer_bf16
from yolol_tf.doctor import bf16
from yolol_tf.doctor.bf16 import Bf16Verdict, Workload

CPU_BF16 = Device("cpu", "CPU test", ("avx2", "avx512f", "avx512_bf16"))
WORK = Workload("cnn", {"width": 8}, (64, 64, 3), 3, 32)


@pytest.fixture
def probes(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    """A fake probe returning the timings it is given, counting its calls; the cache in ``tmp_path``."""
    monkeypatch.delenv(bf16.SKIP_ENV, raising=False)
    monkeypatch.setenv("YOLOL_TF_CACHE", str(tmp_path))

    class Probe:
        calls: list[Workload] = []
        timings = (1.0, 0.7)

        def __call__(self, workload: Workload) -> Bf16Verdict:
            self.calls.append(workload)
            return Bf16Verdict(*self.timings)

    probe = Probe()
    probe.calls = []
    return probe


def test_bfloat16_is_chosen_only_when_it_is_faster_by_the_margin() -> None:
    assert bf16.decide(1.0, 0.8) == "mixed_bfloat16"  # 1.25x
    assert bf16.decide(1.0, 1 / 1.1) == "mixed_bfloat16"  # exactly the margin
    assert bf16.decide(1.0, 0.95) == "float32"  # 1.05x: not worth bfloat16's coarser numbers
    assert bf16.decide(0.8, 1.0) == "float32"  # slower (the AMX Xeon's 0.8x)
    verdict = Bf16Verdict(1.0, 0.5)
    assert verdict.speedup == 2.0 and verdict.policy == "mixed_bfloat16"
    assert Bf16Verdict.from_dict(verdict.to_dict()) == verdict


def test_auto_on_a_bf16_cpu_probes_once_and_reuses_the_cached_verdict(probes, tmp_path: Path) -> None:
    chosen = prefer_bf16(choose(CPU_BF16), "auto", WORK, probes)
    assert chosen.policy == "mixed_bfloat16" and chosen.bf16_speedup == pytest.approx(1 / 0.7, rel=1e-3)
    assert "bfloat16 probe: 1.43x" in chosen.describe()
    assert prefer_bf16(choose(CPU_BF16), "auto", WORK, probes) == chosen
    assert probes.calls == [WORK], "the second run reads the cache"

    (cached,) = (tmp_path / "device-checks").iterdir()
    assert cached.name.startswith("bf16-") and cached.suffix == ".json", (
        "beside the GPU verdicts, no temp files"
    )
    data = json.loads(cached.read_text())
    assert data["key"]["model"] == "cnn" and data["key"]["batch_size"] == 32
    assert data["verdict"]["policy"] == "mixed_bfloat16"

    probes.timings = (1.0, 1.0)
    assert prefer_bf16(choose(CPU_BF16), "auto", replace(WORK, batch_size=64), probes).policy == "float32"
    assert len(probes.calls) == 2, "another batch size is another workload"


def test_the_cache_key_names_the_cpu_tensorflow_and_workload() -> None:
    key = bf16.cache_key(WORK, "CPU test", CPU_BF16.cpu_features)
    assert key["cpu"] == "CPU test" and "avx512_bf16" in key["features"] and key["tensorflow"]
    files = {bf16.cache_file(key, "c").name}
    for changed in (
        bf16.cache_key(replace(WORK, model="resnet50"), "CPU test", CPU_BF16.cpu_features),
        bf16.cache_key(replace(WORK, model_options={"width": 16}), "CPU test", CPU_BF16.cpu_features),
        bf16.cache_key(replace(WORK, input_shape=(32, 32, 3)), "CPU test", CPU_BF16.cpu_features),
        bf16.cache_key(replace(WORK, batch_size=16), "CPU test", CPU_BF16.cpu_features),
        bf16.cache_key(WORK, "Another CPU", CPU_BF16.cpu_features),
        bf16.cache_key(WORK, "CPU test", ("avx512_bf16", "amx_bf16")),
    ):
        files.add(bf16.cache_file(changed, "c").name)
    assert len(files) == 7
    # A cache written for another key is not read for this one.
    assert bf16.read_cached(Path("c") / "missing.json", key) is None


def test_explicit_precision_a_gpu_or_no_bf16_flag_never_probe(probes) -> None:
    plain_cpu = Device("cpu", "CPU", ("avx2", "avx512f"))
    assert prefer_bf16(choose(CPU_BF16, "off"), "off", WORK, probes).policy == "float32"
    assert prefer_bf16(choose(CPU_BF16, "bfloat16"), "bfloat16", WORK, probes).policy == "mixed_bfloat16"
    assert prefer_bf16(choose(plain_cpu), "auto", WORK, probes).policy == "float32"
    assert prefer_bf16(choose(Device("cuda", "GPU")), "auto", WORK, probes).policy == "mixed_float16"
    assert prefer_bf16(choose(CPU_BF16), "auto", None, probes).policy == "float32"
    assert probes.calls == []


def test_a_failed_probe_or_the_switch_means_float32_and_nothing_cached(probes, monkeypatch, tmp_path) -> None:
    assert prefer_bf16(choose(CPU_BF16), "auto", WORK, lambda workload: None).policy == "float32"
    assert (
        not any((tmp_path / "device-checks").glob("bf16-*"))
        if (tmp_path / "device-checks").exists()
        else True
    )
    monkeypatch.setenv(bf16.SKIP_ENV, "off")
    assert prefer_bf16(choose(CPU_BF16), "auto", WORK, probes).policy == "float32" and probes.calls == []


def test_the_doctor_lists_cached_probes(probes) -> None:
    from yolol_tf.doctor.report import bf16_lines

    prefer_bf16(choose(CPU_BF16), "auto", WORK, probes)
    lines = bf16_lines(bf16.cached_verdicts(), CPU_BF16.cpu_features)
    assert any(
        "cnn" in line and "64x64x3 batch 32" in line and "1.43x -> mixed_bfloat16" in line for line in lines
    )
    assert bf16_lines([], ("avx2",)) == []


def test_under_mixed_bfloat16_statistics_logits_and_loss_stay_float32() -> None:
    from types import SimpleNamespace

    from yolol_tf.models import build_model
    from yolol_tf.training import TrainConfig, compile_model

    previous = keras.mixed_precision.global_policy().name
    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    try:
        model = build_model("cnn", (32, 32, 3), 3, width=4, depths=(1,))
        info = SimpleNamespace(single_label=False, num_classes=3, counts={"train": 8})
        compile_model(model, TrainConfig(model="cnn", batch_size=4), info, jit_compile=False)
        x = np.random.default_rng(0).integers(0, 256, (4, 32, 32, 3)).astype("float32")
        y = np.eye(3, dtype="float32")[[0, 1, 2, 0]]
        model.train_on_batch(x, y)
        norms = [layer for layer in model.layers if hasattr(layer, "moving_mean")]
        assert norms and any(layer.compute_dtype == "bfloat16" for layer in model.layers)
        for layer in norms:
            assert layer.moving_mean.dtype == layer.moving_variance.dtype == "float32", layer.name
            assert np.isfinite(np.array(layer.moving_variance)).all()
        logits = model(x, training=False)
        assert keras.backend.standardize_dtype(logits.dtype) == "float32"
        loss = model.loss(y, logits)
        assert keras.backend.standardize_dtype(loss.dtype) == "float32"
    finally:
        keras.mixed_precision.set_global_policy(previous)
