"""Ablation of the training recipe: each change of a model's defaults switched off (or on), one at a time.

Trains ``yolol-tf train MODEL`` at its defaults on one store, then once more for every row of the ablation
with that one setting changed, and prints test mAP, macro F1 and wall time for each, and the change against
the defaults. Every run has the same seed, so a row differs from the defaults by its setting alone (and by
the run-to-run noise of multi-threaded CPU arithmetic: read differences under ~0.01 as noise).

    python benchmarks/realphoto.py --out /tmp/realphoto
    yolol-tf prepare /tmp/realphoto/data.yaml --out /tmp/rp-store --size 64
    python benchmarks/bench_recipe.py --data /tmp/rp-store --model cnn
    python benchmarks/bench_recipe.py --model cnn          # the embedded demo data
    python benchmarks/bench_recipe.py --data STORE --model cnn --rows "epochs=10;augment=0.0"

A row is ``key=value[,key=value]`` (YAML values); ``--base`` changes the defaults every row starts from.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import yaml

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

# The cnn's defaults against the recipe before them, and each part of the recipe undone or tried.
DEFAULT_ROWS = (
    "epochs=10,label_smoothing=0,mixed_precision='off'",  # the cnn's defaults before the recipe was measured
    "epochs=10",
    "label_smoothing=0",
    "mixed_precision='off'",  # quoted: YAML reads a bare off as False
    "augment=0.0",
    "ema_decay=0.99",
    "warmup_epochs=1",
    "mixup=0.3",
    "cutmix=0.3",
)


def parse_row(row: str) -> dict:
    """``"a=1,b=x"`` -> ``{"a": 1, "b": "x"}`` (values read as YAML)."""
    out = {}
    for part in filter(None, (p.strip() for p in row.split(","))):
        key, _, value = part.partition("=")
        out[key.strip()] = yaml.safe_load(value)
    return out


def run_once(overrides: dict, out: Path) -> dict:
    """One training at the defaults plus ``overrides``: wall seconds and test figures."""
    from yolol_tf.training import load_config, train

    config = load_config(None, {**overrides, "out": str(out)})
    start = time.perf_counter()
    run = train(config, verbose=0)
    seconds = time.perf_counter() - start
    metrics = json.loads((run / "metrics.json").read_text())
    return {"seconds": seconds, "map": metrics["test"]["map"], "f1": metrics["test"]["f1_macro"],
            "precision": metrics.get("precision", "")}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=None, help="a store or data.yaml (default: the embedded demo data)")
    parser.add_argument("--model", default="cnn")
    parser.add_argument("--base", default="", help="settings every run starts from, as a row")
    parser.add_argument("--rows", default=";".join(DEFAULT_ROWS), help="rows separated by ';'")
    args = parser.parse_args()

    base = {"model": args.model, "data": args.data, **parse_row(args.base)}
    rows = [r for r in args.rows.split(";") if r.strip()]
    results = []
    with tempfile.TemporaryDirectory(prefix="bench-recipe-") as tmp:
        # A one-step run first: it leaves the per-machine bfloat16 probe cached, so no timed run pays for it.
        run_once({**base, "epochs": 1, "steps_per_epoch": 1}, Path(tmp) / "warmup")
        for i, row in enumerate(["", *rows]):
            result = run_once({**base, **parse_row(row)}, Path(tmp) / f"run{i}")
            results.append((row or "defaults", result))
            print(
                f"{row or 'defaults'}: test mAP {result['map']:.4f} in {result['seconds']:.0f} s", flush=True
            )

    ref = results[0][1]
    print(
        f"\n{'run':<28}{'test mAP':>10}{'vs defaults':>13}{'macro F1':>10}{'wall s':>8}{'x time':>8}  precision"
    )
    for name, r in results:
        print(
            f"{name:<28}{r['map']:>10.4f}{r['map'] - ref['map']:>+13.4f}{r['f1']:>10.4f}{r['seconds']:>8.0f}"
            f"{r['seconds'] / ref['seconds']:>8.2f}  {r['precision']}"
        )


if __name__ == "__main__":
    main()
