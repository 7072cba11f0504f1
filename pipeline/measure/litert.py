"""Run `.tflite` models with the LiteRT interpreter (`ai_edge_litert`); no TensorFlow.

Inputs are quantized and outputs dequantized with each tensor's own scale and zero point, so
every variant takes float images and returns float scores.

A model can run on three kernel paths, and its numbers can differ between them (a blockwise
int4 model scored 0.976 with XNNPACK and 0.102 on the reference kernels): `xnnpack` (LiteRT's
default delegate, what `benchmark_model` measures), `builtin` (the built-in optimized
kernels, as on a device without the delegate) and `reference` (the reference kernels).
"""

from __future__ import annotations

import collections
import concurrent.futures
import logging
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.config import KERNEL_PATHS

log = logging.getLogger(__name__)


def _resolver(kernels: str) -> Any:
    from ai_edge_litert.interpreter import OpResolverType

    resolvers = {"xnnpack": OpResolverType.AUTO,
                 "builtin": OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES,
                 "reference": OpResolverType.BUILTIN_REF}
    if kernels not in resolvers:
        raise ValueError(f"unknown kernel path {kernels!r}; valid: {', '.join(KERNEL_PATHS)}")
    return resolvers[kernels]


def load_interpreter(path: str | Path, num_threads: int = 1, kernels: str = "xnnpack") -> Any:
    """Load a `.tflite` file and allocate its tensors.

    Args:
        path: The model file.
        num_threads: Interpreter threads.
        kernels: The kernel path, one of `KERNEL_PATHS` (`xnnpack`: LiteRT's default XNNPACK
            delegate, as `benchmark_model` uses it).

    Raises:
        FileNotFoundError: if the file is missing.
        ValueError: if the file is not a TFLite model, or `kernels` is unknown.
    """
    from ai_edge_litert.interpreter import Interpreter

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"TFLite model {path} does not exist")
    resolver = _resolver(kernels)
    try:
        interpreter = Interpreter(model_path=str(path), num_threads=num_threads,
                                  experimental_op_resolver_type=resolver)
    except ValueError as exc:
        raise ValueError(f"{path} is not a valid TFLite model: {exc}") from exc
    interpreter.allocate_tensors()
    return interpreter


def quantize_input(x: np.ndarray, detail: dict[str, Any]) -> np.ndarray:
    """Convert float input `x` to the input tensor's dtype using its scale and zero point."""
    dtype = detail["dtype"]
    if np.issubdtype(dtype, np.floating):
        return np.asarray(x, dtype=dtype)  # no copy when it already is
    scale, zero_point = detail["quantization"]
    if scale == 0:
        raise ValueError(f"input tensor {detail['name']!r} is {dtype} but has no scale")
    info = np.iinfo(dtype)
    # round(x / scale + zero_point), clipped to the dtype, in place on one temporary: this
    # runs on every evaluated batch (see `make bench`).
    q = np.multiply(x, np.float32(1.0 / scale), dtype=np.float32)
    q += np.float32(zero_point)
    np.rint(q, out=q)
    np.clip(q, info.min, info.max, out=q)
    return q.astype(dtype)


def dequantize_output(y: np.ndarray, detail: dict[str, Any]) -> np.ndarray:
    """Convert the output tensor's values to float32 using its scale and zero point."""
    if np.issubdtype(detail["dtype"], np.floating):
        return np.asarray(y, dtype=np.float32)
    scale, zero_point = detail["quantization"]
    return ((y.astype(np.float32) - zero_point) * scale).astype(np.float32)


def io_dtypes(interpreter: Any) -> tuple[str, str]:
    """Names of the first input's and first output's dtypes, e.g. `("int8", "int8")`."""
    return (np.dtype(interpreter.get_input_details()[0]["dtype"]).name,
            np.dtype(interpreter.get_output_details()[0]["dtype"]).name)


class CannotRun(Exception):
    """LiteRT cannot run a model on some kernel path (an op type its kernels lack)."""


def check_runs(path: str | Path, sample: np.ndarray,
               kernel_paths: tuple[str, ...] = KERNEL_PATHS, timeout: float = 600.0) -> None:
    """Run the model once on `sample` (one input, float) on every kernel path, in a child
    process. The converter can write a model that LiteRT's kernels refuse (a 16x8
    LayerNormalization: `SquaredDifference only supports FLOAT32 and INT32 now, got 7`), or
    that aborts the process on some input (an int16 RSQRT of zero); either is the variant's
    failure, found when it is made, never the stage's crash.

    Raises:
        CannotRun: naming the kernel path and LiteRT's reason.
    """
    import os
    import subprocess
    import sys
    import tempfile

    root = str(Path(__file__).resolve().parents[2])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [root, *filter(None, [os.environ.get("PYTHONPATH")])])}
    with tempfile.TemporaryDirectory(prefix="check-runs-") as tmp:
        x = Path(tmp) / "x.npy"
        np.save(x, np.asarray(sample, np.float32)[:1])
        proc = subprocess.run([sys.executable, "-m", "pipeline.measure.litert", str(path),
                               str(x), *kernel_paths], env=env, capture_output=True,
                              text=True, timeout=timeout)
    if proc.returncode == 0:
        return
    lines = [line for line in proc.stderr.splitlines() if line.startswith(_CHECK)]
    last = lines[-1][len(_CHECK):] if lines else "?"
    if proc.returncode < 0 or not last.startswith("LiteRT"):  # killed by a signal
        raise CannotRun(f"LiteRT aborted the process (exit {proc.returncode}) running it on "
                        f"the {last} kernels")
    raise CannotRun(last)


