"""Where the time goes: each operator's latency, which kernel ran it, and what the delegate
took (no TensorFlow).

LiteRT's Python interpreter (ai-edge-litert 2.3) exposes no op profiler (its profiling
messages are only the protos of the C++ benchmark tool), so each operator is timed as its
own model: the operator is cut out of the flatbuffer with its weights (and any operator that
only turns constants into its weights, such as a float16 model's DEQUANTIZE), fed the very
values it sees in the whole model on the benchmark's sample, and timed on the same kernel
path and thread count as the whole model, in blocks of invokes. An invoke of a one-op model
costs the interpreter's fixed overhead too, measured on a model with one trivial op and
taken off each operator's time (added back once for the whole model). The figures then add
up to the whole model's time; what they do not explain is reported as `overhead_ms` (the
delegate's partition boundaries, caches warm for one op and cold in the whole model).

Which operators the XNNPACK delegate took is read from the interpreter itself: every
DELEGATE node it adds replaces the operators between that node's inputs and outputs.

    python -m pipeline.measure.profile models/tflite/int8_full/int8_full.tflite
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import sys
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.measure import graph
from pipeline.measure.litert import quantize_input

METHOD = "one-op models cut from the flatbuffer, timed in blocks of invokes"
BLOCK_SECONDS = 0.001  # each timed block of invokes lasts about this long


@dataclasses.dataclass(frozen=True)
class Settings:
    """How the profile runs: the interpreter's threads, the kernel path (`xnnpack`,
    `builtin`, `reference`) and the number of timed blocks per operator."""

    threads: int = 1
    kernels: str = "xnnpack"
    rounds: int = 30


def _interpreter(content: bytes, threads: int, kernels: str,
                 preserve: bool = False) -> Any:
    from ai_edge_litert.interpreter import Interpreter

    from pipeline.measure.litert import _resolver

    interp = Interpreter(model_content=content, num_threads=threads,
                         experimental_op_resolver_type=_resolver(kernels),
                         experimental_preserve_all_tensors=preserve)
    interp.allocate_tensors()
    return interp


def _time(interp: Any, rounds: int) -> float:
    """Median milliseconds per invoke over `rounds` blocks of about `BLOCK_SECONDS`."""
    t0 = time.perf_counter()
    warm = 0
    while warm < 3 or time.perf_counter() - t0 < 0.02:
        interp.invoke()
        warm += 1
    per = (time.perf_counter() - t0) / warm
    block = max(1, int(BLOCK_SECONDS / max(per, 1e-7)))
    times = []
    for _ in range(rounds):
        t = time.perf_counter()
        for _ in range(block):
            interp.invoke()
        times.append((time.perf_counter() - t) / block)
    return float(np.median(times)) * 1e3


def _null_model() -> bytes:
    """A model of one ABS on one float: what an invoke costs with (almost) nothing in it."""
    from ai_edge_litert import schema_py_generated as schema
    from ai_edge_litert.tools import flatbuffer_utils

    model = schema.ModelT()
    model.version = 3
    code = schema.OperatorCodeT()
    code.builtinCode = code.deprecatedBuiltinCode = schema.BuiltinOperator.ABS
    code.version = 1
    model.operatorCodes = [code]
    tensors = []
    for name in (b"x", b"y"):
        t = schema.TensorT()
        t.shape, t.type, t.buffer, t.name = [1], schema.TensorType.FLOAT32, 0, name
        tensors.append(t)
    op = schema.OperatorT()
    op.opcodeIndex, op.inputs, op.outputs = 0, [0], [1]
    sub = schema.SubGraphT()
    sub.tensors, sub.inputs, sub.outputs, sub.operators = tensors, [0], [1], [op]
    model.subgraphs = [sub]
    model.buffers = [schema.BufferT()]
    return bytes(flatbuffer_utils.convert_object_to_bytearray(model))


def _constant(model: Any, tensor: Any) -> bool:
    buf = model.buffers[tensor.buffer]
    return buf.data is not None and len(buf.data) > 0


def static_ops(model: Any) -> set[int]:
    """Operators of the main subgraph whose inputs are all constants, or made from constants
    only (a float16 model's DEQUANTIZE of its weights): computed once, not per invoke."""
    sub = model.subgraphs[0]
    static = {i for i, t in enumerate(sub.tensors) if _constant(model, t)}
    ops: set[int] = set()
    for i, op in enumerate(sub.operators):
        ins = [t for t in op.inputs if t >= 0]
        if ins and all(t in static for t in ins):
            ops.add(i)
            static.update(t for t in op.outputs if t >= 0)
    return ops


def _detail_tensors(tensor: Any) -> list[int]:
    """Tensors a tensor's quantization refers to by index (blockwise: scales, zero points)."""
    from ai_edge_litert import schema_py_generated as schema

    q = tensor.quantization
    if q is None or q.detailsType != schema.QuantizationDetails.BlockwiseQuantization:
        return []
    return [r for r in (q.details.scales, q.details.zeroPoints) if r is not None and r >= 0]


def cut(model: Any, index: int, statics: set[int]) -> tuple[bytes, list[int], list[int]]:
    """Operator `index` as a model of its own: its constant inputs (and the static
    operators that make them) inside, its other inputs as the model's inputs.

    Returns:
        The flatbuffer, the whole model's tensor indices of the new model's inputs, and the
        static operators it includes.
    """
    from ai_edge_litert import schema_py_generated as schema
    from ai_edge_litert.tools import flatbuffer_utils

    sub = model.subgraphs[0]
    producer = {t: i for i, op in enumerate(sub.operators) for t in op.outputs if t >= 0}
    keep_ops: list[int] = []

    def need(i: int) -> None:
        for t in sub.operators[i].inputs:
            p = producer.get(t)
            if t >= 0 and p is not None and p in statics and p not in keep_ops:
                need(p)
        keep_ops.append(i)

    need(index)
    made = {t for i in keep_ops for t in sub.operators[i].outputs}
    inputs = []
    for t in sub.operators[index].inputs:
        if t >= 0 and t not in made and not _constant(model, sub.tensors[t]) \
                and t not in inputs:
            inputs.append(t)
    used = {t for i in keep_ops for t in (*sub.operators[i].inputs,
                                          *sub.operators[i].outputs) if t >= 0}
    for t in list(used):  # blockwise quantization keeps its scales in tensors of their own
        for ref in _detail_tensors(sub.tensors[t]):
            used.add(ref)
    used = sorted(used)
    remap = {old: new for new, old in enumerate(used)}
    buffers = [schema.BufferT()]
    tensors = []
    for old in used:
        t = sub.tensors[old]
        new = schema.TensorT()
        new.__dict__.update(t.__dict__)
        if _detail_tensors(t):
            new.quantization = copy.copy(t.quantization)
            new.quantization.details = copy.copy(t.quantization.details)
            for field in ("scales", "zeroPoints"):
                old_ref = getattr(new.quantization.details, field, -1)
                if old_ref is not None and old_ref >= 0:
                    setattr(new.quantization.details, field, remap[old_ref])
        if _constant(model, t):
            buffers.append(model.buffers[t.buffer])
            new.buffer = len(buffers) - 1
        else:
            new.buffer = 0
        tensors.append(new)
    ops = []
    for i in keep_ops:
        op = schema.OperatorT()
        op.__dict__.update(sub.operators[i].__dict__)
        op.inputs = [remap[t] if t >= 0 else -1 for t in sub.operators[i].inputs]
        op.outputs = [remap[t] for t in sub.operators[i].outputs if t >= 0]
        op.intermediates = [remap[t] for t in (op.intermediates or []) if t in remap] or None
        ops.append(op)
    new_sub = schema.SubGraphT()
    new_sub.tensors, new_sub.operators = tensors, ops
    new_sub.inputs = [remap[t] for t in inputs]
    new_sub.outputs = [remap[t] for t in sub.operators[index].outputs if t >= 0]
    new_sub.name = b"op"
    out = schema.ModelT()
    out.version, out.operatorCodes, out.subgraphs, out.buffers = (
        model.version, model.operatorCodes, [new_sub], buffers)
    out.description = b"one operator cut out for timing"
    return (bytes(flatbuffer_utils.convert_object_to_bytearray(out)), inputs,
            [i for i in keep_ops if i != index])


def delegated_nodes(interp: Any, n_ops: int) -> list[list[int]]:
    """The operators each DELEGATE node of a loaded interpreter replaced (one list per
    partition): those between the node's input and output tensors."""
    details = interp._get_ops_details()  # the interpreter's nodes: the model's, then its delegates'
    producer = {t: d["index"] for d in details[:n_ops] for t in d["outputs"]}
    partitions = []
    for d in details[n_ops:]:
        if d["op_name"] != "DELEGATE":
            continue
        stop = set(int(t) for t in d["inputs"])
        seen: set[int] = set()
        stack = [int(t) for t in d["outputs"]]
        while stack:
            t = stack.pop()
            p = producer.get(t)
            if t in stop or p is None or p in seen:
                continue
            seen.add(p)
            stack.extend(int(x) for x in details[p]["inputs"] if x >= 0)
        partitions.append(sorted(seen))
    return partitions


def _types(g: graph.Graph, indices: tuple[int, ...], made: dict[int, str]) -> str:
    """The types of an operator's activations (not weights, not tensors made from them)."""
    return ",".join(g.tensors[t].type for t in indices if t >= 0 and not
                    g.tensors[t].constant and t not in made) or "-"


def _weights(g: graph.Graph, op: graph.Op, made: dict[int, str]) -> str:
    """The types its weights are stored in (a float16 model's: float16, dequantized once)."""
    return ",".join(sorted({made.get(t) or g.tensors[t].type for t in op.inputs
                            if t >= 0 and (g.tensors[t].constant or t in made)})) or "-"


def _made_from_constants(g: graph.Graph, statics: set[int]) -> dict[int, str]:
    """Tensors the static operators make, with the stored type of the constant they come
    from."""
    made: dict[int, str] = {}
    for i in sorted(statics):
        op = g.ops[i]
        source = next((made.get(t) or g.tensors[t].type for t in op.inputs if t >= 0), "?")
        made.update({t: source for t in op.outputs if t >= 0})
    return made


def left_reason(g: graph.Graph, op: graph.Op, made: dict[int, str]) -> str:
    """Why XNNPACK leaves an operator to the built-in kernels, where the types say it."""
    acts = {g.tensors[t].type for t in (*op.inputs, *op.outputs)
            if t >= 0 and not g.tensors[t].constant and t not in made}
    weights = {made.get(t) or g.tensors[t].type for t in op.inputs
               if t >= 0 and (g.tensors[t].constant or t in made)}
    if "int16" in acts:
        return "XNNPACK has no kernels for int16 activations"
    if any(t in made for t in op.inputs) and op.type != "DEQUANTIZE":
        stored = "/".join(sorted({made[t] for t in op.inputs if t in made}))
        return (f"its weights are dequantized from {stored} at run time, "
                "which XNNPACK does not fold, so it sees non-constant weights")
    if op.type == "DEQUANTIZE" and weights:
        return f"XNNPACK does not take a DEQUANTIZE of {'/'.join(sorted(weights))} weights"
    if "float32" in acts and weights & {"int8", "int4", "int2"} and op.type != "DEQUANTIZE":
        return ("a dynamic-range (hybrid) op: float activations with integer weights, "
                "which XNNPACK does not take here")
    if weights & {"int4", "int2"} or acts & {"int4", "int2"}:
        return "sub-byte tensors XNNPACK does not take for this op"
    return f"XNNPACK takes no {op.type} on {'/'.join(sorted(acts)) or 'these'} tensors"


_PROGRESS = "profile-op: "  # the child's stderr line before each operator


def isolated(path: str | Path, sample: np.ndarray, settings: Settings = Settings(),
             timeout: float = 1800.0) -> dict[str, Any]:
    """`profile` in a child process: a one-op model LiteRT aborts on (a kernel's assertion,
    a bad cut) becomes that operator's `error` row, and the profile goes on without it (the
    child is started again, skipping it); never the benchmark's crash.

    Returns:
        The profile, or `{"error": reason}` when it cannot be made at all.
    """
    import os
    import subprocess
    import sys
    import tempfile

    root = str(Path(__file__).resolve().parents[2])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [root, *filter(None, [os.environ.get("PYTHONPATH")])])}
    skip: list[int] = []
    with tempfile.TemporaryDirectory(prefix="profile-") as tmp:
        x, out = Path(tmp) / "x.npy", Path(tmp) / "profile.json"
        np.save(x, np.asarray(sample, np.float32)[:1])
        while True:
            cmd = [sys.executable, "-m", "pipeline.measure.profile", str(path),
                   "--sample", str(x), "--json", str(out), "--threads",
                   str(settings.threads), "--kernels", settings.kernels, "--rounds",
                   str(settings.rounds), *(["--skip", *map(str, skip)] if skip else [])]
            try:
                proc = subprocess.run(cmd, env=env, capture_output=True, text=True,
                                      timeout=timeout)
            except subprocess.TimeoutExpired:
                return {"error": f"the per-operator profile took over {timeout:.0f} s"}
            if proc.returncode == 0:
                return json.loads(out.read_text())
            started = [int(line[len(_PROGRESS):]) for line in proc.stderr.splitlines()
                       if line.startswith(_PROGRESS)]
            if proc.returncode < 0 and started and started[-1] not in skip:
                skip.append(started[-1])  # LiteRT aborted on this operator alone
                continue
            tail = " ".join(proc.stderr.strip().splitlines()[-1:])[:300]
            return {"error": f"the per-operator profile failed (exit {proc.returncode}): "
                             f"{tail}"}


