"""Export a trained model for TensorFlow Serving (SavedModel) or phones (TFLite), checked before it counts.

Every export takes raw pixels (0..255, the model's input size) and returns per-class probabilities: the
sigmoid (or, for single-label labels, softmax) is appended here because models output logits. Class
names and thresholds travel with it: ``labels.json`` and ``labels.txt`` inside a SavedModel folder,
``<name>.labels.json`` and ``<name>.labels.txt`` beside a ``.tflite`` file, and a JSON buffer named
``yolol_tf_labels`` in the ``.tflite`` file's own metadata list (read it with
``yolol_tf.inference.predict.read_tflite_labels``).

TFLite uses builtin ops only, so the file runs on any LiteRT runtime without the Flex delegate. int8 is
full-integer post-training quantisation calibrated on the run's training crops, with int8 input and
output. The input is calibrated on the range [0, 255] exactly (one calibration crop gets a black and a
white pixel), so its scale is 1 and zero point -128: a uint8 pixel ``p`` is fed as ``p - 128``, and the
int8 output ``q`` means probability ``(q + 128) / 256``. Read both from the interpreter's
``quantization`` details rather than hard-coding them.

Before anything appears under the final name, the export runs on validation crops (SavedModel through
``tf.saved_model.load``, TFLite through the LiteRT interpreter) and is compared with the Keras model:
float32 must agree within 1e-4 in probability; float16 and int8 may lose at most ``max_drop`` mAP, or the
file is kept aside as ``<name>.REFUSED-map-drop-<drop>.tflite`` and a ``UserError`` (exit status 1) is
raised, unless ``force``.

Example::

    from yolol_tf.inference.export import export
    result = export("saved_models/cnn-demo", "tflite", quantize="int8")
    print(result.summary())
"""

from __future__ import annotations

import json
import os
import re
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from yolol_tf.errors import UserError
from yolol_tf.inference.predict import (
    TFLITE_LABELS_METADATA,
    KerasRunner,
    Runner,
    SavedModelRunner,
    TFLiteRunner,
    load_keras,
)
from yolol_tf.runs import Labels, ResolvedModel, resolve_model

FORMATS = ("savedmodel", "tflite")
QUANTIZE = ("none", "float16", "int8")
FLOAT_TOLERANCE = 1e-4  # max |probability difference| a float32 export may show against Keras


@dataclass(frozen=True)
class ExportResult:
    """What an export wrote and how it compares with the Keras model.

    Attributes:
        path: the exported file or folder.
        labels_path: the labels file that travels with it.
        format: "savedmodel" or "tflite".
        quantize: "none", "float16" or "int8".
        size_bytes: size of the export (a folder's files summed).
        keras_size_bytes: size of the ``.keras`` file it came from.
        latency_ms: single-image latency of the export, median of ``runs``.
        keras_latency_ms: the same for the Keras model (a traced ``tf.function``).
        checked: how many crops the export was compared on.
        max_abs_diff: largest probability difference against Keras on those crops.
        keras_map: mAP of the Keras model on them (None without labelled data).
        export_map: mAP of the export on them.
        forced: True when the export failed its check but ``force`` kept it.
        io_quantization: for int8, the input and output ``(scale, zero_point)`` pairs a runner needs.
    """

    path: Path
    labels_path: Path
    format: str
    quantize: str
    size_bytes: int
    keras_size_bytes: int
    latency_ms: float
    keras_latency_ms: float
    checked: int
    max_abs_diff: float
    keras_map: float | None = None
    export_map: float | None = None
    forced: bool = False
    io_quantization: tuple[tuple[float, int], tuple[float, int]] | None = None

    def summary(self) -> str:
        """A small table: size, latency and mAP of the export beside the Keras model's."""
        name = self.format if self.quantize == "none" else f"{self.format} {self.quantize}"
        kmap = "" if self.keras_map is None else f"{self.keras_map:.4f}"
        emap = "" if self.export_map is None else f"{self.export_map:.4f}"
        rows = [
            ("model", "size", "latency (1 image)", "mAP"),
            ("keras", _human(self.keras_size_bytes), f"{self.keras_latency_ms:.3f} ms", kmap),
            (name, _human(self.size_bytes), f"{self.latency_ms:.3f} ms", emap),
        ]
        lines = ["  ".join(f"{c:<18}" for c in row).rstrip() for row in rows]
        lines.append(f"max |probability difference| on {self.checked} crops: {self.max_abs_diff:.2e}")
        if self.io_quantization is not None:
            (si, zi), (so, zo) = self.io_quantization
            lines.append(
                f"int8 input: q = round(pixel / {si:g}) {'-' if zi < 0 else '+'} {abs(zi)}; "
                f"int8 output: probability = (q {'+' if zo < 0 else '-'} {abs(zo)}) * {so:g}"
            )
        if self.forced:
            lines.append("FORCED: the export failed its check and was kept because of --force")
        lines.append(f"wrote {self.path} (labels: {self.labels_path})")
        return "\n".join(lines)


