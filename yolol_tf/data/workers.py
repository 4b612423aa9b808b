"""Cutting images into crops on all cores: worker processes, results taken back in input order.

Workers start from a forkserver (never a fork of the caller) and each talks to the main process over a
pipe of its own, so the output is the same whatever the number of workers, a dead worker is an error
rather than a hang, and stopping them (Ctrl-C, SIGTERM) is quiet.
"""

from __future__ import annotations

import contextlib
import math
import multiprocessing
import os
import signal
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from yolol_tf.data.crops import Sample, cut, geometry, multi_hot, plan_crops, plan_image
from yolol_tf.data.images import read_image
from yolol_tf.data.labels import Problem, parse_labels
from yolol_tf.data.records import encode_features
from yolol_tf.data.yolo import ImageItem
from yolol_tf.errors import UserError


def cpu_count() -> int:
    """The cores this process may use (fewer than the machine's under a CPU affinity mask)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


@dataclass
class ImageResult:
    """What a worker made of one image."""

    problems: list[Problem] = field(default_factory=list)
    crops: list[tuple[Sample, bytes]] = field(default_factory=list)  # with encode_features' bytes
    skipped_small: int = 0


_OPTIONS: dict[str, Any] = {}  # set in each worker by init_worker, so tasks carry only paths


def init_worker(options: dict[str, Any], pooled: bool = True) -> None:
    """Sets the conversion options for :func:`convert_image` in this process (a worker, or the main one)."""
    if pooled:
        import cv2

        cv2.setNumThreads(1)  # parallelism comes from the processes; threads would only contend
        # Ctrl-C reaches the whole process group, workers included. Only the main process acts on it: it
        # stops the workers (SIGTERM, which ends one silently) and removes the partial store.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
    _OPTIONS.clear()
    _OPTIONS.update(options)


def convert_image(item: ImageItem) -> ImageResult:
    """Parses an image's labels, decodes it and cuts its crops (runs in a worker)."""
    o = _OPTIONS
    boxes, problems = parse_labels(item.label, o["num_classes"])
    result = ImageResult(problems)
    decoded: dict[str, Any] = {}
    try:
        image = read_image(item.image, reduction=_reduction(boxes, o, decoded))
    except UserError as e:
        result.problems.append(Problem("image", item.image, None, item.rel, e.message.split(": ", 1)[-1]))
        return result
    except Exception as e:  # a decoder failing on a malformed file must not stop the conversion
        result.problems.append(Problem("image", item.image, None, item.rel, f"cannot decode ({e})"))
        return result
    # Crops are planned at the image's full size (index.csv records full-size pixels) and cut from the
    # decoded image, which a JPEG may be at a fraction of that size.
    width, height = _full_size(image, decoded)
    if o["mode"] == "image":
        samples = [plan_image(boxes, width, height)]
    else:
        samples, result.skipped_small = plan_crops(
            boxes, width, height, context=o["context"], min_visible=o["min_visible"], min_box=o["min_box"]
        )
    sx, sy = image.shape[1] / width, image.shape[0] / height
    for s in samples:
        pixels = cut(image, _scaled(s.window, sx, sy), o["size"]).tobytes()
        label = multi_hot(s.label_ids, o["num_classes"]).tobytes()
        shapes = None  # the objects' geometry, when the store records it (options["max_objects"])
        if o.get("max_objects"):
            objects, content = geometry(s, o["size"], o["max_objects"])
            shapes = objects.tobytes(), content.tobytes()
        result.crops.append((s, encode_features(pixels, label, shapes)))
    return result


def _reduction(boxes: list, options: dict[str, Any], decoded: dict[str, Any]) -> Any:
    """How much smaller an image may be decoded while every crop keeps ``size`` pixels across its window.

    A crop's window is at least its box (or the whole image in image mode), and the letterbox scales the
    window's longer side to ``size``: decoding at 1/f loses nothing while that side is ``size * f`` pixels
    or more. The box's side is taken in both orientations, as the header's size is the one before EXIF
    rotation. Records the size and factor in ``decoded`` for :func:`_full_size`.
    """

    def reduction(width: int, height: int) -> int:
        if options["mode"] == "image":
            longest = max(width, height)
        elif not boxes:
            longest = max(width, height)  # nothing to cut: decoding only checks the image is readable
        else:
            longest = min(
                min(max((b.x2 - b.x1) * width, (b.y2 - b.y1) * height),
                    max((b.x2 - b.x1) * height, (b.y2 - b.y1) * width))
                for b in boxes
            )  # fmt: skip
        factor = next((f for f in (8, 4, 2) if longest >= options["size"] * f), 1)
        decoded.update(size=(width, height), factor=factor)
        return factor

    return reduction


