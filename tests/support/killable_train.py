"""A tiny training run whose second epoch is slow enough to be killed in, and its resume:

python -m tests.support.killable_train STORE RUN fresh     # 3 epochs, the second and third slowed
python -m tests.support.killable_train STORE RUN resume    # resumes RUN at full speed
"""

from __future__ import annotations

import sys
import time


def main(argv: list[str]) -> None:
    import keras

    from tests.support.configs import train_config
    from yolol_tf.training import train

    class Slow(keras.callbacks.Callback):
        # Slows the second epoch so the test can kill the process in the middle of it.
        def on_epoch_begin(self, epoch, logs=None):
            self.epoch = epoch

        def on_train_batch_end(self, batch, logs=None):
            if self.epoch >= 1:
                time.sleep(0.5)

    store, run, mode = argv
    resume = mode == "resume"
    train(
        train_config(store, run, epochs=3, loss="asl"),
        resume=resume,
        callbacks=[] if resume else [Slow()],
        verbose=2,
    )


if __name__ == "__main__":
    main(sys.argv[1:])
