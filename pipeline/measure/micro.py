"""TensorFlow Lite for Microcontrollers (`tflite-micro`): the tensor arena a model needs on a
microcontroller, the smallest arena it runs in, and its outputs on TFLM's reference kernels
(no TensorFlow).

TFLM prints its figures from C++ and aborts the process on some failures (an arena a few
bytes too small segfaults), so every call runs in a child process:

    python -m pipeline.measure.micro models/tflite/int8_full/int8_full.tflite --out r.json
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.measure.litert import quantize_input

# A generous arena for the first allocation; the smallest is then searched below it.
MAX_ARENA = 64 << 20  # bytes
ALIGNMENT = 16  # bytes: TFLM aligns the arena's start and its allocations to this
_RECORDED = re.compile(r"Arena allocation (total|head|tail) (\d+) bytes")
# Lines of a Python traceback, left out of a failure's reason.
_TRACEBACK = re.compile(r"^(Traceback|\s|RuntimeError: TFLM failed|\^)")
_NODE = re.compile(r"Node (\w+) \(number (\d+)\) failed to (\w+)")
_SOURCE = re.compile(r"^tensorflow/lite/micro/\S+\.cc(:\d+)?\s*")  # the kernel's file


class MicroError(Exception):
    """TFLM cannot run the model (an op without a micro kernel, a type it lacks)."""


def _detail(d: dict[str, Any]) -> dict[str, Any]:
    """TFLM's tensor details in the form `pipeline.measure.litert` uses."""
    q = d["quantization_parameters"]
    scale = float(q["scales"][0]) if len(q["scales"]) else 0.0
    zero_point = int(q["zero_points"][0]) if len(q["zero_points"]) else 0
    return {"dtype": d["dtype"], "shape": d["shape"], "quantization": (scale, zero_point),
            "name": "input"}


def _runs(path: str, arena: int) -> bool:
    """Whether the model allocates and runs once in `arena` bytes, tried in a forked child
    (a too-small arena can crash the process)."""
    pid = os.fork()
    if pid == 0:  # child: no output, no cleanup (os._exit does not flush C stdio buffers)
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, 1)
        os.dup2(devnull, 2)
        try:
            from tflite_micro.python.tflite_micro import runtime

            it = runtime.Interpreter.from_file(path, arena_size=arena)
            d = it.get_input_details(0)
            it.set_input(np.zeros(d["shape"], d["dtype"]), 0)
            it.invoke()
        except BaseException:
            os._exit(1)
        os._exit(0)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status) == 0


def smallest_arena(path: str, start: int = 4096) -> int:
    """The smallest arena (a multiple of `ALIGNMENT` bytes) the model runs in: doubling from
    `start` until it runs, then bisection (about 20 forked tries for a 100 KB arena)."""
    low, high = 0, start  # low fails (or is 0), high runs
    while not _runs(path, high):
        if high >= MAX_ARENA:
            raise MicroError(f"the model does not run in an arena of {MAX_ARENA} bytes")
        low, high = high, min(high * 2, MAX_ARENA)
    while high - low > ALIGNMENT:
        mid = (low + high) // 2 // ALIGNMENT * ALIGNMENT
        if mid <= low:
            break
        if _runs(path, mid):
            high = mid
        else:
            low = mid
    return high


def _child(path: str, out: str, inputs: str | None, outputs: str | None,
           smallest: bool) -> None:
    from tflite_micro.python.tflite_micro import runtime

    result: dict[str, Any] = {}
    it = runtime.Interpreter.from_file(path, arena_size=MAX_ARENA)  # raises: not runnable
    detail = _detail(it.get_input_details(0))
    out_detail = it.get_output_details(0)
    it.set_input(np.zeros(detail["shape"], detail["dtype"]), 0)
    it.invoke()
    sys.stdout.flush()
    it.print_allocations()  # C++ to stderr: the parent parses it
    if inputs is not None and outputs is not None:
        x = np.load(inputs, mmap_mode="r")
        rows = []
        for sample in x:  # TFLM runs one sample at a time, as a microcontroller does
            it.set_input(quantize_input(np.asarray(sample)[None], detail), 0)
            it.invoke()
            rows.append(np.array(it.get_output(0)).reshape(-1))
        np.save(outputs, np.stack(rows) if rows else np.zeros((0, 0)))
    result["input_dtype"] = np.dtype(detail["dtype"]).name
    result["output_dtype"] = np.dtype(out_detail["dtype"]).name
    if smallest:
        # The recorded total is a lower bound; the interpreter's own objects come on top.
        result["smallest_arena_bytes"] = smallest_arena(path)
    Path(out).write_text(json.dumps(result))


