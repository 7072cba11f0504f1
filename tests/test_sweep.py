"""Sweeps: the Hydra app over the same conf/ and steps as DVC, parallel jobs with the joblib
launcher under one MLflow sweep run, launcher configs, `dvc exp run -S`, and typo errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from hydra import compose, initialize_config_dir

from conftest import ROOT, TINY_OVERRIDES
from pipeline import config as config_mod
from test_e2e import project_copy, run


def app(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pipeline", *args], cwd=cwd,
                          capture_output=True, text=True, timeout=900,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})


def test_config_typo_is_one_line_naming_the_key(tmp_path: Path) -> None:
    proc = app(["train.epohcs=3"], tmp_path)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert lines == ["error: unknown config key 'train.epohcs'; valid keys in train: epochs, "
                     "batch_size, learning_rate"]
    wrong_type = app(["train.epochs=ten", f"hydra.run.dir={tmp_path / 'run'}"], tmp_path)
    assert wrong_type.returncode == 2
    errors = [l for l in (wrong_type.stdout + wrong_type.stderr).splitlines() if "error" in l]
    assert len(errors) == 1 and "train.epochs" in errors[0] and "Integer" in errors[0]
    assert not (tmp_path / "run" / "models").exists()  # refused before any work


@pytest.mark.parametrize("launcher", ["parallel", "cluster"])
def test_launcher_configs_name_installed_launchers_and_change_no_lab_key(launcher: str) -> None:
    from hydra.plugins.launcher import Launcher
    from hydra.utils import get_class
    from omegaconf import OmegaConf

    with initialize_config_dir(config_dir=str(config_mod.CONF_DIR), version_base=None):
        cfg = compose("config", [f"hydra/launcher={launcher}"], return_hydra_config=True)
    assert issubclass(get_class(cfg.hydra.launcher._target_), Launcher)  # plugin installed
    lab = OmegaConf.to_container(cfg)
    lab.pop("hydra")
    # The hydra section is the app's alone: the lab's config is DVC's, key for key.
    assert lab == config_mod.compose() and "hydra" not in config_mod.compose()


@pytest.mark.slow
def test_parallel_sweep_logs_one_sweep_with_every_job_and_variant(tmp_path: Path) -> None:
    from mlflow.tracking import MlflowClient

    db = tmp_path / "mlflow.db"
    started = time.perf_counter()
    proc = app(["-m", "hydra/launcher=parallel", "model=small_cnn,tiny_cnn", "seed=1,2",
                *TINY_OVERRIDES, f"tracking.uri=sqlite:///{db}",
                f"hydra.sweep.dir={tmp_path / 'sweep'}"], tmp_path)
    seconds = time.perf_counter() - started
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    print(f"4-job sweep, 2 in parallel: {seconds:.0f} s")
    client = MlflowClient(f"sqlite:///{db}")
    exp = client.get_experiment_by_name("tflite-quantization-lab")
    runs = client.search_runs([exp.experiment_id], max_results=1000)
    variants = list(config_mod.parse_config(config_mod.compose()).variants)
    assert len(runs) == 1 + 4 * (1 + len(variants))  # nothing lost, nothing duplicated
    sweep = [r for r in runs if r.data.tags.get("pipeline") == "hydra-sweep"]
    assert len(sweep) == 1 and sweep[0].info.status == "FINISHED"
    jobs = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == sweep[0].info.run_id]
    assert sorted(r.info.run_name for r in jobs) == [
        "job 0: model=small_cnn seed=1", "job 1: model=small_cnn seed=2",
        "job 2: model=tiny_cnn seed=1", "job 3: model=tiny_cnn seed=2"]
    for job in jobs:
        assert job.info.status == "FINISHED"
        assert job.data.params["override.model"] in ("small_cnn", "tiny_cnn")
        children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == job.info.run_id]
        assert sorted(r.info.run_name for r in children) == sorted(variants)
        assert {r.info.status for r in children} == {"FINISHED"}
    # Job outputs stay in the Hydra job directories, never over DVC's.
    assert (tmp_path / "sweep" / "3" / "reports" / "report.html").is_file()
    assert not (tmp_path / "models").exists()
    summary = [a.path for a in client.list_artifacts(sweep[0].info.run_id, "summary")]
    assert summary == ["summary/sweep_summary.csv", "summary/sweep_summary.png"]
    table = (tmp_path / "sweep" / "sweep_summary.csv").read_text().splitlines()
    assert len(table) == 5 and "model=tiny_cnn seed=2" in table[-1]


@pytest.mark.slow
def test_dvc_exp_run_set_composes_conf_into_params(tmp_path: Path) -> None:
    project = project_copy(tmp_path / "lab")
    dvc = [str(Path(sys.executable).parent / "dvc")]
    sets = [a for o in (*TINY_OVERRIDES, "train.epochs=4") for a in ("-S", o)]
    run(dvc + ["exp", "run", *sets], project)
    params = yaml.safe_load((project / "params.yaml").read_text())
    assert params["train"]["epochs"] == 4 and params["model"]["filters"] == [4, 8]
    assert params == config_mod.compose([*TINY_OVERRIDES, "train.epochs=4"])
    shown = json.loads(run(dvc + ["exp", "show", "--json"], project, stdout_only=True))
    assert "reports/metrics.json" in json.dumps(shown)
    metrics = json.loads((project / "reports" / "metrics.json").read_text())
    assert metrics["int8"]["accuracy"] > 0.5
