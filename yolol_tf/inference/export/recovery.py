"""Selective int8 quantisation: when full-integer int8 loses too much mAP, keep the fewest layers in float.

1. **Find the culprits.** TensorFlow Lite's quantisation debugger (``tf.lite.experimental.
   QuantizationDebugger``) runs the int8 model op by op on calibration crops, each op once in int8 and
   once in float from the same inputs, and measures every op's error as its RMSE over its output's
   quantisation step (``rmse/scale``). Rounding alone gives about 0.29 (1/sqrt(12)); much more means the
   op's int8 arithmetic is off: an input whose range is so wide that its step swallows the other
   channels (the bias and the accumulator are quantised at that step), or an output that saturates.
   Global pooling and the last layers are the usual suspects.
2. **Keep them in float.** Ops are ranked by that error. Keeping op N in float denylists N *and* the
   ops that produce its inputs (back through ops the debugger does not verify, such as reshapes), so the
   tensor between them never goes through int8: denylisting N alone would still quantise its input at
   the harmful range. The debugger's ``denylisted_nodes`` option takes the ops' output tensor names and
   ``get_nondebug_quantized_model()`` converts without them.
3. **Search.** The top k ops are kept in float for k = 1, 2, 4, ... (one conversion and one check on the
   validation crops each), then bisection between the last k that failed and the first that passed finds
   the fewest; at most ``max_conversions`` conversions. The smallest model that passes is shipped.

The recovered model keeps the fully quantised model's int8 interface (``fully_quantize``): int8 input
with scale 1 and zero point -128 (the calibrated input range stays pinned to [0, 255], also when the
first layer is kept in float) and int8 output with scale 1/256 and zero point -128 (the sigmoid's fixed
output quantisation, also when the sigmoid itself is kept in float). The float layers sit between a
dequantise and a quantise op inside the graph. Runners read both pairs from the file, as they always do.
"""

from __future__ import annotations

import csv
import io
import math
import re
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from yolol_tf.inference.export.checks import Comparison


@dataclass(frozen=True)
class LayerError:
    """One int8 op as the quantisation debugger measured it.

    Attributes:
        node: the op's output tensor name in the TFLite graph (what ``denylisted_nodes`` takes).
        op: the TFLite op (``FULLY_CONNECTED``).
        layers: the Keras layers it was converted from (fused ops name several).
        rmse_over_scale: its error's RMSE over its output's quantisation step.
    """

    node: str
    op: str
    layers: tuple[str, ...]
    rmse_over_scale: float

    @property
    def label(self) -> str:
        """``wide (FULLY_CONNECTED)``; the node name when no Keras layer is recognised in it."""
        return f"{'+'.join(self.layers) or self.node} ({self.op})"


@dataclass(frozen=True)
class Attempt:
    """One int8 model the search converted and checked.

    Attributes:
        float_nodes: the TFLite nodes kept in float (empty: fully int8).
        float_layers: the same, as readable labels (see :attr:`LayerError.label`).
        path: the file, in the export's work folder.
        size_bytes: its size.
        comparison: its check against the Keras model.
        passed: within the allowed mAP drop.
    """

    float_nodes: tuple[str, ...]
    float_layers: tuple[str, ...]
    path: Path
    size_bytes: int
    comparison: Comparison
    passed: bool

    @property
    def drop(self) -> float:
        """mAP lost against the Keras model (infinite when it could not be measured)."""
        c = self.comparison
        if c.keras_map is None or c.export_map is None or math.isnan(c.export_map):
            return math.inf
        return c.keras_map - c.export_map


@dataclass(frozen=True)
class Recovery:
    """What the search found.

    Attributes:
        full_int8: the fully quantised model that failed its check.
        ranking: every int8 op the debugger measured, worst first.
        attempts: the models with layers kept in float, in the order they were tried.
        chosen: the smallest attempt that passed, or None.
    """

    full_int8: Attempt
    ranking: tuple[LayerError, ...]
    attempts: tuple[Attempt, ...]
    chosen: Attempt | None

    @property
    def best(self) -> Attempt:
        """The chosen attempt, else the one that lost least (the fully int8 model included)."""
        if self.chosen is not None:
            return self.chosen
        return min((self.full_int8, *self.attempts), key=lambda a: (a.drop, a.size_bytes))


# Writes a converted model (flatbuffer, file stem) and checks it like the export: (passed, comparison, file).
CheckFn = Callable[[bytes, str], tuple[bool, Comparison, Path]]