def _reason(text: str) -> str:
    """TFLM's own words from a failed child's output, op first: `CONV_2D (node 2) failed to
    prepare: Hybrid models are not supported on TFLite Micro.`"""
    lines = [_SOURCE.sub("", ln.strip()) for ln in text.splitlines()
             if ln.strip() and not _TRACEBACK.match(ln)
             and not ln.startswith("[RecordingMicroAllocator]")]
    for i, line in enumerate(lines):
        if (m := _NODE.match(line)):
            detail = "; ".join(lines[max(0, i - 2):i])
            return f"{m[1]} (node {m[2]}) failed to {m[3]}" + (f": {detail}" if detail else "")
    return "; ".join(lines[-3:]) or "TFLM failed to allocate tensors"


def run(path: str | Path, x: np.ndarray | None = None, smallest: bool = True,
        timeout: float = 600.0) -> dict[str, Any]:
    """Allocate the model in TFLM, report its arena, and optionally run `x` through it.

    Args:
        path: The `.tflite` file.
        x: Float samples `(n, *input_shape)` to run one at a time (quantized with the
            input's scale and zero point), or None.
        smallest: Also search the smallest arena it runs in (a dozen forked tries).

    Returns:
        `arena_bytes` (what TFLM's recording allocator used: `arena_persistent_bytes`, the
        tail, plus `arena_nonpersistent_bytes`, the head: activations and scratch),
        `smallest_arena_bytes` (with `smallest`), `input_dtype`, `output_dtype`, and with
        `x` the raw `outputs` (n, output size) in the output tensor's dtype.

    Raises:
        MicroError: with TFLM's reason if it cannot allocate or run the model.
    """
    with tempfile.TemporaryDirectory(prefix="micro-") as tmp:
        out, xin, yout = (str(Path(tmp) / n) for n in ("r.json", "x.npy", "y.npy"))
        args = [sys.executable, "-m", "pipeline.measure.micro", str(path), "--out", out]
        if x is not None:
            np.save(xin, np.asarray(x, np.float32))
            args += ["--inputs", xin, "--outputs", yout]
        if not smallest:
            args.append("--no-smallest")
        root = str(Path(__file__).resolve().parents[2])
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(
            [root, *filter(None, [os.environ.get("PYTHONPATH")])])}
        proc = subprocess.run(args, capture_output=True, text=True, timeout=timeout, env=env)
        text = proc.stdout + "\n" + proc.stderr
        if proc.returncode != 0 or not Path(out).is_file():
            how = f" (killed by signal {-proc.returncode})" if proc.returncode < 0 else ""
            raise MicroError(_reason(text) + how)
        result = json.loads(Path(out).read_text())
        recorded = {k: int(v) for k, v in _RECORDED.findall(text)}
        if "total" not in recorded:
            raise MicroError(f"TFLM printed no arena figures: {_reason(text)}")
        result.update(arena_bytes=recorded["total"],
                      arena_persistent_bytes=recorded.get("tail", 0),
                      arena_nonpersistent_bytes=recorded.get("head", 0))
        if x is not None:
            result["outputs"] = np.load(yout)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model")
    parser.add_argument("--out", required=True, help="result JSON")
    parser.add_argument("--inputs", help=".npy of float samples to run")
    parser.add_argument("--outputs", help=".npy to write the raw outputs to")
    parser.add_argument("--no-smallest", action="store_true",
                        help="skip the search of the smallest arena")
    args = parser.parse_args()
    _child(args.model, args.out, args.inputs, args.outputs, not args.no_smallest)


if __name__ == "__main__":
    main()
