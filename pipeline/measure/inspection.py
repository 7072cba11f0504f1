"""What a `.tflite` model really is: operators by type, tensors by dtype, weight bytes by
dtype, and how many compute ops still run in float (no TensorFlow).

Weights are read from the flatbuffer (`pipeline.measure.graph`): their stored type (INT4
and INT2 included, which the interpreter reports as int8) and their bytes as stored (int4
packs two values a byte), so the weight bytes add up to no more than the file.

A compute op "runs in float" when any of its activation inputs or outputs is a float tensor.
QUANTIZE and DEQUANTIZE only convert, so they are not counted (they are listed by type).
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.measure import graph

CONVERSION_OPS = frozenset({"QUANTIZE", "DEQUANTIZE"})
FLOAT_DTYPES = frozenset({"float32", "float16", "float64"})


def inspect(path: str | Path) -> dict[str, Any]:
    """Inspect one model's graph as stored (without the default XNNPACK delegate).

    Returns:
        `ops_by_type`, `tensors_by_dtype`, `weight_bytes_by_dtype`, `weight_bytes`,
        `float_compute_ops` (count), `float_compute_op_types`, `input_dtype`, `output_dtype`.
    """
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    interpreter = Interpreter(
        model_path=str(path),
        experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
    interpreter.allocate_tensors()
    tensors = {t["index"]: t for t in interpreter.get_tensor_details()}
    ops = interpreter._get_ops_details()  # no public API lists the graph's operators
    dtype = {i: np.dtype(t["dtype"]).name for i, t in tensors.items()}
    produced = {o for op in ops for o in op["outputs"]}
    graph_inputs = {d["index"] for d in interpreter.get_input_details()}
    consumed = {i for op in ops for i in op["inputs"] if i >= 0}
    constants = consumed - produced - graph_inputs  # weights, biases, shapes
    weight_bytes: Counter[str] = Counter()
    for t in graph.read(path).tensors:  # stored types and packed sizes
        if t.constant:
            weight_bytes[t.type] += t.nbytes
    float_ops = [
        op["op_name"] for op in ops
        if op["op_name"] not in CONVERSION_OPS
        and any(dtype[i] in FLOAT_DTYPES
                for i in [*op["inputs"], *op["outputs"]] if i >= 0 and i not in constants)]
    return {
        "ops_by_type": dict(sorted(Counter(op["op_name"] for op in ops).items())),
        "tensors_by_dtype": dict(sorted(Counter(dtype.values()).items())),
        "weight_bytes_by_dtype": dict(sorted(weight_bytes.items())),
        "weight_bytes": int(sum(weight_bytes.values())),
        "float_compute_ops": len(float_ops),
        "float_compute_op_types": dict(sorted(Counter(float_ops).items())),
        "input_dtype": np.dtype(interpreter.get_input_details()[0]["dtype"]).name,
        "output_dtype": np.dtype(interpreter.get_output_details()[0]["dtype"]).name,
    }


def check_promise(name: str, integer_only: bool, inspection: dict[str, Any]) -> None:
    """Refuse a model that its variant says is integer-only but that computes in float.

    Raises:
        ValueError: naming the variant and the float ops.
    """
    if integer_only and inspection["float_compute_ops"]:
        ops = ", ".join(f"{k} x{v}" for k, v in inspection["float_compute_op_types"].items())
        raise ValueError(f"variant {name!r} promises integer-only execution but "
                         f"{inspection['float_compute_ops']} compute op(s) run in float: {ops}")
