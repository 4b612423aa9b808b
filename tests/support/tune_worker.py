"""The chief or a worker of a distributed search, run in a fresh process by the search tests:

    python -m tests.support.tune_worker --out DIR --data STORE --chief HOST:PORT
    python -m tests.support.tune_worker --out DIR --data STORE --worker HOST:PORT --worker-id ID

Each runs the tiny search of ``tests.support.configs.tune_config`` on the store (a chief trains nothing).
"""

from __future__ import annotations

import argparse

from tests.support.configs import tune_config


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", required=True)
    parser.add_argument("--data", required=True)
    parser.add_argument("--chief")
    parser.add_argument("--worker")
    parser.add_argument("--worker-id")
    parser.add_argument("--max-trials", type=int, default=3)
    args = parser.parse_args(argv)
    from yolol_tf.tuning.search import tune

    tune(
        tune_config(
            args.out,
            data=args.data,
            chief=args.chief,
            worker=args.worker,
            worker_id=args.worker_id,
            max_trials=args.max_trials,
        )
    )


if __name__ == "__main__":
    main()