_CHECK = "check_runs: "


def _check_main(argv: list[str]) -> None:
    """`python -m pipeline.measure.litert MODEL X.npy PATH...` (`check_runs`' child)."""
    import sys

    path, x, paths = argv[0], np.load(argv[1]), argv[2:]
    for kernels in paths:
        print(f"{_CHECK}{kernels}", file=sys.stderr, flush=True)
        try:
            runner = Runner(path, kernels=kernels)
            runner.score(x)
        except Exception as exc:  # LiteRT on the converter's output
            reason = " ".join(str(exc).split())[:300]
            print(f"{_CHECK}LiteRT cannot run it on the {kernels} kernels: "
                  f"{type(exc).__name__}: {reason}", file=sys.stderr, flush=True)
            sys.exit(1)


class Runner:
    """Inference on one `.tflite` model, float in and float out, one batch per invoke.

    Args:
        path: The `.tflite` file.
        num_threads: Interpreter threads.
        batch_size: Samples per invoke. If the model cannot be resized to it, the runner
            falls back to 1 (see `batch_size` after construction).
        kernels: The kernel path (`KERNEL_PATHS`).
    """

    def __init__(self, path: str | Path, num_threads: int = 1, batch_size: int = 1,
                 kernels: str = "xnnpack") -> None:
        self.path = Path(path)
        self.kernels = kernels
        self.num_threads = num_threads
        self.interpreter = load_interpreter(path, num_threads, kernels)
        self.input = self.interpreter.get_input_details()[0]
        self.output = self.interpreter.get_output_details()[0]
        self.sample_shape = tuple(int(d) for d in self.input["shape"][1:])
        self.batch_size = int(self.input["shape"][0])
        if batch_size != self.batch_size:
            self._resize(batch_size)

    def _resize(self, batch_size: int) -> None:
        try:
            self.interpreter.resize_tensor_input(self.input["index"],
                                                 [batch_size, *self.sample_shape])
            self.interpreter.allocate_tensors()
            self.batch_size = batch_size
        except (RuntimeError, ValueError) as exc:  # fixed-shape graphs refuse a new batch
            log.warning("%s cannot run batches of %d (%s); using 1", self.path.name,
                        batch_size, exc)
            self.interpreter.resize_tensor_input(self.input["index"], [1, *self.sample_shape])
            self.interpreter.allocate_tensors()
            self.batch_size = 1
        self.input = self.interpreter.get_input_details()[0]
        self.output = self.interpreter.get_output_details()[0]

    def set_input(self, batch: np.ndarray) -> None:
        """Quantize and copy one batch `(batch_size, *input_shape)` into the input tensor."""
        self.interpreter.set_tensor(self.input["index"], quantize_input(batch, self.input))

    def invoke(self) -> None:
        self.interpreter.invoke()

    def get_output(self) -> np.ndarray:
        """The dequantized output, `(batch_size, num_classes)` float32."""
        return dequantize_output(self.interpreter.get_tensor(self.output["index"]), self.output)

    def check_shape(self, x: np.ndarray) -> None:
        """Refuse samples whose shape differs from the model's input.

        Raises:
            ValueError: naming the model and both shapes.
        """
        if tuple(x.shape[1:]) != self.sample_shape:
            raise ValueError(f"{self.path.name} takes samples of shape {self.sample_shape}, "
                             f"got {tuple(x.shape[1:])}")

    def score(self, batch: np.ndarray) -> np.ndarray:
        """Scores of one batch of at most `batch_size` samples, `(m, num_classes)` float32."""
        batch = np.asarray(batch, dtype=np.float32)
        m, b = len(batch), self.batch_size
        if m < b:  # pad the last batch rather than re-allocating the graph
            batch = np.concatenate([batch, np.zeros((b - m, *self.sample_shape), np.float32)])
        self.set_input(batch)
        self.invoke()
        return self.get_output()[:m]

    def predict_batches(self, x: Any, workers: int = 1) -> Iterator[np.ndarray]:
        """Scores batch by batch, in order; `x` may be a stored split, read one batch at a
        time.

        Args:
            workers: Interpreters that score separate batches at once, one thread each
                (`invoke` releases the GIL): every core busy on big test sets. Each has this
                runner's settings, so the scores are the same as with one.

        Yields:
            `(m, num_classes)` float32 for consecutive slices of `x` (`m <= batch_size`).
        """
        self.check_shape(x)
        b = self.batch_size
        starts = range(0, len(x), b)
        if workers <= 1 or len(starts) <= 1:
            for start in starts:
                yield self.score(x[start:start + b])
            return
        local = threading.local()

        def score(start: int) -> np.ndarray:
            runner = getattr(local, "runner", None)
            if runner is None:
                runner = local.runner = Runner(self.path, self.num_threads, b, self.kernels)
            return runner.score(x[start:start + b])

        with concurrent.futures.ThreadPoolExecutor(workers) as pool:
            pending: collections.deque = collections.deque()
            for start in starts:  # at most two batches per worker in flight: memory bounded
                pending.append(pool.submit(score, start))
                if len(pending) >= 2 * workers:
                    yield pending.popleft().result()
            while pending:
                yield pending.popleft().result()

    def predict(self, x: Any, workers: int = 1) -> np.ndarray:
        """Scores for every sample of `x` `(n, *input_shape)`.

        Returns:
            `(n, num_classes)` float32.
        """
        return np.concatenate(list(self.predict_batches(x, workers)))


if __name__ == "__main__":
    import sys

    _check_main(sys.argv[1:])