def profile(path: str | Path, sample: np.ndarray, settings: Settings = Settings(),
            skip: tuple[int, ...] = (), announce: bool = False) -> dict[str, Any]:
    """Time each operator of a `.tflite` model as its own model (see the module docstring).

    Args:
        path: The model.
        sample: One float input `(1, *input_shape)`, as the benchmark feeds it.
        settings: Threads, kernel path and timed blocks per operator.
        skip: Operators not to time (LiteRT aborted the process on them): error rows.
        announce: Say on stderr which operator is next (for `isolated`, the parent).

    Returns:
        `method`, `threads`, `kernels`, `whole_ms` (the whole model, timed the same way),
        `invoke_ms` (an invoke's fixed cost), `ops` (one row per operator: index, type,
        activation and weight types, MACs, kernel, ms, share of the whole, a note, or
        `error` where it could not be cut), `ops_ms` (their sum),
        `explained` ((invoke + ops) / whole), `overhead_ms` (the rest), `by_type`
        (`{op type: {count, ms, macs}}`), and `delegate` (`partitions`, `delegated`,
        `nodes`, `left`: the operators the delegate did not take, with a reason).
    """
    from ai_edge_litert.tools import flatbuffer_utils

    path = Path(path)
    content = path.read_bytes()
    g = graph.read(path)
    model = flatbuffer_utils.convert_bytearray_to_object(content)
    n = len(g.ops)
    whole = _interpreter(content, settings.threads, settings.kernels)
    whole_in = whole.get_input_details()[0]
    whole.set_tensor(whole_in["index"], quantize_input(sample, whole_in))
    before = _time(whole, settings.rounds * 2)
    partitions = delegated_nodes(whole, n) if settings.kernels == "xnnpack" else []
    in_delegate = {i for p in partitions for i in p}
    # The values each operator sees in the whole model, on this sample.
    values_run = _interpreter(content, 1, "builtin", preserve=True)
    values_run.set_tensor(whole_in["index"], quantize_input(sample, whole_in))
    values_run.invoke()
    null = _interpreter(_null_model(), settings.threads, "builtin")
    null.set_tensor(null.get_input_details()[0]["index"], np.ones(1, np.float32))
    invoke_ms = _time(null, settings.rounds * 3)
    statics = static_ops(model)
    made = _made_from_constants(g, statics)
    rows = []
    raw: dict[int, float] = {}  # each operator's cut, less an invoke's fixed cost
    for i, op in enumerate(g.ops):
        row: dict[str, Any] = {
            "index": i, "type": op.type, "inputs": _types(g, op.inputs, made),
            "outputs": _types(g, op.outputs, {} if i in statics else made),
            "weights": _weights(g, op, made),
            "macs": graph.op_macs(g, op)}
        if i in skip:
            row.update(kernel="?", ms=None, error="LiteRT aborted the process running it "
                       "as a model of its own")
            rows.append(row)
            continue
        if announce:
            print(f"{_PROGRESS}{i}", file=sys.stderr, flush=True)
        if i in statics and i in in_delegate:
            row.update(kernel="xnnpack", ms=0.0, note="made from constants: XNNPACK folds it "
                       "into its consumer's weights when the model loads")
            rows.append(row)
            continue
        if i in statics:
            row["note"] = "its inputs are constants (weights it makes)"
        try:
            one, inputs, included = cut(model, i, statics)
            interp = _interpreter(one, settings.threads, settings.kernels)
            for detail, t in zip(interp.get_input_details(), inputs):
                interp.set_tensor(detail["index"], values_run.get_tensor(t))
            ms = _time(interp, settings.rounds)
            took = any(d["op_name"] == "DELEGATE" for d in interp._get_ops_details())
        except Exception as exc:  # noqa: BLE001 - an op we cannot cut is a row, not a crash
            row.update(kernel="?", ms=None, error=f"{type(exc).__name__}: {exc}")
            rows.append(row)
            continue
        if settings.kernels == "xnnpack":
            kernel = "xnnpack" if i in in_delegate else "builtin"
            if took != (i in in_delegate) and i not in statics:
                row["note"] = ("XNNPACK took it alone" if took else
                               "XNNPACK left it alone") + ", not in the whole model"
        else:
            kernel = settings.kernels
        raw[i] = max(ms - invoke_ms, 0.0)
        # The static operators inside its cut are timed in their own rows.
        row.update(kernel=kernel, ms=max(raw[i] - sum(raw.get(j, 0.0) for j in included), 0.0))
        rows.append(row)
    # The whole model again after its operators: the machine's drift averages out.
    whole_ms = (before + _time(whole, settings.rounds * 2)) / 2
    del whole
    timed = [r["ms"] for r in rows if r.get("ms") is not None]
    ops_ms = float(sum(timed))
    for r in rows:
        if r.get("ms") is not None:
            r["share"] = r["ms"] / whole_ms if whole_ms > 0 else 0.0
    by_type: dict[str, dict[str, Any]] = defaultdict(lambda: {"count": 0, "ms": 0.0,
                                                              "macs": 0})
    for r in rows:
        t = by_type[r["type"]]
        t["count"] += 1
        t["ms"] += r.get("ms") or 0.0
        t["macs"] += r["macs"]
    left = [{"index": i, "type": op.type, "reason": left_reason(g, op, made)}
            for i, op in enumerate(g.ops)
            if settings.kernels == "xnnpack" and i not in in_delegate]
    return {
        "method": METHOD, "threads": settings.threads, "kernels": settings.kernels,
        "rounds": settings.rounds, "whole_ms": whole_ms, "invoke_ms": invoke_ms,
        "ops_ms": ops_ms, "explained": (invoke_ms + ops_ms) / whole_ms if whole_ms else 0.0,
        "overhead_ms": whole_ms - invoke_ms - ops_ms, "ops": rows,
        "by_type": dict(sorted(by_type.items(), key=lambda kv: -kv[1]["ms"])),
        "delegate": ({"name": "XNNPACK", "partitions": len(partitions),
                      "delegated": len(in_delegate), "nodes": n, "left": left}
                     if settings.kernels == "xnnpack" else None),
    }