def _human(n: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


def _size(path: Path) -> int:
    if path.is_dir():
        return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
    return path.stat().st_size


def default_destination(model_path: Path, format: str, quantize: str) -> Path:
    """``best.tflite``, ``best.int8.tflite``, ``best.savedmodel/`` beside the ``.keras`` file."""
    stem = model_path.stem
    if format == "savedmodel":
        return model_path.with_name(f"{stem}.savedmodel")
    tag = "" if quantize == "none" else f".{quantize}"
    return model_path.with_name(f"{stem}{tag}.tflite")


def refused_destination(dest: Path, reason: str) -> Path:
    """``model.int8.tflite`` -> ``model.int8.REFUSED-map-drop-0.034.tflite``."""
    suffix = dest.suffix
    return dest.with_name(f"{dest.name[: len(dest.name) - len(suffix)]}.REFUSED-{reason}{suffix}")


# --- data for calibration and checks -----------------------------------------------------------------


def _run_settings(resolved: ResolvedModel) -> dict | None:
    """The run's config.yaml (for its ``data`` and crop options), or None outside a run folder."""
    if resolved.run_dir is None or not (resolved.run_dir / "config.yaml").is_file():
        return None
    from yolol_tf.config import read_yaml

    return read_yaml(resolved.run_dir / "config.yaml")


def _open_source(data, settings: dict, size: int):
    """A ``DataSource`` for ``data`` (None: the demo dataset), built with the run's crop options."""
    from yolol_tf.data import open_data

    options = {
        k: settings[k] for k in ("val", "context", "min_visible", "mode") if settings.get(k) is not None
    }
    return open_data(data, size=size, **options)


def _take(ds, limit: int) -> tuple[np.ndarray, np.ndarray]:
    xs, ys, n = [], [], 0
    for x, y in ds:
        xs.append(x.numpy())
        ys.append(y.numpy())
        n += len(xs[-1])
        if n >= limit:
            break
    if not xs:
        return np.zeros((0,)), np.zeros((0,))
    return np.concatenate(xs)[:limit], np.concatenate(ys)[:limit]


def _crops(resolved: ResolvedModel, data, shape: tuple, *, calibration: int, check: int, need_labels: bool):
    """(calibration crops or None, check crops, check labels or None) for this model.

    Without a run folder or ``data``, a float32 export is checked on random pixels (parity only); a
    quantised one needs labelled crops and asks for ``--data``.
    """
    settings = _run_settings(resolved)
    if data is None and settings is None:
        if need_labels:
            raise UserError(
                f"{resolved.model_path} is not in a run folder, so a quantised export needs --data "
                "(a store, YOLO dataset or CSV) to calibrate on and to measure the mAP drop"
            )
        rng = np.random.default_rng(0)
        return None, rng.integers(0, 256, size=(16, *shape)).astype(np.uint8), None
    settings = settings or {}
    source = _open_source(data if data is not None else settings.get("data"), settings, int(shape[0]))
    split = next((s for s in ("val", "test", "train") if s in source.splits), None)
    if split is None:
        raise UserError(f"Data {data!r} has no train, val or test split to check the export on")
    x, y = _take(source.dataset(split, 64), check)
    if len(x) == 0:
        raise UserError(f"The {split!r} split of the data is empty: nothing to check the export on")
    if tuple(x.shape[1:]) != tuple(shape):
        raise UserError(
            f"The data's crops are {tuple(x.shape[1:])} but the model takes {tuple(shape)}; "
            "pass --data prepared at the model's input size"
        )
    calib = None
    if calibration:
        calib_split = "train" if "train" in source.splits else split
        calib, _ = _take(source.dataset(calib_split, 64, training=True, augment=0.0, seed=0), calibration)
    return calib, x, y


# --- writing ------------------------------------------------------------------------------------------


def _write_savedmodel(model, labels: Labels, folder: Path) -> None:
    """A SavedModel whose ``serve`` (and ``serving_default``) signature maps pixels to probabilities."""
    import keras
    import tensorflow as tf

    activation = tf.nn.softmax if labels.activation == "softmax" else tf.sigmoid
    shape = tuple(int(d) for d in model.inputs[0].shape[1:])

    def serve(pixels):
        return {"probabilities": activation(tf.cast(model(pixels, training=False), tf.float32))}

    archive = keras.export.ExportArchive()
    archive.track(model)
    archive.add_endpoint(
        "serve", serve, input_signature=[tf.TensorSpec((None, *shape), tf.float32, name="pixels")]
    )
    archive.write_out(str(folder), verbose=False)


def _write_labels(labels: Labels, json_path: Path, txt_path: Path) -> None:
    from yolol_tf.config import atomic_write_text

    labels.save(json_path)
    atomic_write_text(txt_path, "".join(f"{n}\n" for n in labels.names))


def _missing_ops(error: Exception) -> list[str]:
    """Op names a TFLite conversion error complains about (no builtin kernel, so Flex/custom needed)."""
    ops = [
        e.operator.name
        for e in getattr(error, "errors", [])
        if getattr(e, "operator", None) and e.operator.name
    ]
    ops += re.findall(r"'(tf\.\w+)' op is neither a custom op nor a flex op", str(error))
    for line in re.findall(r"(?:Flex|Custom) ops: ([\w, ]+)", str(error)):
        ops += [f"tf.{op.strip()}" for op in line.split(",") if op.strip()]
    return sorted(set(ops))


def _convert_tflite(savedmodel: Path, quantize: str, calib: np.ndarray | None) -> bytes:
    import tensorflow as tf

    converter = tf.lite.TFLiteConverter.from_saved_model(str(savedmodel), signature_keys=["serve"])
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    if quantize == "float16":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.target_spec.supported_types = [tf.float16]
    elif quantize == "int8":
        samples = calib.astype(np.float32).copy()
        # Pin the calibrated input range to [0, 255]: a 1-scale, -128-zero-point input takes every uint8
        # pixel losslessly. Two pixels of one crop barely move the activation ranges.
        samples[0, 0, 0, :], samples[0, 0, 1, :] = 0.0, 255.0
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = lambda: ([s[None]] for s in samples)
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        converter.inference_input_type = tf.int8
        converter.inference_output_type = tf.int8
    try:
        return converter.convert()
    except Exception as e:  # the converter's error types move between TF releases
        ops = _missing_ops(e)
        if ops:
            raise UserError(
                f"TFLite conversion needs ops with no builtin kernel: {', '.join(ops)}. They would need the "
                "Flex delegate (select TF ops), which phones' LiteRT runtimes lack; replace them in the model "
                "or export --format savedmodel",
                exit_code=1,
            ) from None
        first = next((ln for ln in str(e).splitlines() if "error" in ln.lower()), str(e).splitlines()[0])
        raise UserError(f"TFLite conversion ({quantize}) failed: {first[:500]}", exit_code=1) from None


def embed_labels(tflite: bytes, labels: Labels) -> bytes:
    """Adds the labels as a JSON buffer named ``yolol_tf_labels`` to the model's metadata list.

    Args:
        tflite: the converted model.
        labels: what to embed.
    """
    import flatbuffers
    from tensorflow.lite.python import schema_py_generated as schema

    payload = json.dumps(labels.to_dict()).encode("utf-8")
    model = schema.ModelT.InitFromPackedBuf(bytearray(tflite), 0)
    buffer = schema.BufferT()
    buffer.data = np.frombuffer(payload, dtype=np.uint8)
    model.buffers.append(buffer)
    meta = schema.MetadataT()
    meta.name = TFLITE_LABELS_METADATA
    meta.buffer = len(model.buffers) - 1
    model.metadata = [m for m in (model.metadata or []) if m.name != TFLITE_LABELS_METADATA.encode()] + [meta]
    builder = flatbuffers.Builder(len(tflite) + len(payload) + 1024)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())


