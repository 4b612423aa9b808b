"""``yolol-tf prepare ARGS`` with the main process paused at its first crop (the workers started and busy):

    python -m tests.support.paused_prepare prepare DATA --out STORE --workers 2

It says ``PAUSED`` on stderr then, so a test signals it at a known point rather than after a guessed delay.
"""

from __future__ import annotations

import sys
import time

import yolol_tf.data.store as store

real = store.with_row


def paused(features, row):
    if row == 0:
        print("PAUSED", file=sys.stderr, flush=True)
        time.sleep(120)
    return real(features, row)


if __name__ == "__main__":
    store.with_row = paused
    from yolol_tf.cli import main

    sys.exit(main(sys.argv[1:]))