def metrics(result: dict[str, Any] | None) -> dict[str, Any]:
    """A profile's figures as metrics (`pipeline.metrics`): each op type's time per inference
    (`op_ms.<op>`), the share the per-op times explain, and the operators the delegate
    took and left."""
    if not result or "error" in result:
        return {}
    out: dict[str, Any] = {f"op_ms.{k}": v["ms"] for k, v in result["by_type"].items()}
    out["profile_explained"] = result["explained"]
    if result.get("delegate"):
        out["xnnpack_delegated_ops"] = result["delegate"]["delegated"]
        out["xnnpack_left_ops"] = len(result["delegate"]["left"])
    return out


COLUMNS = ("setting", "index", "type", "kernel", "ms", "share", "macs", "inputs", "outputs",
           "weights", "note", "error")


def rows(profiles: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """Every profiled setting's operator rows, each with its setting (`t1`, ...)."""
    return [{"setting": key, **r} for key, result in profiles.items()
            for r in result.get("ops", [])]


def table(profiles: dict[str, dict[str, Any]]) -> str:
    """The per-operator rows as CSV text (the benchmark stage's `<variant>.ops.csv`, an
    artifact of the variant's MLflow run)."""
    from pipeline.io import csv_text

    return csv_text(rows(profiles), COLUMNS)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--kernels", default="xnnpack")
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--sample", type=Path, help="the input (.npy; default: uniform 0..1)")
    parser.add_argument("--json", type=Path, help="write the profile here, print nothing")
    parser.add_argument("--skip", type=int, nargs="*", default=[], help="operators not to time")
    args = parser.parse_args()
    from pipeline.io import write_json
    from pipeline.measure.litert import load_interpreter

    if args.sample:
        sample = np.load(args.sample)
    else:
        shape = load_interpreter(args.model).get_input_details()[0]["shape"]
        sample = np.random.default_rng(0).random(tuple(int(d) for d in shape), np.float32)
    result = profile(args.model, sample, Settings(args.threads, args.kernels, args.rounds),
                     tuple(args.skip), announce=args.json is not None)
    if args.json:
        write_json(args.json, result)
        return
    print(table({"profile": result}))
    print(json.dumps({k: v for k, v in result.items() if k != "ops"}, indent=2))


if __name__ == "__main__":
    main()