def _tflite_labels_paths(dest: Path) -> tuple[Path, Path]:
    """``m.int8.tflite`` -> ``m.int8.labels.json``, ``m.int8.labels.txt`` (what predict looks for)."""
    return dest.with_suffix(".labels.json"), dest.with_suffix(".labels.txt")


def _check_destination(dest: Path, format: str) -> None:
    """Refuses, before any work, a destination the finished export could not be moved to.

    Raises:
        UserError: ``dest`` is a file where a SavedModel folder goes, a folder that is not a SavedModel
            (it would be replaced), or its parent folder cannot be created.
    """
    if format == "savedmodel" and dest.exists():
        if not dest.is_dir():
            raise UserError(f"--out {dest} is a file; a SavedModel is a folder. Choose a folder name")
        if any(dest.iterdir()) and not (dest / "saved_model.pb").is_file():
            raise UserError(
                f"--out {dest} is a folder that holds something other than a SavedModel and would be "
                "replaced; choose a new folder name"
            )
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UserError(f"--out {dest}: cannot create the folder {dest.parent} ({e.strerror or e})") from None


def _place(src: Path, dest: Path, work: Path) -> None:
    """Moves a finished export under its final name; an older one there goes away only afterwards."""
    if dest.is_dir():
        os.rename(dest, work / "previous")  # removed with the work folder
    os.replace(src, dest)


