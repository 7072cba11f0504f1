"""Interrupted stages lose nothing, and rebuilding from scratch gives the same bytes.

- A real train stage is killed mid-training (SIGTERM, and SIGINT as Ctrl-C sends it): its
  old output stays as it was, and no temporary file is left.
- Slow: `dvc repro` on the tiny config (a variant of each kind: `KINDS`), then
  `dvc repro -f`, whose track stage is killed
  while its MLflow run is open. Every `.tflite` file and accuracy of the second build equals
  the first's, the interrupted run ends KILLED, nothing stays RUNNING, and the next
  `dvc repro` finishes the work, running only the track stage.
"""

from __future__ import annotations

import copy
import hashlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from conftest import ROOT, TINY_OVERRIDES
from pipeline import params as params_mod
from pipeline import data
from pipeline.layout import Layout
from pipeline.io import read_json
from test_e2e import project_copy, project_env, run, runs


# One variant of each kind: the float reference, converter dynamic range and full integer,
# QAT, LiteRT Quantizer static int8 and int4, and the search (whose trials are runs too).
# All fifteen would double the test's time (two full builds) for no new kind of output.
KINDS = ("float32", "dynamic_range", "int8_full", "qat_int8", "aeq_int8_static",
         "int4_weight_only", "auto")


def tree(path: Path) -> dict[str, str]:
    """Every file under `path` (hidden ones included) with its sha256."""
    return {str(p.relative_to(path)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(path.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_killed_stage_leaves_its_old_output(sig: signal.Signals, tmp_path: Path,
                                              tiny_raw: dict[str, Any],
                                              dataset: data.Dataset) -> None:
    lay = Layout(tmp_path)
    data.save(dataset, lay.dataset)
    raw = copy.deepcopy(tiny_raw)
    raw["train"]["epochs"] = 1
    (tmp_path / "params.yaml").write_text(params_mod.render_params(raw))
    cmd = [sys.executable, str(ROOT / "stages" / "train.py"), "--params",
           str(tmp_path / "params.yaml"), "--root", str(tmp_path)]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1"}
    subprocess.run(cmd, env=env, check=True, capture_output=True)  # the old output
    old = tree(lay.root / "models")
    raw["train"]["epochs"] = 1000  # long enough to be killed in the middle
    (tmp_path / "params.yaml").write_text(params_mod.render_params(raw))

    with (tmp_path / "stderr.log").open("w") as err:
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=err, text=True)
        assert proc.stdout is not None
        seen = []
        for line in proc.stdout:  # Keras prints "Epoch 2/1000" when epoch 1 is done
            seen.append(line)
            if line.startswith("Epoch 2/"):
                break
        proc.send_signal(sig)
        proc.communicate(timeout=120)
    stderr = (tmp_path / "stderr.log").read_text()

    assert any(line.startswith("Epoch 2/") for line in seen), "".join(seen) + stderr
    assert proc.returncode == 128 + sig.value, stderr
    assert f"interrupted ({sig.name})" in stderr
    assert "Traceback" not in stderr
    assert tree(lay.root / "models") == old  # the old model, byte for byte
    leftovers = [p.name for p in (lay.root / "models" / "keras").iterdir()
                 if p.name.startswith(".")]
    assert leftovers == []  # no temporary file or folder


def test_an_interrupt_waits_for_a_deferred_block_unless_repeated() -> None:
    from pipeline import signals

    steps_done = []
    with signals.as_interrupt():
        with pytest.raises(KeyboardInterrupt, match="SIGTERM"):
            with signals.deferred():
                os.kill(os.getpid(), signal.SIGTERM)
                steps_done.append("after the signal")  # the block is not cut
        assert steps_done == ["after the signal"]
        with pytest.raises(KeyboardInterrupt, match="SIGINT"):
            with signals.deferred():
                os.kill(os.getpid(), signal.SIGTERM)  # held ...
                os.kill(os.getpid(), signal.SIGINT)  # ... a second one raises at once
                steps_done.append("not reached")
        assert steps_done == ["after the signal"]
        with signals.deferred():  # nothing pending is left over
            steps_done.append("clean")
    assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL  # handlers restored


def fingerprint(project: Path, variants: list[str]) -> dict[str, Any]:
    """What must not change between two builds: every model's bytes and every accuracy."""
    tflite = project / "models" / "tflite"
    metrics = read_json(project / "reports" / "metrics.json")
    return {
        "tflite": {v: hashlib.sha256((tflite / v / f"{v}.tflite").read_bytes()).hexdigest()
                   for v in variants},
        "accuracy": {v: metrics[v]["accuracy"] for v in variants},
        "keras": read_json(project / "models" / "keras" / "float_metrics.json"),
        "qat": read_json(project / "models" / "keras" / "qat_metrics.json"),
    }


def stage_pid(project: Path, script: str) -> int | None:
    """The process running `stages/<script>` in `project`, if any."""
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes().split(b"\0")
            cwd = os.readlink(proc / "cwd")
        except OSError:  # gone, or not ours
            continue
        if f"stages/{script}".encode() in cmdline and Path(cwd) == project:
            return int(proc.name)
    return None


@pytest.mark.slow
def test_rebuild_is_bit_identical_and_an_interrupted_build_resumes(tmp_path: Path) -> None:
    from mlflow.tracking import MlflowClient

    project = project_copy(tmp_path / "lab").resolve()
    raw = params_mod.compose(TINY_OVERRIDES)
    raw["quantization"]["variants"] = {v: raw["quantization"]["variants"][v] for v in KINDS}
    raw["calibration"]["variants"] = ["int8_full"]  # one of those
    (project / "params.yaml").write_text(params_mod.render_params(raw))
    variants = list(KINDS)
    dvc = [str(Path(sys.executable).parent / "dvc")]

    run(dvc + ["repro"], project)
    first = fingerprint(project, variants)
    first_runs = {r.info.run_id for r in runs(project)}

    # From scratch again; its last stage is killed while its MLflow run is open.
    client = MlflowClient(f"sqlite:///{project / 'mlflow.db'}")
    log = (tmp_path / "repro.log").open("w")
    proc = subprocess.Popen(dvc + ["repro", "-f"], cwd=project, env=project_env(project),
                            stdout=log, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 900
    killed = None
    while killed is None:
        assert proc.poll() is None, (tmp_path / "repro.log").read_text()
        assert time.monotonic() < deadline, "the track stage never opened its run"
        open_parents = [r for r in client.search_runs(
            [client.get_experiment_by_name("tflite-quantization-lab").experiment_id],
            filter_string="attributes.status = 'RUNNING'")
            if "mlflow.parentRunId" not in r.data.tags]  # open until all children are logged
        pid = stage_pid(project, "track.py")
        if open_parents and pid:
            os.kill(pid, signal.SIGTERM)
            killed = open_parents[0].info.run_id
        time.sleep(0.05)
    assert proc.wait(timeout=300) != 0
    log.close()

    assert fingerprint(project, variants) == first  # same bytes, same accuracies
    reports = project / "reports"
    assert not (reports / "mlflow_run.json").exists()  # none (DVC removed the old one first)
    assert not [p for p in reports.iterdir() if p.name.startswith(".")]  # no temporary file
    new_runs = [r for r in runs(project) if r.info.run_id not in first_runs]
    statuses = {r.info.run_id: r.info.status for r in new_runs}
    assert statuses[killed] == "KILLED"
    assert "RUNNING" not in statuses.values()

    out = run(dvc + ["repro"], project)
    ran = {line.split("'")[1] for line in out.splitlines() if line.startswith("Running stage")}
    assert ran == {"track"}
    result = read_json(reports / "mlflow_run.json")
    parent = client.get_run(result["parent_run_id"])
    assert parent.info.status == "FINISHED"
    assert len(result["child_run_ids"]) == len(variants)
    assert all(r.info.status != "RUNNING" for r in runs(project))
