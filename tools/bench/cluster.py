"""Sweeps on Ray: the same small sweep (4 jobs of the tiny config: 2 models x 2 seeds, the
float32 and dynamic-range variants) on a Ray cluster of one node, then of two (each node 1
CPU, started on this machine as on many: `ray start --head`, `ray start --address=...`), wall
time of each and the ratio; then one job alone with Ray and with the joblib launcher, and
the time Ray adds to it.

On this 2-core machine two 1-CPU nodes are the whole machine: the ratio says how much of the
second node the sweep uses (ideal 2.0x), not what a cluster of separate machines gives.

    python -m tools.bench --only cluster
"""

from __future__ import annotations

import os
import re
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from pipeline.cluster import stop_cluster
from pipeline.params import ROOT

BIN = Path(sys.executable).parent
TINY = ("data=digits", "model.filters=[4,8]", "model.dense_units=32", "train.epochs=3",
        "train.batch_size=32", "qat.epochs=1", "quantization.calibration_samples=16",
        "benchmark.warmup_seconds=0.01", "benchmark.min_runs=5", "benchmark.min_seconds=0.02",
        "benchmark.memory=false", "evaluate.kernel_paths=[xnnpack]",
        "benchmark.num_threads=[1]")
KEEP = ("float32", "dynamic_range")


def _overrides() -> list[str]:
    from pipeline.params import compose

    return [*TINY, *(f"~quantization.variants.{v}" for v in compose()["quantization"]["variants"]
                     if v not in KEEP), "calibration=off"]  # KEEP takes no calibration


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _ray(args: list[str], env: dict[str, str]) -> None:
    proc = subprocess.run([str(BIN / "ray"), *args], env=env, capture_output=True, text=True,
                          timeout=300)
    if proc.returncode != 0:
        raise RuntimeError(f"ray {args[0]} failed: {proc.stdout[-800:]}{proc.stderr[-800:]}")


def sweep(args: list[str], env: dict[str, str], work: Path) -> tuple[float, float | None]:
    """Wall seconds of `python -m pipeline -m ...args` in `work` (logging to its own store),
    and of its jobs alone on Ray (from the launch to the last job's end, as the launcher logs
    it; None with another launcher)."""
    started = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "pipeline", "-m", *args, *_overrides(),
                           f"tracking.uri=sqlite:///{work / 'mlflow.db'}"],
                          cwd=work, env={**env, "PYTHONPATH": str(ROOT)},
                          capture_output=True, text=True, timeout=3600)
    if proc.returncode != 0:
        raise RuntimeError(f"sweep failed: {(proc.stdout + proc.stderr)[-2000:]}")
    ends = [float(s) for s in re.findall(r"job \d+ done after (\d+) s",
                                         proc.stdout + proc.stderr)]
    return time.perf_counter() - started, max(ends) if ends else None


def main() -> None:
    print("\n== Sweeps on Ray: 4 tiny jobs on 1 and 2 nodes of 1 CPU each ==", flush=True)
    port = _free_port()
    env = {**os.environ, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(16),
           "RAY_ADDRESS": f"127.0.0.1:{port}"}
    temp = Path(tempfile.mkdtemp(prefix="ray", dir="/tmp"))
    four = ["hydra/launcher=ray", "hydra.launcher.ray.remote.num_cpus=1",
            "model=small_cnn,tiny_cnn", "seed=1,2"]
    one = ["model=small_cnn", "seed=1"]
    try:
        _ray(["start", "--head", f"--port={port}", "--node-ip-address=127.0.0.1",
              "--num-cpus=1", "--include-dashboard=false", "--disable-usage-stats",
              f"--temp-dir={temp / 'ray'}"], env)
        (temp / "one").mkdir()
        one_node, one_jobs = sweep(four, env, temp / "one")
        print(f"1 node : {one_node:6.1f} s for 4 jobs ({one_jobs:.0f} s from launch to the "
              "last job's end; the rest is the launching process)", flush=True)
        ray_job, _ = sweep(["hydra/launcher=ray", "hydra.launcher.ray.remote.num_cpus=1",
                            *one], env, temp / "one")
        _ray(["start", f"--address=127.0.0.1:{port}", "--node-ip-address=127.0.0.1",
              "--num-cpus=1", "--disable-usage-stats"], env)
        (temp / "two").mkdir()
        two_nodes, two_jobs = sweep(four, env, temp / "two")
        print(f"2 nodes: {two_nodes:6.1f} s for 4 jobs ({two_jobs:.0f} s of jobs); "
              f"{one_node / two_nodes:.2f}x faster than 1 node, jobs alone "
              f"{one_jobs / two_jobs:.2f}x (ideal 2.00x)", flush=True)
    finally:
        stop_cluster(temp / "ray", port)
    (temp / "joblib").mkdir()
    local = {k: v for k, v in env.items() if k != "RAY_ADDRESS"}
    joblib_job, _ = sweep(["hydra/launcher=parallel", "hydra.launcher.n_jobs=1", *one], local,
                          temp / "joblib")
    print(f"1 job  : {ray_job:6.1f} s on Ray (cluster running), {joblib_job:6.1f} s with "
          f"joblib; Ray adds {ray_job - joblib_job:+.1f} s ({ray_job / joblib_job:.2f}x)",
          flush=True)
    shutil.rmtree(temp, ignore_errors=True)


if __name__ == "__main__":
    main()
