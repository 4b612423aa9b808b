"""Regenerates the files in assets/: the README's pictures of a demo run, and the small files examples use.

    python assets/make_assets.py

Trains the demo cnn preset (experiments/demo-cnn.yaml) into a temporary run folder, copies its loss and
metric curves, per-class F1 and validation prediction grid here, and writes:

- ``space-cnn.yaml``: an example ``yolol-tf tune cnn --space assets/space-cnn.yaml`` file;
- ``photos/``: three demo test images for ``yolol-tf predict RUN assets/photos``;
- ``labels/``: their YOLO label files, for ``--boxes assets/labels``.

Every figure shown comes from this run; rerun the script after a change that moves them.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
HERE = Path(__file__).resolve().parent
PLOTS = ("loss.png", "metrics.png", "per_class_f1.png", "val_predictions.png")
PHOTOS = 3
SPACE = """\
# Narrows `yolol-tf tune cnn`'s search space: yolol-tf tune cnn --space assets/space-cnn.yaml
learning_rate: {min: 1.0e-3, max: 1.0e-2}   # a range (log scale, as the default)
width: [16, 32]                             # a list: choose among these
depths: ["1-1-1", "2-2-2"]
loss: [bce, asl]
dropout: 0.2                                # a value: fixed
"""


def main() -> int:
    from yolol_tf.data import demo_data_path
    from yolol_tf.training import load_config, train

    with tempfile.TemporaryDirectory(prefix="yolol-tf-assets-") as tmp:
        config = load_config(HERE.parent / "experiments" / "demo-cnn.yaml", {"out": str(Path(tmp) / "run")})
        run = train(config, verbose=2)
        for name in PLOTS:
            shutil.copyfile(run / "plots" / name, HERE / name)
    demo = demo_data_path().parent
    for folder in ("photos", "labels"):
        shutil.rmtree(HERE / folder, ignore_errors=True)
        (HERE / folder).mkdir()
    for image in sorted((demo / "images" / "test").glob("*.jpg"))[:PHOTOS]:
        shutil.copyfile(image, HERE / "photos" / image.name)
        shutil.copyfile(demo / "labels" / "test" / f"{image.stem}.txt", HERE / "labels" / f"{image.stem}.txt")
    (HERE / "space-cnn.yaml").write_text(SPACE, encoding="utf-8")
    print(f"Wrote {', '.join(PLOTS)}, space-cnn.yaml, photos/ and labels/ in {HERE}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
