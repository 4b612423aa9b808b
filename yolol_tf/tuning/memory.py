"""Peak memory of one trial, for trials.csv: resident memory sampled by a thread, and the GPU's own peak."""

from __future__ import annotations

import threading
from typing import Any


class MemorySampler:
    """Peak resident memory of this process over a block, sampled by a thread.

    ``ru_maxrss`` is the peak of the whole process life, so it cannot show one trial's peak; VmRSS from
    ``/proc/self/status`` can (Linux). Elsewhere the figures fall back to ``ru_maxrss``. On a GPU the
    device's own peak is read from TensorFlow.
    """

    def __init__(self, interval: float = 0.05):
        self.interval = interval
        self.figures: dict[str, float] = {}
        self._stop = threading.Event()
        self._peak = 0.0
        self._gpu = False

    @staticmethod
    def rss_mb() -> float:
        try:
            with open("/proc/self/status", encoding="ascii") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        return int(line.split()[1]) / 1024
        except OSError:
            pass
        import resource
        import sys

        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return peak / 2**20 if sys.platform == "darwin" else peak / 1024

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self._peak = max(self._peak, self.rss_mb())

    def __enter__(self) -> MemorySampler:
        import tensorflow as tf

        self._gpu = bool(tf.config.list_physical_devices("GPU"))
        if self._gpu:
            tf.config.experimental.reset_memory_stats("GPU:0")
        self.figures["memory_start_mb"] = self._peak = self.rss_mb()
        self._thread = threading.Thread(target=self._run, name="memory-sampler", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        import tensorflow as tf

        self._stop.set()
        self._thread.join()
        end = self.rss_mb()
        self.figures.update(peak_memory_mb=max(self._peak, end), memory_end_mb=end)
        if self._gpu:
            self.figures["gpu_peak_memory_mb"] = (
                tf.config.experimental.get_memory_info("GPU:0")["peak"] / 2**20
            )
        self.figures = {k: round(v, 1) for k, v in self.figures.items()}