# --- checking -----------------------------------------------------------------------------------------


def _batched(runner: Runner, x: np.ndarray, batch: int = 64) -> np.ndarray:
    return np.concatenate([runner(x[i : i + batch]) for i in range(0, len(x), batch)])


def latency_ms(runner: Runner, image: np.ndarray, runs: int = 50) -> float:
    """Median wall time of one single-image call, after warm-up calls."""
    x = image[None]
    for _ in range(3):
        runner(x)
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        runner(x)
        times.append(time.perf_counter() - start)
    return float(np.median(times) * 1000)


def _map(y: np.ndarray, p: np.ndarray) -> float:
    from yolol_tf.metrics import mean_average_precision

    return float(mean_average_precision(y, p))


def export(
    model_path_or_run: str | os.PathLike,
    format: str = "savedmodel",
    *,
    quantize: str = "none",
    out: str | os.PathLike | None = None,
    data: str | os.PathLike | None = None,
    max_drop: float = 0.02,
    force: bool = False,
    num_calibration: int = 200,
    num_check: int = 512,
    latency_runs: int = 50,
    verbose: bool = True,
) -> ExportResult:
    """Exports, checks against the Keras model, then writes atomically under the final name.

    Args:
        model_path_or_run: a run folder (its ``best.keras``) or a ``.keras`` file.
        format: "savedmodel" or "tflite".
        quantize: "none", "float16" or "int8" (TFLite only).
        out: destination file (``.tflite``) or folder (SavedModel); default beside the model,
            e.g. ``best.int8.tflite`` or ``best.savedmodel/``.
        data: crops to calibrate and check on (store, YOLO dataset, CSV); default the run's config.yaml
            ``data``.
        max_drop: largest mAP loss a quantised export may show against the Keras model.
        force: keep a quantised export that loses more than ``max_drop`` under its final name anyway.
        num_calibration: training crops for int8 calibration.
        num_check: validation crops the export is compared on.
        latency_runs: single-image calls the latency median is taken over.
        verbose: print the summary table.

    Raises:
        UserError: bad options (exit status 2); an export that needs Flex ops, disagrees with Keras in
            float32, or loses more than ``max_drop`` mAP (exit status 1; the last is kept aside under a
            ``REFUSED`` name).
    """
    if format not in FORMATS:
        raise UserError(f"--format must be one of {', '.join(FORMATS)}. Received: format={format!r}")
    if quantize not in QUANTIZE:
        raise UserError(f"--quantize must be one of {', '.join(QUANTIZE)}. Received: quantize={quantize!r}")
    if format == "savedmodel" and quantize != "none":
        raise UserError(f"--quantize applies to --format tflite only. Received: quantize={quantize!r}")
    resolved = resolve_model(model_path_or_run)
    if resolved.model_path.suffix != ".keras":
        raise UserError(f"Export starts from a run folder or a .keras file. Received: {resolved.model_path}")

    model = load_keras(resolved.model_path)
    shape = tuple(int(d) for d in model.inputs[0].shape[1:])
    num_classes = int(model.outputs[0].shape[-1])
    labels = Labels.load(resolved.labels_path) if resolved.labels_path else Labels.default(num_classes, shape)
    if len(labels.names) != num_classes:
        raise UserError(
            f"{resolved.labels_path}: {len(labels.names)} names but the model has {num_classes} outputs"
        )
    dest = Path(out) if out is not None else default_destination(resolved.model_path, format, quantize)
    if format == "tflite" and dest.is_dir():  # --out FOLDER: the default file name inside it
        dest = dest / default_destination(resolved.model_path, format, quantize).name
    _check_destination(dest, format)

    calib, x, y = _crops(
        resolved,
        data,
        shape,
        calibration=num_calibration if quantize == "int8" else 0,
        check=num_check,
        need_labels=quantize != "none",
    )
    keras_runner = KerasRunner(resolved.model_path, labels, model=model)
    keras_probs = _batched(keras_runner, x)

    # Everything is built in a hidden folder beside the destination: a rename into place is atomic, and
    # an interrupted export leaves nothing under the final name.
    with tempfile.TemporaryDirectory(dir=dest.parent, prefix=f".{dest.name}.tmp-") as tmp:
        work = Path(tmp)
        savedmodel = work / "savedmodel"
        _write_savedmodel(model, labels, savedmodel)
        if format == "savedmodel":
            _write_labels(labels, savedmodel / "labels.json", savedmodel / "labels.txt")
            built, runner = savedmodel, SavedModelRunner(savedmodel, labels)
        else:
            built = work / "model.tflite"
            built.write_bytes(embed_labels(_convert_tflite(savedmodel, quantize, calib), labels))
            runner = TFLiteRunner(built, labels)
        probs = _batched(runner, x)
        io_quantization = None
        if isinstance(runner, TFLiteRunner) and runner.quantized:
            io_quantization = tuple(
                (float(d["quantization"][0]), int(d["quantization"][1])) for d in runner.io_details
            )
        diff = float(np.abs(probs - keras_probs).max())
        kmap = emap = None
        if y is not None:
            kmap, emap = _map(y, keras_probs), _map(y, probs)

        refusal = None
        if quantize == "none" and diff > FLOAT_TOLERANCE:
            refusal = (
                f"max-diff-{diff:.1e}",
                f"its probabilities differ from the Keras model's by {diff:.2e} (> {FLOAT_TOLERANCE:g})",
            )
        elif quantize != "none" and kmap is not None and kmap - emap > max_drop:
            refusal = (
                f"map-drop-{kmap - emap:.3f}",
                f"it loses {kmap - emap:.4f} mAP ({kmap:.4f} -> {emap:.4f}; --max-drop {max_drop})",
            )
        if refusal is not None and not force:
            aside = refused_destination(dest, refusal[0])
            if format == "tflite":  # a forced or inspected refusal is as usable as a placed export
                _write_labels(labels, *_tflite_labels_paths(aside))
            del runner  # release the interpreter's mapping of the file before it moves
            _place(built, aside, work)
            raise UserError(
                f"Export refused: {refusal[1]}. Kept aside as {aside}; --force keeps it anyway", 1
            )

        result_latency = latency_ms(runner, x[0], latency_runs)
        keras_latency = latency_ms(keras_runner, x[0], latency_runs)
        if format == "tflite":
            labels_path, labels_txt = _tflite_labels_paths(dest)
            _write_labels(labels, labels_path, labels_txt)
        else:
            labels_path = dest / "labels.json"
        del runner  # release the interpreter's mapping of the file before it moves
        _place(built, dest, work)

    result = ExportResult(
        path=dest,
        labels_path=labels_path,
        format=format,
        quantize=quantize,
        size_bytes=_size(dest),
        keras_size_bytes=_size(resolved.model_path),
        latency_ms=result_latency,
        keras_latency_ms=keras_latency,
        checked=len(x),
        max_abs_diff=diff,
        keras_map=kmap,
        export_map=emap,
        forced=refusal is not None,
        io_quantization=io_quantization,
    )
    if verbose:
        print(result.summary())
    return result


__all__ = [
    "FORMATS",
    "QUANTIZE",
    "ExportResult",
    "default_destination",
    "embed_labels",
    "export",
    "latency_ms",
]
