"""A `.tflite` file's graph read from its flatbuffer, and the multiply-accumulates it costs
(no TensorFlow, no interpreter).

    python -m pipeline.measure.graph models/tflite/int8/int8.tflite   # MACs per op type

The MACs are counted as Arm's Vela counts them on an Ethos-U55, so that the two agree on
integer models per op type (Vela adds MACs of its own for an activation it cannot fuse,
which it runs as a 1x1 pooling pass; `pipeline.measure.vela` lists those apart): a
convolution costs `kh * kw * in_channels` per output element, a depthwise convolution and a
pooling `kh * kw` per output element, a fully connected layer (and a batch matmul)
`in_features` per output element, a MEAN the size of the axes it reduces per output
element, a SOFTMAX two per element (the max and the sum it reduces over the classes);
element-wise ops and data movement cost none. Float models are counted the same way (Vela
leaves them on the CPU and counts 0).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
from ai_edge_litert import schema_py_generated as schema

# TensorType value -> name (INT4, INT2, ... included, which the interpreter reports as int8).
TENSOR_TYPES = {v: k.lower() for k, v in vars(schema.TensorType).items() if k.isupper()}
BUILTIN_NAMES = {v: k for k, v in vars(schema.BuiltinOperator).items() if k.isupper()}
_GPU_WARNING = "GPU COMPATIBILITY WARNING: "
_POOLS = frozenset({"AVERAGE_POOL_2D", "MAX_POOL_2D", "L2_POOL_2D"})


@dataclasses.dataclass(frozen=True)
class Op:
    """One operator of the main subgraph: its type (`CONV_2D`, or a custom op's code) and
    its input and output tensor indices (-1: an optional input left out)."""

    type: str
    inputs: tuple[int, ...]
    outputs: tuple[int, ...]
    filter_hw: tuple[int, int] | None = None  # pools only: (height, width) of the window


@dataclasses.dataclass(frozen=True)
class Tensor:
    name: str
    shape: tuple[int, ...]
    type: str  # `float32`, `int8`, `int4`, ...
    constant: bool  # has data in the file (weights, biases, shapes)
    nbytes: int = 0  # bytes of that data as stored (int4 packs two values a byte)


@dataclasses.dataclass(frozen=True)
class Graph:
    ops: tuple[Op, ...]
    tensors: tuple[Tensor, ...]

    def shape(self, index: int) -> tuple[int, ...]:
        return self.tensors[index].shape


def _op_type(code: Any) -> str:
    builtin = max(code.BuiltinCode(), code.DeprecatedBuiltinCode())
    if builtin == schema.BuiltinOperator.CUSTOM:
        return (code.CustomCode() or b"CUSTOM").decode()
    return BUILTIN_NAMES.get(builtin, str(builtin))


def read(path: str | Path) -> Graph:
    """Read the main subgraph's operators and tensors from a `.tflite` file.

    Raises:
        ValueError: if the file is not a TFLite flatbuffer.
    """
    buf = Path(path).read_bytes()
    if len(buf) < 8 or buf[4:8] != b"TFL3":
        raise ValueError(f"{path} is not a TFLite model (no TFL3 identifier)")
    model = schema.Model.GetRootAs(buf, 0)
    codes = [_op_type(model.OperatorCodes(i)) for i in range(model.OperatorCodesLength())]
    sub = model.Subgraphs(0)
    stored: dict[int, int] = {}  # buffer -> bytes
    for i in range(model.BuffersLength()):
        b = model.Buffers(i)
        if b.DataLength() > 0 or b.Size() > 0:  # inline data, or offset/size past 2 GB
            stored[i] = int(b.DataLength() or b.Size())
    tensors = []
    for i in range(sub.TensorsLength()):
        t = sub.Tensors(i)
        shape = tuple(int(d) for d in t.ShapeAsNumpy()) if t.ShapeLength() else ()
        tensors.append(Tensor((t.Name() or b"").decode(), shape,
                              TENSOR_TYPES.get(t.Type(), str(t.Type())), t.Buffer() in stored,
                              stored.get(t.Buffer(), 0)))
    ops = []
    for i in range(sub.OperatorsLength()):
        o = sub.Operators(i)
        kind = codes[o.OpcodeIndex()]
        filter_hw = None
        if kind in _POOLS and o.BuiltinOptionsType() == schema.BuiltinOptions.Pool2DOptions:
            opts = schema.Pool2DOptions()
            table = o.BuiltinOptions()
            opts.Init(table.Bytes, table.Pos)
            filter_hw = (opts.FilterHeight(), opts.FilterWidth())
        ops.append(Op(kind, tuple(int(x) for x in o.InputsAsNumpy()) if o.InputsLength() else (),
                      tuple(int(x) for x in o.OutputsAsNumpy()) if o.OutputsLength() else (),
                      filter_hw))
    return Graph(tuple(ops), tuple(tensors))


def _elements(shape: tuple[int, ...]) -> int:
    return int(np.prod(shape, dtype=np.int64)) if shape else 1


def op_macs(graph: Graph, op: Op) -> int:
    """Multiply-accumulates of one op (see the module docstring); 0 for the others."""
    out = _elements(graph.shape(op.outputs[0])) if op.outputs else 0
    if op.type in ("CONV_2D", "TRANSPOSE_CONV"):
        weights = graph.shape(op.inputs[1])  # (out_c, kh, kw, in_c)
        return out * weights[1] * weights[2] * weights[3]
    if op.type == "DEPTHWISE_CONV_2D":
        weights = graph.shape(op.inputs[1])  # (1, kh, kw, out_c)
        return out * weights[1] * weights[2]
    if op.type == "FULLY_CONNECTED":
        return out * graph.shape(op.inputs[1])[-1]  # weights (units, in_features)
    if op.type == "BATCH_MATMUL":
        return out * graph.shape(op.inputs[0])[-1]
    if op.type in _POOLS and op.filter_hw:
        return out * op.filter_hw[0] * op.filter_hw[1]
    if op.type == "MEAN":
        return _elements(graph.shape(op.inputs[0]))
    if op.type == "SOFTMAX":
        return 2 * out
    return 0


def macs(path: str | Path) -> dict[str, Any]:
    """Count a model's multiply-accumulates.

    Returns:
        `macs` (total), `macs_by_op_type` (`{op type: MACs}`, types with MACs only) and
        `ops` (the number of operators).
    """
    graph = read(path)
    by_type: Counter[str] = Counter()
    for op in graph.ops:
        if (m := op_macs(graph, op)):
            by_type[op.type] += m
    return {"macs": int(sum(by_type.values())),
            "macs_by_op_type": {k: int(v) for k, v in sorted(by_type.items())},
            "ops": len(graph.ops)}


def gpu_compatibility(path: str | Path) -> dict[str, Any]:
    """LiteRT's model analyzer's verdict on the GPU delegate (the same check as
    `tf.lite.experimental.Analyzer.analyze(..., gpu_compatibility=True)`, from
    `ai_edge_litert`, so no TensorFlow).

    Returns:
        `gpu_compatible` (bool), `gpu_incompatible_ops` (count), and when not compatible
        `gpu_first_incompatible_op` (`CONV_2D: <the analyzer's reason>`).
    """
    from ai_edge_litert import _pywrap_analyzer_wrapper as analyzer

    text = analyzer.ModelAnalyzer(str(path), True, True)
    first, count, op = None, 0, "?"
    for line in text.splitlines():
        stripped = line.strip()
        if stripped.startswith("Op#"):
            op = stripped.split()[1].split("(")[0]
        elif stripped.startswith(_GPU_WARNING) and not stripped[len(_GPU_WARNING):].startswith(
                "Subgraph#"):
            count += 1
            first = first or f"{op}: {stripped[len(_GPU_WARNING):]}"
    result: dict[str, Any] = {"gpu_compatible": count == 0 and "looks compatible" in text,
                              "gpu_incompatible_ops": count}
    if first:
        result["gpu_first_incompatible_op"] = first
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model")
    args = parser.parse_args()
    print(json.dumps(macs(args.model), indent=2))


if __name__ == "__main__":
    main()