def _op_names() -> dict[int, str]:
    from tensorflow.lite.python import schema_py_generated as schema

    return {v: k for k, v in vars(schema.BuiltinOperator).items() if not k.startswith("_")}


def _outputs(flatbuffer: bytes) -> list[str]:
    """The output tensor names of the main subgraph."""
    from tensorflow.lite.python import schema_py_generated as schema

    graph = schema.ModelT.InitFromPackedBuf(bytearray(flatbuffer), 0).subgraphs[0]
    return [graph.tensors[i].name.decode("utf-8") for i in graph.outputs]


def _graph(flatbuffer: bytes) -> list[tuple[str, list[str], list[str]]]:
    """(op name, input tensor names, output tensor names) of every op of the main subgraph."""
    from tensorflow.lite.python import schema_py_generated as schema

    model = schema.ModelT.InitFromPackedBuf(bytearray(flatbuffer), 0)
    graph, names = model.subgraphs[0], _op_names()

    def tensor(i: int) -> str:
        return graph.tensors[i].name.decode("utf-8")

    ops = []
    for op in graph.operators:
        code = model.operatorCodes[op.opcodeIndex]
        kind = names.get(max(code.builtinCode, code.deprecatedBuiltinCode), "CUSTOM")
        ops.append((kind, [tensor(i) for i in op.inputs if i >= 0], [tensor(i) for i in op.outputs]))
    return ops


def keras_layers(node: str, layer_names: Sequence[str]) -> tuple[str, ...]:
    """The Keras layers named in a TFLite node name, in the model's order.

    TensorFlow names ops by their name scopes (``functional_1/wide_1/MatMul``, several joined by ``;``
    when ops were fused); a layer's scope is its name, or its name with a ``_N`` suffix.

    Args:
        node: the TFLite tensor name.
        layer_names: the Keras model's layer names.
    """
    known, found = set(layer_names), set()
    for scope in {part for name in node.split(";") for part in name.split("/")[:-1]}:
        base = re.sub(r"_\d+$", "", scope)
        if scope in known:  # a layer named "conv_1" before a layer "conv" called a second time
            found.add(scope)
        elif base in known:
            found.add(base)
    return tuple(n for n in layer_names if n in found)


def rank_layers(debugger: Any, layer_names: Sequence[str], outputs: Sequence[str] = ()) -> list[LayerError]:
    """Every op the debugger verified, worst ``rmse/scale`` first.

    Args:
        debugger: a ``QuantizationDebugger`` after ``run()``.
        layer_names: the Keras model's layer names, to name the ops.
        outputs: the graph's output tensor names: an op producing one is named ``output`` (the export's
            own activation, which no Keras layer holds).
    """
    buffer = io.StringIO()
    debugger.layer_statistics_dump(buffer)
    buffer.seek(0)
    ranked = []
    for row in csv.DictReader(buffer):
        scale, mse = float(row["scale"]), float(row["mean_squared_error"])
        error = math.sqrt(mse) / scale if scale > 0 and math.isfinite(mse) else 0.0
        node = row["tensor_name"]
        layers = keras_layers(node, layer_names) or (("output",) if node in outputs else ())
        ranked.append(LayerError(node, row["op_name"], layers, error))
    return sorted(ranked, key=lambda e: -e.rmse_over_scale)


def float_group(node: str, graph: list[tuple[str, list[str], list[str]]], verified: set[str]) -> set[str]:
    """The nodes to keep in float so that ``node`` runs in float on float inputs.

    ``node`` and, for each of its inputs, the ops producing it, back through ops the debugger does not
    verify (reshapes and other ops that pass int8 through) up to and including a verified one.

    Args:
        node: an op's output tensor name.
        graph: what :func:`_graph` returns.
        verified: the output names of the ops the debugger measured.
    """
    inputs_of = {out: inputs for _, inputs, outputs in graph for out in outputs}
    group, todo = {node}, [node]
    while todo:
        for name in inputs_of.get(todo.pop(), []):
            if name in inputs_of and name not in group:  # produced by an op (not a constant or the input)
                group.add(name)
                if name not in verified:  # pass-through op: keep walking back
                    todo.append(name)
    return group


