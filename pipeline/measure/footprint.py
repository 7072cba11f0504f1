"""What one `.tflite` variant costs on a device (no TensorFlow): its MACs, GPU delegate
compatibility, TensorFlow Lite for Microcontrollers' arena and outputs (as another kernel
path, compared with LiteRT's built-in kernels on the same samples), and Arm Vela's figures
for each Ethos-U NPU. Each tool's refusal is that part's failure with the tool's reason,
never an exception out of `measure`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.layout import VELA_DIR
from pipeline.measure import graph, micro, vela
from pipeline.measure.litert import load_interpreter, quantize_input

log = logging.getLogger(__name__)


def litert_outputs(path: str | Path, x: np.ndarray, kernels: str = "builtin") -> np.ndarray:
    """Raw outputs (in the output tensor's dtype) of LiteRT's `kernels`, one sample at a
    time, as TFLM runs them: `(n, output size)`."""
    interpreter = load_interpreter(path, num_threads=1, kernels=kernels)
    inp = interpreter.get_input_details()[0]
    out = interpreter.get_output_details()[0]
    rows = []
    for sample in x:
        interpreter.set_tensor(inp["index"], quantize_input(np.asarray(sample)[None], inp))
        interpreter.invoke()
        rows.append(np.array(interpreter.get_tensor(out["index"])).reshape(-1))
    return np.stack(rows) if rows else np.zeros((0, 0))


def _micro(path: Path, x: np.ndarray, y: np.ndarray, smallest: bool) -> dict[str, Any]:
    t0 = time.perf_counter()
    try:
        result = micro.run(path, x if len(x) else None, smallest=smallest)
    except micro.MicroError as exc:
        return {"status": "failed", "error": f"TFLite Micro cannot run it: {exc}",
                "seconds": time.perf_counter() - t0}
    outputs = result.pop("outputs", None)
    result = {"status": "ok", **result}
    if outputs is not None:
        builtin = litert_outputs(path, x)
        pred, ref = outputs.argmax(axis=1), builtin.argmax(axis=1)
        diff = np.abs(outputs.astype(np.float64) - builtin.astype(np.float64))
        result.update(
            samples=len(y), correct=int((pred == y).sum()), accuracy=float((pred == y).mean()),
            builtin_correct=int((ref == y).sum()), builtin_accuracy=float((ref == y).mean()),
            agreement=float((pred == ref).mean()),
            bit_identical=bool(np.array_equal(outputs, builtin)),
            max_abs_diff=float(diff.max()) if diff.size else 0.0,
            differing_outputs=int((diff > 0).sum()))
    result["seconds"] = time.perf_counter() - t0
    return result


def _npu(path: Path, targets: Mapping[str, vela.Target], out_dir: Path,
         integer: bool) -> dict[str, dict[str, Any]]:
    results: dict[str, dict[str, Any]] = {}
    for name, target in targets.items():
        if not integer:
            results[name] = {"status": "skipped", "error": "not an integer model: Vela "
                             "leaves float ops on the CPU"}
            continue
        try:
            results[name] = {"status": "ok",
                             **vela.compile_model(path, target, out_dir / VELA_DIR / name)}
        except vela.VelaError as exc:
            results[name] = {"status": "failed", "error": f"Vela: {exc}"}
    return results


def measure(path: str | Path, x: Any, y: Any, out_dir: str | Path, *,
            integer: bool, samples: np.ndarray | None = None, micro_kernels: bool = True,
            smallest_arena: bool = True, gpu: bool = True,
            npu: Mapping[str, vela.Target] | None = None) -> dict[str, Any]:
    """Measure one variant on every device tool. Reading `x` here (the test split, in the
    footprint stage) is the TFLM kernel path's evaluation, and nothing else reads it.

    Args:
        path: The `.tflite` file.
        x: Float samples (an array or a memory map): those of `samples` run on TFLM's kernels
            (and LiteRT's built-in ones, to compare).
        y: Their labels.
        samples: Indices of the samples to run; None: all of them.
        out_dir: Where Vela's reports and compiled models go (`vela/<target>/`).
        integer: Whether the model computes in integers only (Vela compiles only those).
        micro_kernels: Allocate the model in TFLM (arena) and run `x` through it.
        smallest_arena: Also search the smallest arena it runs in.
        gpu: Ask LiteRT's analyzer about the GPU delegate.
        npu: `{accelerator: Vela target}` to compile for.

    Returns:
        `size_bytes`, `macs`, `macs_by_op_type`, `gpu` (`pipeline.measure.graph.
        gpu_compatibility`), `micro` (`status`, arena figures, and on `x` its `accuracy`,
        `builtin_accuracy`, `agreement`, `bit_identical`, `max_abs_diff`), `npu`
        (`{accelerator: figures or failure}`) and `seconds` per part.
    """
    path, out = Path(path), Path(out_dir)
    seconds: dict[str, float] = {}
    t0 = time.perf_counter()
    result: dict[str, Any] = {"status": "ok", "size_bytes": path.stat().st_size,
                              **graph.macs(path)}
    seconds["macs"] = time.perf_counter() - t0
    if gpu:
        t0 = time.perf_counter()
        result["gpu"] = graph.gpu_compatibility(path)
        seconds["gpu"] = time.perf_counter() - t0
    if micro_kernels:
        picked = slice(None) if samples is None else samples
        result["micro"] = _micro(path, np.asarray(x[picked], np.float32),
                                 np.asarray(y[picked]), smallest_arena)
        seconds["micro"] = result["micro"]["seconds"]
    if npu:
        result["npu"] = _npu(path, npu, out, integer)
        seconds.update({f"vela.{k}": v["seconds"] for k, v in result["npu"].items()
                        if "seconds" in v})
    result["seconds"] = seconds
    log.info("%s: %s MACs, arena %s, %s", path.stem, f"{result['macs']:,}",
             f"{result['micro']['arena_bytes']:,} B" if result.get("micro", {}).get(
                 "status") == "ok" else "-",
             ", ".join(f"{k} SRAM {v['sram_bytes']:,} B" if v["status"] == "ok"
                       else f"{k} {v['status']}" for k, v in result.get("npu", {}).items()))
    return result
