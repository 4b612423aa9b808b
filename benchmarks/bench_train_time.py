"""Wall time of ``yolol-tf train MODEL`` in this checkout against the same command at an older commit.

Checks out the baseline commit into a temporary git worktree, then for each round runs the whole training
command of the baseline and then of the current code, each as a child process, and prints the wall time and
test mAP of every run, each side's median and fastest time, and the ratio current/baseline.

    python benchmarks/bench_train_time.py --data /tmp/rp-store --baseline ab7d7fe
    python benchmarks/bench_train_time.py --data STORE --baseline ab7d7fe --baseline-data OLD-STORE --rounds 5
    python benchmarks/bench_train_time.py --data STORE --baseline ab7d7fe --extra "--epochs 10" --keep /tmp/bt

The two sides take turns, so that a noisy machine's drift (up to 2x on a shared CPU) falls on both alike:
read the ratio of the medians first, the per-round ratios for its spread, and the fastest runs' ratio as
the figure least touched by load from elsewhere. The first run of a model on a new machine includes the
bfloat16 probe once (then cached), so one untimed ``--epochs 1`` run of each side comes first. ``--keep``
needs a new or empty folder.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# sys.exit keeps the exit status main() returns; the assert catches the current package shadowing the old one.
BASELINE_CODE = (
    "import os, sys, yolol_tf; assert yolol_tf.__file__.startswith(os.environ['PYTHONPATH']), yolol_tf.__file__; "
    "from yolol_tf.cli import main; sys.exit(main())"
)


def run(cmd: list[str], out: Path, cwd: Path, env: dict[str, str]) -> tuple[float, str]:
    """Runs one training; returns its wall seconds and test mAP (``-`` when metrics.json has none)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    log = out.parent / f"{out.name}.stderr.txt"  # beside the run folder: train may want its --out empty
    with log.open("w") as err:
        start = time.perf_counter()
        proc = subprocess.run(cmd, cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=err)
        seconds = time.perf_counter() - start
    if proc.returncode:
        tail = log.read_text(errors="replace").splitlines()[-20:]
        print(f"failed ({proc.returncode}): {shlex.join(cmd)}", *tail, sep="\n", file=sys.stderr)
        sys.exit(1)
    try:
        mean_ap = f"{json.loads((out / 'metrics.json').read_text())['test']['map']:.4f}"
    except (OSError, KeyError, TypeError, ValueError):
        mean_ap = "-"
    return seconds, mean_ap


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="cnn")
    parser.add_argument("--data", required=True, help="Store or data.yaml for the current code.")
    parser.add_argument("--baseline", required=True, help="Git commit of this repository, e.g. ab7d7fe.")
    parser.add_argument("--baseline-data", help="Data for the baseline (default: --data).")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--extra", default="", help='Extra train arguments for the current code, e.g. "--epochs 10".'
    )
    parser.add_argument("--keep", type=Path, help="Keep the run folders here (default: a temporary folder).")
    args = parser.parse_args()
    extra = shlex.split(args.extra)
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}

    with tempfile.TemporaryDirectory(prefix="bench-train-time-") as tmp:
        tree, runs = Path(tmp) / "baseline", args.keep or Path(tmp) / "runs"
        subprocess.run(
            ["git", "-C", str(ROOT), "worktree", "add", "--detach", str(tree), args.baseline],
            check=True,
            stdout=sys.stderr,  # git says where HEAD is: a message, not a result
        )
        try:
            train = ["train", args.model, "--data"]
            current = [sys.executable, "-m", "yolol_tf", *train, args.data]
            baseline = [sys.executable, "-c", BASELINE_CODE, *train, args.baseline_data or args.data]
            # Untimed: the first run of a model on a machine pays for the bf16 probe (then cached), on either side.
            print("warm-up: each side, --epochs 1 (untimed)", file=sys.stderr)
            run(
                [*current, "--out", str(runs / "warmup"), *extra, "--epochs", "1"], runs / "warmup", ROOT, env
            )
            warm = runs / "warmup-baseline"
            run(
                [*baseline, "--out", str(warm), "--epochs", "1"],
                warm,
                Path(tmp),
                {**env, "PYTHONPATH": str(tree)},
            )
            times: dict[str, list[float]] = {"baseline": [], "current": []}
            for r in range(1, args.rounds + 1):
                for side in ("baseline", "current"):
                    print(f"round {r}/{args.rounds}: {side} ...", file=sys.stderr)
                    out = runs / f"{side}-{r}"
                    if side == "baseline":  # cwd outside ROOT, or ROOT's package would shadow PYTHONPATH
                        cmd, cwd, side_env = (
                            [*baseline, "--out", str(out)],
                            Path(tmp),
                            {**env, "PYTHONPATH": str(tree)},
                        )
                    else:
                        cmd, cwd, side_env = [*current, "--out", str(out), *extra], ROOT, env
                    seconds, mean_ap = run(cmd, out, cwd, side_env)
                    times[side].append(seconds)
                    print(f"round {r} {side} {seconds:.1f} s test mAP {mean_ap}", flush=True)
        finally:
            subprocess.run(
                ["git", "-C", str(ROOT), "worktree", "remove", "--force", str(tree)],
                check=False,
                stdout=sys.stderr,
            )

    base, cur = times["baseline"], times["current"]
    for side, ts in times.items():
        print(f"{side}: median {statistics.median(ts):.1f} s, fastest {min(ts):.1f} s")
    print(
        f"current/baseline: {statistics.median(cur) / statistics.median(base):.2f}x by medians, "
        f"{min(cur) / min(base):.2f}x by fastest runs"
    )
    print("per round: " + " ".join(f"{c / b:.2f}x" for b, c in zip(base, cur, strict=True)))


if __name__ == "__main__":
    main()
