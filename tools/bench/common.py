"""What the bench sections share: running a stage script and measuring it."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent.parent


def run_stage(stage: str, *args: str, root: Path, params: Path | None = None
              ) -> tuple[float, float]:
    """Run `stages/<stage>.py` as `dvc repro` runs it, under `root`.

    Returns:
        `(wall seconds, peak RSS in MiB)` of that process, as the kernel counted it.

    Raises:
        RuntimeError: with the end of its output if it fails.
    """
    cmd = [sys.executable, str(ROOT / "stages" / f"{stage}.py"), *args, "--root", str(root),
           "--params", str(params or root / "params.yaml")]
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=root, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            env={**os.environ, "PYTHONPATH": str(ROOT)})
    output = proc.stdout.read().decode(errors="replace") if proc.stdout else ""
    _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - start
    if os.waitstatus_to_exitcode(status) != 0:
        raise RuntimeError(f"{stage} {' '.join(args)} failed:\n{output[-3000:]}")
    return seconds, usage.ru_maxrss / 1024
