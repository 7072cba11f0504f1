"""The price of one process per stage: a forced `dvc repro` of the default config against
`python -m pipeline` (every step in one process) on the same config, in a scratch copy of the
project, measured alternately. With the warm worker (`pipeline.worker`) the TensorFlow stages
skip `import tensorflow`; `LAB_WORKER=0` shows the cost without it.

Goal: `dvc repro` at most 1.5x the single process.

    python -m tools.bench --only pipeline
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import time
from pathlib import Path

from tools.project import project_copy, project_env


def _timed(cmd: list[str], cwd: Path, env: dict[str, str]) -> float:
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{proc.stderr[-3000:]}")
    return time.perf_counter() - start


def main(repeats: int = 1) -> dict[str, list[float]]:
    bin_dir = Path(sys.executable).parent
    times: dict[str, list[float]] = {"dvc repro -f": [], "dvc repro -f, LAB_WORKER=0": [],
                                     "python -m pipeline": []}
    with tempfile.TemporaryDirectory() as tmp:
        project = project_copy(Path(tmp) / "lab")
        env = project_env(project, tracking_uri=f"sqlite:///{tmp}/m.db")
        _timed([str(bin_dir / "dvc"), "repro"], project, env)  # outputs and worker exist
        for _ in range(repeats):
            times["dvc repro -f"].append(_timed([str(bin_dir / "dvc"), "repro", "-f"],
                                                project, env))
            times["python -m pipeline"].append(_timed(
                [sys.executable, "-m", "pipeline", f"hydra.run.dir={tmp}/app"], project, env))
            times["dvc repro -f, LAB_WORKER=0"].append(_timed(
                [str(bin_dir / "dvc"), "repro", "-f"], project, {**env, "LAB_WORKER": "0"}))
    single = min(times["python -m pipeline"])
    print("one process per stage: the default config, forced, in a scratch copy "
          f"(best of {repeats})")
    for name, values in times.items():
        print(f"   {name:28s} {min(values):7.1f} s   {min(values) / single:4.2f}x the single "
              "process" + ("   (goal <= 1.5x)" if name == "dvc repro -f" else ""))
    return times


if __name__ == "__main__":
    main()
