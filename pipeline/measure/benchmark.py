"""Latency of single-sample `invoke()`, after the method of TFLite's `benchmark_model`
(no TensorFlow).

For every setting (thread count x XNNPACK on/off) in a fresh interpreter: init time, first
inference, a warm-up of at least `warmup_runs` and `warmup_seconds`, then at least `min_runs`
timed invokes lasting at least `min_seconds` (at most `max_seconds`). Only `invoke()` is
timed; the input is set once, outside the timed region. The speed-up against the reference
is measured interleaved (reference and variant alternately, same process), so the machine's
drift cancels. Peak memory is measured in a fresh subprocess (`pipeline.measure.memory`).
"""

from __future__ import annotations

import importlib.metadata
import logging
import os
import platform
import time
from pathlib import Path
from typing import Any

import numpy as np

from pipeline import stats
from pipeline.config import BenchmarkConfig
from pipeline.measure import profile
from pipeline.measure.litert import Runner
from pipeline.measure.memory import peak_rss

log = logging.getLogger(__name__)

BLOCK_SECONDS = 0.002  # interleaved timing: each turn runs invokes for about this long


def kernel_path(xnnpack: bool) -> str:
    """The benchmark's XNNPACK switch as a kernel path: with it, or the built-in kernels."""
    return "xnnpack" if xnnpack else "builtin"


def setting_key(threads: int, xnnpack: bool) -> str:
    """Name of one setting in results and metric names: `t2`, `t1_noxnnpack`."""
    return f"t{threads}" + ("" if xnnpack else "_noxnnpack")


# The CPU's vector extensions that decide how fast XNNPACK's kernels run: x86 (FMA, F16C, AVX2,
# AVX-512, and the int8 dot products VNNI and AMX) and Arm (NEON, its dot product and i8mm).
SIMD = ("fma", "f16c", "avx2", "avx512f", "avx512_vnni", "avx_vnni", "amx_int8", "asimd",
        "asimddp", "i8mm", "fphp")
INT8_DOT = frozenset({"avx512_vnni", "avx_vnni", "amx_int8", "asimddp", "i8mm"})


def machine() -> dict[str, str]:
    """What the figures were measured on: CPU model, cores, its vector extensions (`simd`),
    library versions."""
    cpu = platform.processor() or platform.machine()
    flags: set[str] = set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name") and cpu == (platform.processor()
                                                         or platform.machine()):
                cpu = line.split(":", 1)[1].strip()
            elif line.startswith(("flags", "Features")) and not flags:
                flags = set(line.split(":", 1)[1].split())
    except OSError:
        pass

    def version(pkg: str) -> str:
        try:
            return importlib.metadata.version(pkg)
        except importlib.metadata.PackageNotFoundError:
            return "absent"

    return {"cpu": cpu, "cores": str(os.cpu_count()),
            "simd": " ".join(f for f in SIMD if f in flags) or "unknown",
            "platform": platform.platform(),
            "python": platform.python_version(), "ai_edge_litert": version("ai-edge-litert"),
            "numpy": version("numpy")}


def _invokes(runner: Runner, min_runs: int, min_seconds: float,
             max_seconds: float) -> np.ndarray:
    """Invoke until both minimums are met (or `max_seconds` passed); ms per invoke."""
    times: list[float] = []
    start = time.perf_counter()
    while True:
        t0 = time.perf_counter()
        runner.invoke()
        times.append(time.perf_counter() - t0)
        elapsed = time.perf_counter() - start
        if (len(times) >= min_runs and elapsed >= min_seconds) or elapsed >= max_seconds:
            return np.array(times) * 1e3


def summarize_ms(times_ms: np.ndarray) -> dict[str, float]:
    """mean, std, min, max, p50 (with its bootstrap 95% interval), p90, p95, p99 and the
    coefficient of variation of latencies."""
    mean = float(times_ms.mean())
    low, high = stats.median_interval(times_ms)
    return {
        "latency_ms_p50_ci_low": low,
        "latency_ms_p50_ci_high": high,
        "latency_ms_mean": mean,
        "latency_ms_std": float(times_ms.std()),
        "latency_ms_min": float(times_ms.min()),
        "latency_ms_max": float(times_ms.max()),
        "latency_ms_p50": float(np.percentile(times_ms, 50)),
        "latency_ms_p90": float(np.percentile(times_ms, 90)),
        "latency_ms_p95": float(np.percentile(times_ms, 95)),
        "latency_ms_p99": float(np.percentile(times_ms, 99)),
        "latency_cv": float(times_ms.std() / mean) if mean > 0 else 0.0,
        "runs": int(len(times_ms)),
    }


def measure(tflite_path: str | Path, sample: np.ndarray, cfg: BenchmarkConfig, threads: int,
            xnnpack: bool) -> dict[str, Any]:
    """One setting, in a fresh interpreter: init, first inference, warm-up, timed runs."""
    t0 = time.perf_counter()
    runner = Runner(tflite_path, num_threads=threads, kernels=kernel_path(xnnpack))
    init_ms = (time.perf_counter() - t0) * 1e3
    runner.set_input(sample)
    t0 = time.perf_counter()
    runner.invoke()
    first_ms = (time.perf_counter() - t0) * 1e3
    warmup = _invokes(runner, cfg.warmup_runs, cfg.warmup_seconds, cfg.max_seconds)
    timed = _invokes(runner, cfg.min_runs, cfg.min_seconds, cfg.max_seconds)
    return {"num_threads": threads, "xnnpack": xnnpack, "init_ms": init_ms,
            "first_inference_ms": first_ms, "warmup_ms_mean": float(warmup.mean()),
            **summarize_ms(timed)}