def search(
    debugger: Any,
    ranking: Sequence[LayerError],
    full_int8: Attempt,
    check: CheckFn,
    *,
    max_conversions: int = 8,
    log: Callable[[str], None] = lambda message: None,
) -> Recovery:
    """Keeps the top k ops of ``ranking`` in float for k = 1, 2, 4, ..., then bisects to the fewest.

    Args:
        debugger: the ``QuantizationDebugger`` (its converter holds the calibration).
        ranking: what :func:`rank_layers` returned.
        full_int8: the fully quantised model's check.
        check: writes a converted model under a file stem and checks it (see :data:`CheckFn`).
        max_conversions: the most models converted and checked.
        log: progress messages.
    """
    import tensorflow as tf

    graph = _graph(debugger.calibrated_model)
    verified = {e.node for e in ranking}
    labels = {e.node: e.label for e in ranking}
    groups = [float_group(e.node, graph, verified) for e in ranking]
    attempts: dict[tuple[str, ...], Attempt] = {}

    def attempt(k: int) -> Attempt | None:
        nodes = tuple(sorted(set().union(*groups[:k])))
        if nodes in attempts:
            return attempts[nodes]
        if verified <= set(nodes):
            # Every op in float: the debugger has nothing left to verify and refuses the options, and
            # the model would be a float model with int8 ends.
            return None
        debugger.options = tf.lite.experimental.QuantizationDebugOptions(
            denylisted_nodes=list(nodes), fully_quantize=True
        )
        flatbuffer = debugger.get_nondebug_quantized_model()
        passed, comparison, path = check(flatbuffer, f"int8-float-{len(attempts) + 1}")
        # Name what stayed float: the measured ops by their Keras layers, pass-through ops by their op.
        layers = tuple(labels.get(n, n) for n in nodes if n in labels) + tuple(
            f"{kind} {out}" for kind, _, outs in graph for out in outs if out in nodes and out not in labels
        )
        result = Attempt(nodes, layers, path, len(flatbuffer), comparison, passed)
        attempts[nodes] = result
        drop = "?" if math.isinf(result.drop) else f"{result.drop:.4f}"
        log(
            f"  {len(nodes)} node(s) in float ({', '.join(layers)}): mAP drop {drop}, {'passes' if passed else 'fails'}"
        )
        return result

    def passes(k: int) -> bool:
        result = attempt(k)
        return result is not None and result.passed

    n = len(ranking)
    failed, passed_at, k = 0, None, 1
    while k <= n and len(attempts) < max_conversions:
        if passes(k):
            passed_at = k
            break
        failed = k
        k = n if k < n < 2 * k else 2 * k
    while passed_at is not None and passed_at - failed > 1 and len(attempts) < max_conversions:
        mid = (failed + passed_at) // 2
        if passes(mid):
            passed_at = mid
        else:
            failed = mid
    passing = [a for a in attempts.values() if a.passed]
    chosen = min(passing, key=lambda a: (a.size_bytes, len(a.float_nodes))) if passing else None
    return Recovery(full_int8, tuple(ranking), tuple(attempts.values()), chosen)


def recover_int8(
    converter: Any,
    calibration: np.ndarray,
    layer_names: Sequence[str],
    full_int8: Attempt,
    check: CheckFn,
    *,
    max_conversions: int = 8,
    debug_samples: int = 64,
    log: Callable[[str], None] = lambda message: None,
) -> Recovery:
    """Runs the quantisation debugger on ``converter`` and searches for the fewest layers to keep float.

    Args:
        converter: a ``tf.lite.TFLiteConverter`` set up for int8 (calibration included), as the export
            used it.
        calibration: crops the debugger measures the ops' errors on (the first ``debug_samples``).
        layer_names: the Keras model's layer names, to name the ops.
        full_int8: the fully quantised model's check.
        check: writes and checks a converted model (see :data:`CheckFn`).
        max_conversions: the most models converted and checked.
        debug_samples: calibration crops the debugger runs.
        log: progress messages.
    """
    import tensorflow as tf

    samples = np.asarray(calibration[:debug_samples], np.float32)
    with warnings.catch_warnings():
        # The debugger runs its models in tf.lite.Interpreter, which warns that it is deprecated.
        warnings.filterwarnings("ignore", message=r"(?s).*tf\.lite\.Interpreter is deprecated")
        debugger = tf.lite.experimental.QuantizationDebugger(
            converter=converter, debug_dataset=lambda: ([s[None]] for s in samples)
        )
        debugger.run()
        ranking = rank_layers(debugger, layer_names, _outputs(debugger.calibrated_model))
        worst = ", ".join(f"{e.label} {e.rmse_over_scale:.2f}" for e in ranking[:4])
        log(f"int8 error per op (rmse/scale, rounding alone ~0.29), worst first: {worst}")
        return search(debugger, ranking, full_int8, check, max_conversions=max_conversions, log=log)
