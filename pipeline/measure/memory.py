"""Peak memory (RSS) of loading and running one `.tflite` model, measured in a fresh process
so that no other model's memory leaks into the figure (no TensorFlow).

    python -m pipeline.measure.memory models/tflite/int8/int8.tflite --threads 1
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any


def _status_kib(field: str) -> int:
    """A `VmRSS`/`VmHWM` line of /proc/self/status, in KiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"/proc/self/status has no {field}")


def _measure(path: str, threads: int, invokes: int) -> dict[str, float]:
    import ai_edge_litert.interpreter  # noqa: F401  (the library's own memory: baseline)
    import numpy as np

    from pipeline.measure.litert import Runner

    baseline = _status_kib("VmRSS")  # interpreter library and numpy loaded, no model yet
    Path("/proc/self/clear_refs").write_text("5")  # reset the peak (VmHWM) to the current RSS
    runner = Runner(path, num_threads=threads)
    loaded = _status_kib("VmRSS")
    runner.set_input(np.zeros((runner.batch_size, *runner.sample_shape), np.float32))
    for _ in range(invokes):
        runner.invoke()
    peak = _status_kib("VmHWM")
    return {"baseline_rss_mb": baseline / 1024, "load_rss_delta_mb": (loaded - baseline) / 1024,
            "peak_rss_delta_mb": (peak - baseline) / 1024, "peak_rss_mb": peak / 1024,
            "pid": os.getpid()}


def peak_rss(path: str | Path, threads: int = 1, invokes: int = 10,
             timeout: float = 120.0) -> dict[str, Any]:
    """Measure one model in a fresh subprocess.

    Returns:
        `baseline_rss_mb` (process before the model), `load_rss_delta_mb`,
        `peak_rss_delta_mb` (the model's share of the peak) and `peak_rss_mb`, in MiB, and
        the measuring process's `pid`.

    Raises:
        RuntimeError: with the subprocess's error output if it fails.
    """
    proc = subprocess.run([sys.executable, "-m", "pipeline.measure.memory", str(path), "--threads",
                           str(threads), "--invokes", str(invokes)],
                          capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        raise RuntimeError(f"memory measurement of {path} failed: {proc.stderr.strip()}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--invokes", type=int, default=10)
    args = parser.parse_args()
    print(json.dumps(_measure(args.model, args.threads, args.invokes)))


if __name__ == "__main__":
    main()