def interleaved_speedup(reference_path: str | Path, tflite_path: str | Path,
                        sample: np.ndarray, cfg: BenchmarkConfig, threads: int,
                        xnnpack: bool) -> dict[str, float]:
    """Reference p50 / variant p50, timed in alternating blocks in one process, with the
    bootstrap 95% interval of that ratio over the rounds of blocks.

    Each turn times a block of invokes (about `BLOCK_SECONDS` long) of one model, then of the
    other, swapping who goes first every round; rounds continue until both minimums of
    `cfg` are met. Drift of the machine hits both models alike and cancels in the ratio.

    Returns:
        `speedup_vs_float32` (the ratio; above 1: this model is faster), `speedup_ci_low`,
        `speedup_ci_high`.
    """
    runners = [Runner(p, num_threads=threads, kernels=kernel_path(xnnpack))
               for p in (reference_path, tflite_path)]
    blocks = []
    for r in runners:
        r.set_input(sample)
        warm = _invokes(r, cfg.warmup_runs, cfg.warmup_seconds / 2, cfg.max_seconds)
        blocks.append(max(1, int(BLOCK_SECONDS * 1e3 / max(float(np.median(warm)), 1e-6))))
    per_invoke: list[list[float]] = [[], []]
    start = time.perf_counter()
    rounds = 0
    while True:
        order = (0, 1) if rounds % 2 == 0 else (1, 0)
        for i in order:
            t0 = time.perf_counter()
            for _ in range(blocks[i]):
                runners[i].invoke()
            per_invoke[i].append((time.perf_counter() - t0) / blocks[i])
        rounds += 1
        elapsed = time.perf_counter() - start
        if (rounds >= cfg.min_runs and elapsed >= cfg.min_seconds) or elapsed >= cfg.max_seconds:
            break
    low, high = stats.ratio_interval(per_invoke[0], per_invoke[1])
    return {"speedup_vs_float32": float(np.median(per_invoke[0]) / np.median(per_invoke[1])),
            "speedup_ci_low": low, "speedup_ci_high": high}


def benchmark(tflite_path: str | Path, sample: np.ndarray, cfg: BenchmarkConfig,
              reference_path: str | Path | None = None, progress: bool = True
              ) -> dict[str, Any]:
    """Time single-sample inference of one model in every configured setting.

    Args:
        tflite_path: The `.tflite` file.
        sample: One input `(1, *input_shape)` float32.
        cfg: Runs, durations, thread counts, XNNPACK settings, memory measurement.
        reference_path: The reference model for `speedup_vs_float32`; None when this model
            is the reference (speed-up 1).
        progress: Show a progress bar (on a terminal).

    Returns:
        `settings` (`{setting_key: figures}`), `headline` (the first setting's key) with its
        figures copied to the top level (`latency_ms_p50`, `speedup_vs_float32`, ...),
        `memory` (peak RSS, MiB), `machine`, and with `cfg.profile` the per-operator
        `profiles` (`pipeline.measure.profile`), one per kernel path of `cfg.xnnpack` at the
        first thread count (keyed by setting), measured after the timing, never inside it.
    """
    from tqdm import tqdm

    combos = [(t, x) for t in cfg.num_threads for x in cfg.xnnpack]
    profiled = [(cfg.num_threads[0], x) for x in cfg.xnnpack] if cfg.profile else []
    name = Path(tflite_path).stem
    settings: dict[str, dict[str, Any]] = {}
    with tqdm(total=len(combos) * 2 + cfg.memory + len(profiled), desc=f"benchmark {name}",
              unit="step",
              disable=None if progress else True, leave=False) as bar:
        for threads, xnnpack in combos:
            key = setting_key(threads, xnnpack)
            bar.set_postfix_str(key)
            figures = measure(tflite_path, sample, cfg, threads, xnnpack)
            bar.update()
            figures.update({"speedup_vs_float32": 1.0, "speedup_ci_low": 1.0,
                            "speedup_ci_high": 1.0} if reference_path is None else
                           interleaved_speedup(reference_path, tflite_path, sample, cfg,
                                               threads, xnnpack))
            bar.update()
            settings[key] = figures
            log.info("%s %s: p50 %.4f ms (cv %.2f) over %d runs, %.2fx vs reference", name,
                     key, figures["latency_ms_p50"], figures["latency_cv"], figures["runs"],
                     figures["speedup_vs_float32"])
        memory = {}
        if cfg.memory:
            memory = peak_rss(tflite_path, threads=cfg.num_threads[0])
            bar.update()
        profiles = {}
        for threads, xnnpack in profiled:
            key = setting_key(threads, xnnpack)
            bar.set_postfix_str(f"per-op {key}")
            profiles[key] = profile.isolated(tflite_path, sample, profile.Settings(
                threads, kernel_path(xnnpack), cfg.profile_rounds))
            bar.update()
    headline = setting_key(*combos[0])
    return {**settings[headline], "headline": headline, "settings": settings,
            "memory": memory, "machine": machine(),
            **({"profiles": profiles, **profile.metrics(profiles.get(headline))}
               if profiles else {})}
