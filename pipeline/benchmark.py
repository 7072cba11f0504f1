"""Latency of single-sample `invoke()`, after the method of TFLite's `benchmark_model`
(no TensorFlow): a warm-up of at least `warmup_runs` and `warmup_seconds`, then at least
`min_runs` timed invokes lasting at least `min_seconds` (at most `max_seconds`). Only
`invoke()` is timed; the input is set once, outside the timed region.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.config import BenchmarkConfig
from pipeline.litert import Runner

log = logging.getLogger(__name__)


def _timed_invokes(runner: Runner, min_runs: int, min_seconds: float,
                   max_seconds: float) -> list[float]:
    """Invoke until both minimums are met (or `max_seconds` passed); seconds per invoke."""
    times: list[float] = []
    start = time.perf_counter()
    while True:
        t0 = time.perf_counter()
        runner.invoke()
        times.append(time.perf_counter() - t0)
        elapsed = time.perf_counter() - start
        if (len(times) >= min_runs and elapsed >= min_seconds) or elapsed >= max_seconds:
            return times


def benchmark(tflite_path: str | Path, sample: np.ndarray, cfg: BenchmarkConfig
              ) -> dict[str, Any]:
    """Time single-sample inference of one model.

    Args:
        tflite_path: The `.tflite` file.
        sample: One input `(1, *input_shape)` float32.
        cfg: Runs, durations and threads.

    Returns:
        Latencies in milliseconds (`latency_ms_mean`, `_p50`, `_p90`, `_std`, `_min`, `_max`),
        `init_ms`, `first_inference_ms`, `warmup_ms_mean`, `runs` and `num_threads`.
    """
    t0 = time.perf_counter()
    runner = Runner(tflite_path, num_threads=cfg.num_threads)
    init_ms = (time.perf_counter() - t0) * 1e3
    runner.set_input(sample)
    t0 = time.perf_counter()
    runner.invoke()
    first_ms = (time.perf_counter() - t0) * 1e3
    warmup = _timed_invokes(runner, cfg.warmup_runs, cfg.warmup_seconds, cfg.max_seconds)
    timed = np.array(_timed_invokes(runner, cfg.min_runs, cfg.min_seconds, cfg.max_seconds)
                     ) * 1e3  # ms
    result = {
        "num_threads": cfg.num_threads,
        "runs": int(len(timed)),
        "init_ms": init_ms,
        "first_inference_ms": first_ms,
        "warmup_ms_mean": float(np.mean(warmup) * 1e3),
        "latency_ms_mean": float(timed.mean()),
        "latency_ms_std": float(timed.std()),
        "latency_ms_min": float(timed.min()),
        "latency_ms_max": float(timed.max()),
        "latency_ms_p50": float(np.percentile(timed, 50)),
        "latency_ms_p90": float(np.percentile(timed, 90)),
    }
    log.info("%s: p50 %.4f ms over %d runs (%d threads)", Path(tflite_path).stem,
             result["latency_ms_p50"], result["runs"], cfg.num_threads)
    return result
