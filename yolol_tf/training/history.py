"""Read a run's TensorBoard scalars back into a pandas DataFrame (``yolol-tf history RUN``).

Keras' TensorBoard callback writes ``logs/train/events.out.tfevents.*`` and ``logs/validation/...``;
each event file holds (step, tag, value) records. :func:`read_history` gathers them into one table:
one row per step, one column per ``<run>/<tag>`` (``train/epoch_loss``, ``validation/epoch_map``...),
so the curves TensorBoard draws can be plotted, compared or saved as CSV without TensorBoard.

A resumed run writes new event files that repeat the steps after its last backup; the value written
last wins, as TensorBoard shows it. A file cut short by a killed process is read up to the cut.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd

from yolol_tf.errors import UserError

LOGS_DIR = "logs"
EVENT_GLOB = "events.out.tfevents.*"


def _scalar(value) -> float | None:
    """The number in a summary value: TF1 ``simple_value`` or a TF2 scalar tensor (None otherwise)."""
    kind = value.WhichOneof("value")
    if kind == "simple_value":
        return float(value.simple_value)
    if kind == "tensor":
        import tensorflow as tf

        array = tf.make_ndarray(value.tensor)
        if array.size == 1 and np.issubdtype(array.dtype, np.number):
            return float(array.reshape(()))
    return None


def _read_events(path: Path) -> list[tuple[float, int, str, float]]:
    """(wall_time, step, tag, value) of every scalar in one event file."""
    import tensorflow as tf

    records = []
    try:
        # TFRecordDataset rather than the deprecated summary_iterator, which warns on every use.
        for record in tf.data.TFRecordDataset(str(path)):
            event = tf.compat.v1.Event.FromString(record.numpy())
            for value in event.summary.value:
                number = _scalar(value)
                if number is not None:
                    records.append((event.wall_time, int(event.step), value.tag, number))
    except tf.errors.DataLossError:
        pass  # a process killed mid-write leaves a truncated last record: keep what came before
    return records


def read_history(run_dir: str | os.PathLike, *, epoch_only: bool = True) -> pd.DataFrame:
    """The TensorBoard scalars of a run as a DataFrame.

    Args:
        run_dir: a run folder (with ``logs/``) or a TensorBoard log folder itself.
        epoch_only: keep only the per-epoch scalars (``epoch_*`` tags, indexed by epoch); False keeps
            every scalar, whose steps may count batches instead.

    Returns:
        A DataFrame indexed by ``step`` (the 0-based epoch for epoch scalars), one column per
        ``<run>/<tag>`` where ``<run>`` is the event file's folder under ``logs/`` (``train``,
        ``validation``), sorted by step; NaN where a scalar was not written at that step.

    Example:
        >>> read_history("saved_models/first")[["train/epoch_loss", "validation/epoch_loss"]]  # doctest: +SKIP
    """
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise UserError(f"No run folder at {run_dir}")
    logs = run_dir / LOGS_DIR if (run_dir / LOGS_DIR).is_dir() else run_dir
    files = sorted(logs.rglob(EVENT_GLOB))
    if not files:
        raise UserError(
            f"No TensorBoard event files under {logs} (a run writes them to {run_dir / LOGS_DIR})"
        )

    rows = []
    for path in files:
        run = path.parent.relative_to(logs).as_posix()
        prefix = "" if run == "." else f"{run}/"
        for wall_time, step, tag, value in _read_events(path):
            if epoch_only and not tag.startswith("epoch_"):
                continue
            rows.append((wall_time, step, prefix + tag, value))
    if not rows:
        return pd.DataFrame(index=pd.Index([], name="step", dtype="int64"))

    frame = pd.DataFrame(rows, columns=["wall_time", "step", "column", "value"])
    # Stable sort by write time, then keep the last value of each (step, column): a resumed run's
    # rewritten epochs replace the ones it lost.
    frame = frame.sort_values("wall_time", kind="stable").drop_duplicates(["step", "column"], keep="last")
    table = frame.pivot(index="step", columns="column", values="value").sort_index()
    table.columns.name = None
    return table[sorted(table.columns)]