def _full_size(image: Any, decoded: dict[str, Any]) -> tuple[int, int]:
    """(width, height) of the image at full size, with its EXIF orientation, from what was decoded."""
    height, width = image.shape[:2]
    if not decoded or decoded["factor"] == 1 or (width, height) in (decoded["size"], decoded["size"][::-1]):
        return width, height  # decoded whole
    w, h = decoded["size"]
    f = decoded["factor"]
    unrotated = (-(-w // f), -(-h // f))
    return (w, h) if (width, height) == unrotated else (h, w)


def _scaled(window: tuple[int, int, int, int], sx: float, sy: float) -> tuple[int, int, int, int]:
    """A full-size pixel window in the coordinates of an image decoded ``1/sx`` x ``1/sy`` as large."""
    if sx == 1 and sy == 1:
        return window
    x1, y1, x2, y2 = window
    left, top = int(x1 * sx), int(y1 * sy)
    return left, top, max(left + 1, math.ceil(x2 * sx)), max(top + 1, math.ceil(y2 * sy))


def _convert_batch(items: list[ImageItem]) -> list[ImageResult]:
    return [convert_image(i) for i in items]


def _pool_context() -> Any:
    """A forkserver where there is one, else spawn; never a plain fork.

    Forking the caller is unsafe: a parent that has run OpenCV's or TensorFlow's thread pools leaves the
    child their locks but not their threads, and the child hangs on its first parallel call. The
    forkserver is a fresh process that only imports this module; workers forked from it start in
    milliseconds, and it lives on for later calls.
    """
    if "forkserver" in multiprocessing.get_all_start_methods():
        ctx = multiprocessing.get_context("forkserver")
        ctx.set_forkserver_preload([__name__])
        return ctx
    return multiprocessing.get_context("spawn")


def workers_can_start() -> bool:
    """Whether pool workers can re-import the caller's main script, as forkserver and spawn do.

    A script read from stdin cannot be re-imported; its conversion runs in-process instead of hanging.
    """
    main_file = getattr(sys.modules.get("__main__"), "__file__", None)
    return main_file is None or os.path.isfile(main_file)


def _serve(conn: Any, options: dict[str, Any]) -> None:
    """A worker's loop: batches of images in, their results out, until None or the main process is gone."""
    init_worker(options)
    try:
        while (batch := conn.recv()) is not None:
            try:
                results: Any = _convert_batch(batch)
            except Exception as e:  # a bug: raised again in the main process, where it can be reported
                results = e
            conn.send(results)
    except (EOFError, OSError):  # the main process was killed: nothing is waiting for the results
        pass


class Workers:
    """Processes converting batches of images, each over a pipe of its own; results come back in order.

    Not a ``multiprocessing.Pool``: a Pool's workers share one task queue behind a lock, and a worker that
    dies holding it (stopped with its whole process group by a service manager's SIGTERM, or by the OOM
    killer) leaves ``Pool.terminate()`` waiting forever; and a Pool worker prints a BrokenPipeError traceback
    when the main process is gone. Here nothing is shared: a dead worker is an EOFError on its pipe, and
    stopping the workers is terminating them.

    Args:
        count: worker processes.
        options: the conversion options each worker is initialised with.
        depth: batches in flight per worker (bounded memory; enough to keep every worker busy).
    """

    def __init__(self, count: int, options: dict[str, Any], depth: int = 4):
        ctx = _pool_context()
        self._depth = depth
        self._procs: list[Any] = []
        self._conns: list[Any] = []
        for i in range(count):
            ours, theirs = ctx.Pipe()
            proc = ctx.Process(target=_serve, args=(theirs, options), name=f"prepare-worker-{i}", daemon=True)
            proc.start()
            theirs.close()
            self._procs.append(proc)
            self._conns.append(ours)

    def results(self, items: list[ImageItem]) -> Iterator[ImageResult]:
        """The results of ``items``, in order.

        Raises:
            UserError: when a worker died (killed, out of memory).
        """
        n = len(self._procs)
        size = max(1, min(16, len(items) // (n * 8)))
        batches = [items[start : start + size] for start in range(0, len(items), size)]
        sent = min(len(batches), n * self._depth)
        for k in range(sent):
            self._talk(k % n, batches[k])
        for k in range(len(batches)):
            # Batch k went to worker k % n, whose results come back in the order its batches went in.
            results = self._talk(k % n)
            if isinstance(results, BaseException):
                raise results
            if sent < len(batches):  # batch `sent` belongs to the worker just heard from: sent % n == k % n
                self._talk(sent % n, batches[sent])
                sent += 1
            yield from results

    def _talk(self, i: int, batch: list[ImageItem] | None = None) -> Any:
        """Sends ``batch`` to worker ``i``, or with no batch receives its next results."""
        try:
            return self._conns[i].recv() if batch is None else self._conns[i].send(batch)
        except (EOFError, OSError):  # closed, reset or broken: the worker is gone
            self._procs[i].join(1)
            code = self._procs[i].exitcode
            raise UserError(f"A conversion worker died (exit code {code}; out of memory?)", 1) from None

    def close(self, *, finished: bool) -> None:
        """Stops the workers: asked to finish when all went well, else terminated at once."""
        for conn, proc in zip(self._conns, self._procs, strict=True):
            if finished:
                with contextlib.suppress(OSError):
                    conn.send(None)
            else:
                proc.terminate()
        for conn, proc in zip(self._conns, self._procs, strict=True):
            proc.join(None if finished else 5)
            if proc.exitcode is None:
                proc.kill()
                proc.join()
            conn.close()
