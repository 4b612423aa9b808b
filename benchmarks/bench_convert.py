"""Conversion throughput: YOLO dataset -> crop store, against plain OpenCV decoding of the same images.

Writes a dataset of JPEG images with several boxes each into a temporary folder, then measures in the same
process:

- baseline: ``cv2.imread`` of every image, one process (what a plain loop over the dataset costs);
- conversion: ``yolol_tf.data.prepare`` with all cores (decode, crop, letterbox, TFRecord write, index);
- conversion with one worker, for reference.

The goal is conversion at 0.7x or more of the baseline's images/s.

    python benchmarks/bench_convert.py [--images 300] [--width 640] [--height 480] [--size 64]
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import cv2  # noqa: E402
import numpy as np  # noqa: E402
import yaml  # noqa: E402

NUM_CLASSES = 10


def write_dataset(root: Path, images: int, width: int, height: int, seed: int = 0) -> Path:
    """Noisy backgrounds with 3-8 filled rectangles and ellipses each; returns the data.yaml."""
    rng = np.random.default_rng(seed)
    for split, count in (("train", images - images // 5), ("val", images // 5)):
        (root / "images" / split).mkdir(parents=True)
        (root / "labels" / split).mkdir(parents=True)
        for i in range(count):
            image = rng.integers(0, 255, (height // 8, width // 8, 3), dtype=np.uint8)
            image = cv2.resize(image, (width, height), interpolation=cv2.INTER_CUBIC)
            lines = []
            for _ in range(rng.integers(3, 9)):
                w, h = rng.integers(width // 16, width // 3), rng.integers(height // 16, height // 3)
                x, y = rng.integers(0, width - w), rng.integers(0, height - h)
                cls = int(rng.integers(NUM_CLASSES))
                colour = tuple(int(c) for c in rng.integers(0, 255, 3))
                if cls % 2:
                    cv2.rectangle(image, (int(x), int(y)), (int(x + w), int(y + h)), colour, -1)
                else:
                    cv2.ellipse(
                        image,
                        (int(x + w // 2), int(y + h // 2)),
                        (int(w // 2), int(h // 2)),
                        0,
                        0,
                        360,
                        colour,
                        -1,
                    )
                lines.append(
                    f"{cls} {(x + w / 2) / width:.6f} {(y + h / 2) / height:.6f} {w / width:.6f} {h / height:.6f}"
                )
            cv2.imwrite(str(root / "images" / split / f"{i:05d}.jpg"), image, [cv2.IMWRITE_JPEG_QUALITY, 90])
            (root / "labels" / split / f"{i:05d}.txt").write_text("\n".join(lines) + "\n")
    names = [f"class{i}" for i in range(NUM_CLASSES)]
    (root / "data.yaml").write_text(
        yaml.safe_dump({"path": ".", "train": "images/train", "val": "images/val", "names": names})
    )
    return root / "data.yaml"


def decode_all(paths: list[Path]) -> tuple[float, float]:
    """Wall and CPU seconds for cv2.imread of every image, one process."""
    start, cpu = time.perf_counter(), time.process_time()
    for p in paths:
        cv2.imread(str(p), cv2.IMREAD_COLOR)
    return time.perf_counter() - start, time.process_time() - cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=300)
    parser.add_argument("--width", type=int, default=640)
    parser.add_argument("--height", type=int, default=480)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3, help="best of this many runs of each measurement")
    args = parser.parse_args()

    import tensorflow as tf  # noqa: F401  imported once up front: a one-time cost, not conversion work

    from yolol_tf.data.store import cpu_count, prepare

    tmp = Path(tempfile.mkdtemp(prefix="bench_convert_"))
    cores = cpu_count()
    try:
        data = write_dataset(tmp / "ds", args.images, args.width, args.height)
        paths = sorted((tmp / "ds" / "images").rglob("*.jpg"))
        decode_all(paths)  # warm the page cache so every measurement reads from memory
        base, t_all, t_one = [], [], []
        # Interleaved repeats, best of each: on a shared machine every figure then sees similar load.
        for r in range(args.repeats):
            base.append(decode_all(paths))
            for workers, times in ((None, t_all), (1, t_one)):
                start, cpu = time.perf_counter(), time.process_time()
                out = tmp / f"store-{workers}-{r}"
                store = prepare(data, out, size=args.size, workers=workers, progress=False)
                times.append((time.perf_counter() - start, time.process_time() - cpu))
        crops = sum(1 for _ in open(store / "index.csv")) - 1
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    n = len(paths)
    print(
        f"\n{n} JPEG images {args.width}x{args.height} -> {crops} crops of {args.size}x{args.size}, {cores} cores"
    )
    rows = [
        ("baseline  cv2.imread, 1 process", min(base), None),
        (f"prepare   workers={cores} (all cores)", min(t_all), crops),
        ("prepare   workers=1 (in-process)", min(t_one), crops),
    ]
    for name, (seconds, _), made in rows:
        per_crop = f"{made / seconds:8.1f} crops/s" if made else " " * 16
        print(f"{name:<36} {n / seconds:7.1f} images/s {per_crop}  ratio {min(base)[0] / seconds:.2f}x")
    print("goal: prepare with all cores at 0.7x or more of the baseline's images/s")
    # CPU time does not depend on what else the machine runs: the cost of conversion against decoding.
    decode_cpu, convert_cpu = min(c for _, c in base), min(c for _, c in t_one)
    print(
        f"CPU per image: decode {1000 * decode_cpu / n:.2f} ms, conversion {1000 * convert_cpu / n:.2f} ms "
        f"({convert_cpu / decode_cpu:.2f}x); with {cores} idle cores the ratio would be about "
        f"{cores * decode_cpu / convert_cpu:.2f}x"
    )


if __name__ == "__main__":
    main()
