"""Conversion throughput: YOLO dataset -> crop store, against OpenCV decoding the same images on all cores.

Writes a dataset of JPEG images with several boxes each into a temporary folder, then measures, interleaved
and best of ``--repeats``:

- baseline: ``cv2.imread`` of every image in a process pool with one process per core (already started, so
  only decoding is timed): the most a converter that must decode every image could reach;
- command: ``yolol-tf prepare DATA --out STORE`` in a subprocess, as a user runs it, start to exit
  (interpreter start, imports, dataset listing, worker start, conversion, writing);
- prepare(): ``yolol_tf.data.prepare`` called in this process with all cores;
- for reference, ``cv2.imread`` in one process and ``prepare(workers=1)``.

The goal is the whole command at 0.7x or more of the baseline's images/s.

    python benchmarks/bench_convert.py [--images 300] [--width 640] [--height 480] [--size 64]
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

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


def _decode(path: str) -> tuple[int, ...]:
    image = cv2.imread(path, cv2.IMREAD_COLOR)
    return image.shape  # the shape, not the pixels: the baseline must not pay for sending images back


def _init_decoder() -> None:
    cv2.setNumThreads(1)  # one image per process at a time, as prepare's workers do


def decode_serial(paths: list[str]) -> tuple[float, float]:
    """Wall and CPU seconds for cv2.imread of every image, one process."""
    start, cpu = time.perf_counter(), time.process_time()
    for p in paths:
        _decode(p)
    return time.perf_counter() - start, time.process_time() - cpu


def decode_pool(pool: Any, paths: list[str], workers: int) -> float:
    """Wall seconds for cv2.imread of every image on ``pool``'s processes."""
    start = time.perf_counter()
    pool.map(_decode, paths, chunksize=max(1, len(paths) // (workers * 8)))
    return time.perf_counter() - start


def run_command(data: Path, out: Path, size: int) -> float:
    """Wall seconds of ``yolol-tf prepare`` in a fresh process, start to exit."""
    script = Path(sys.executable).with_name("yolol-tf")
    command = [str(script)] if script.is_file() else [sys.executable, "-m", "yolol_tf"]
    # This checkout's yolol_tf, whatever the environment has installed.
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, (str(REPO), os.environ.get("PYTHONPATH")))),
    }
    start = time.perf_counter()
    done = subprocess.run(
        [*command, "prepare", str(data), "--out", str(out), "--size", str(size)],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    seconds = time.perf_counter() - start
    if done.returncode:
        sys.exit(f"yolol-tf prepare failed ({done.returncode}):\n{done.stderr}")
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=300)
    parser.add_argument("--width", type=int, default=640)
    parser.add_argument("--height", type=int, default=480)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3, help="best of this many runs of each measurement")
    args = parser.parse_args()

    from yolol_tf.data.store import cpu_count, prepare

    tmp = Path(tempfile.mkdtemp(prefix="bench_convert_"))
    cores = cpu_count()
    # spawn: a pool of its own, independent of the forkserver that prepare() starts.
    pool = multiprocessing.get_context("spawn").Pool(cores, initializer=_init_decoder)
    try:
        data = write_dataset(tmp / "ds", args.images, args.width, args.height)
        paths = [str(p) for p in sorted((tmp / "ds" / "images").rglob("*.jpg"))]
        decode_serial(paths)  # warm the page cache so every measurement reads from memory
        decode_pool(pool, paths, cores)  # and start every pool process
        serial, pooled, command, t_all, t_one = [], [], [], [], []
        # Interleaved repeats, best of each: on a shared machine every figure then sees similar load.
        for r in range(args.repeats):
            serial.append(decode_serial(paths))
            pooled.append(decode_pool(pool, paths, cores))
            command.append(run_command(data, tmp / f"store-cmd-{r}", args.size))
            for workers, times in ((None, t_all), (1, t_one)):
                start, cpu = time.perf_counter(), time.process_time()
                out = tmp / f"store-{workers}-{r}"
                store = prepare(data, out, size=args.size, workers=workers, progress=False)
                times.append((time.perf_counter() - start, time.process_time() - cpu))
        crops = sum(1 for _ in open(store / "index.csv")) - 1
    finally:
        pool.terminate()
        pool.join()
        shutil.rmtree(tmp, ignore_errors=True)

    n, base = len(paths), min(pooled)
    print(
        f"\n{n} JPEG images {args.width}x{args.height} -> {crops} crops of {args.size}x{args.size}, {cores} cores"
    )
    rows = [
        (f"baseline  cv2.imread, {cores} processes", base, None),
        ("command   yolol-tf prepare, start to exit", min(command), crops),
        (f"prepare() workers={cores}, in-process", min(t for t, _ in t_all), crops),
        ("ref       cv2.imread, 1 process", min(t for t, _ in serial), None),
        ("ref       prepare() workers=1", min(t for t, _ in t_one), crops),
    ]
    for name, seconds, made in rows:
        per_crop = f"{made / seconds:8.1f} crops/s" if made else " " * 16
        print(f"{name:<42} {n / seconds:7.1f} images/s {per_crop}  ratio {base / seconds:.2f}x")
    print(f"goal: the whole command at 0.7x or more of cv2.imread on all {cores} cores")
    # CPU time does not depend on what else the machine runs: the cost of conversion against decoding.
    decode_cpu, convert_cpu = min(c for _, c in serial), min(c for _, c in t_one)
    print(
        f"CPU per image: decode {1000 * decode_cpu / n:.2f} ms, conversion {1000 * convert_cpu / n:.2f} ms "
        f"({convert_cpu / decode_cpu:.2f}x)"
    )


if __name__ == "__main__":
    main()
