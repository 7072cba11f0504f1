"""The warm worker (`pipeline.worker`): a stage that runs longer than the worker's idle time
still gets its exit code back (the worker is idle only when no stage runs)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

from conftest import ROOT

CLIENT = """
import sys
from pathlib import Path
from pipeline import worker
sys.argv = [sys.argv[1]]
sys.exit(worker.run_stage(Path("{root}")))
"""


def test_a_stage_longer_than_the_idle_time_gets_its_exit_code(tmp_path: Path) -> None:
    stage = tmp_path / "stages" / "slow.py"
    stage.parent.mkdir()
    stage.write_text("import os, sys, time\ntime.sleep(6)\n"
                     "open(sys.argv[0] + '.done', 'w').write(os.environ['LAB_IN_WORKER'])\n"
                     "sys.exit(7)\n")
    # A worker of its own (PYTHONPATH is part of its identity), idle after 1 s.
    env = {**os.environ, "LAB_WORKER_IDLE": "1", "PYTHONPATH": f"{ROOT}:{tmp_path}"}
    env.pop("LAB_WORKER", None)
    started = time.monotonic()
    client = subprocess.run([sys.executable, "-c", CLIENT.format(root=ROOT), str(stage)],
                            env=env, capture_output=True, text=True, timeout=300)
    assert client.returncode == 7, client.stderr
    assert "stopped answering" not in client.stderr
    assert (tmp_path / "stages" / "slow.py.done").read_text() == "1"  # it ran in the worker
    assert time.monotonic() - started > 6
