"""Sweeps: launcher configs and one-line typo errors. The sweeps themselves (a parallel
4-job sweep, `dvc exp run -S`, queued experiments) run as the manual (`docs/configuration.md`) shows them, in
tests/test_readme.py."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

from conftest import ROOT
from pipeline import params as params_mod


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


def test_bad_input_in_the_app_is_one_line_not_a_traceback(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere.npz"
    proc = app(["data=npz", f"data.path={missing}", f"hydra.run.dir={tmp_path / 'run'}"],
               tmp_path)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 2, out
    errors = [line for line in out.splitlines() if "error" in line.lower()]
    assert len(errors) == 1 and errors[0].endswith(f"error: data.path: {missing} does not exist")
    assert "Traceback" not in out and "HYDRA_FULL_ERROR" not in out
    assert not (tmp_path / "run" / "models").exists()


@pytest.mark.parametrize("launcher", ["parallel", "cluster", "ray"])
def test_launcher_configs_name_installed_launchers_and_change_no_lab_key(launcher: str) -> None:
    from hydra.plugins.launcher import Launcher
    from hydra.utils import get_class
    from omegaconf import OmegaConf

    with initialize_config_dir(config_dir=str(params_mod.CONF_DIR), version_base=None):
        cfg = compose("config", [f"hydra/launcher={launcher}"], return_hydra_config=True)
    assert issubclass(get_class(cfg.hydra.launcher._target_), Launcher)  # plugin installed
    from omegaconf import open_dict

    with open_dict(cfg):
        del cfg["hydra"]
    lab = OmegaConf.to_container(cfg, resolve=True)
    # The hydra section is the app's alone: the lab's config is DVC's, key for key.
    assert lab == params_mod.compose() and "hydra" not in params_mod.compose()


def test_a_sweep_over_seeds_summarizes_each_variant_across_them(tmp_path: Path) -> None:
    import yaml

    from pipeline.io import write_json
    from pipeline.layout import Layout
    from pipeline.tracking import sweep

    figures = {("a", 1): 0.90, ("a", 2): 0.94, ("b", 1): 0.80, ("b", 2): 0.82}
    for job, ((model, seed), accuracy) in enumerate(figures.items()):
        lay = Layout(tmp_path / str(job))
        (lay.root / ".hydra").mkdir(parents=True)
        (lay.root / ".hydra" / "overrides.yaml").write_text(
            yaml.safe_dump([f"model={model}", f"seed={seed}"]))
        write_json(lay.report("summary.json"), {
            "int8": {"status": "ok", "accuracy": accuracy, "accuracy_drop": 1 - accuracy,
                     "latency_ms_p50": seed / 100},
            "broken": {"status": "failed", "error": "boom"}})
    rows = sweep.across_seeds(tmp_path, ["model", "seed"])
    by_group = {r["group"]: r for r in rows}
    assert sorted(by_group) == ["model=a", "model=b"]
    assert by_group["model=a"]["seeds"] == 2 and by_group["model=a"]["variant"] == "int8"
    assert by_group["model=a"]["accuracy_mean"] == pytest.approx(0.92)
    assert by_group["model=a"]["accuracy_std"] == pytest.approx(0.0282843, rel=1e-4)
    assert by_group["model=b"]["latency_ms_p50_mean"] == pytest.approx(0.015)
    assert sweep.across_seeds(tmp_path, ["model"]) == []  # not a sweep over seeds
    png = sweep._plot_seeds(rows, tmp_path / "seeds.png")
    assert png.read_bytes()[:4] == b"\x89PNG"
