"""End to end: a real `dvc repro` in a temporary copy of the project, on a tiny config, with
its own MLflow store. Slow (about two minutes); CI runs it too.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import ROOT, TINY_OVERRIDES
from pipeline import config as config_mod
from pipeline.report import ALL_METRICS

OUTPUT_DIRS = ("data", "models", "evaluation", "benchmark", "reports")


def project_copy(dest: Path) -> Path:
    """The project's tracked and new files (no outputs, no lock) in a fresh git repo."""
    files = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard"],
                           cwd=ROOT, check=True, capture_output=True, text=True).stdout.split()
    for rel in files:
        if rel == "dvc.lock" or rel.split("/")[0] in OUTPUT_DIRS or not (ROOT / rel).exists():
            continue
        (dest / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / rel, dest / rel)
    for args in (["init", "-q"], ["add", "-A"],
                 ["-c", "user.email=t@t", "-c", "user.name=t", "commit", "-qm", "copy"]):
        subprocess.run(["git", *args], cwd=dest, check=True)
    return dest


def run(cmd: list[str], cwd: Path) -> str:
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    env.pop("MLFLOW_TRACKING_URI", None)  # the project's own default store
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    assert proc.returncode == 0, f"{' '.join(cmd)} failed:\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout + proc.stderr


def runs(project: Path) -> list:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{project / 'mlflow.db'}")
    exp = client.get_experiment_by_name("tflite-quantization-lab")
    return client.search_runs([exp.experiment_id], max_results=1000)


@pytest.mark.slow
def test_dvc_repro_end_to_end(tmp_path: Path) -> None:
    project = project_copy(tmp_path / "lab")
    raw = config_mod.compose(TINY_OVERRIDES)
    # A new variant is only config: it must flow through every stage, MLflow and the report.
    raw["quantization"]["variants"]["int8_per_tensor"] = {
        "description": "int8, one scale per weight tensor", "source": "float",
        "optimizations": ["DEFAULT"], "representative_data": True, "per_channel": False}
    # A variant the converter refuses (integer-only ops cannot give int16 I/O): it is
    # recorded as failed and the rest of the pipeline completes.
    raw["quantization"]["variants"]["broken"] = {
        "description": "refused by the converter", "source": "float",
        "optimizations": ["DEFAULT"], "representative_data": True,
        "supported_ops": ["TFLITE_BUILTINS_INT8"], "inference_input_type": "int16",
        "inference_output_type": "int16"}
    (project / "params.yaml").write_text(config_mod.render_params(raw))
    variants = [v for v in raw["quantization"]["variants"] if v != "broken"]
    dvc = [str(Path(sys.executable).parent / "dvc")]

    run(dvc + ["repro"], project)

    for v in variants:
        assert (project / "models" / "tflite" / v / f"{v}.tflite").stat().st_size > 0
    assert not (project / "models" / "tflite" / "broken" / "broken.tflite").exists()
    summary = (project / "reports" / "summary.md").read_text()
    assert all(f"| `{v}` |" in summary for v in variants)
    assert "`broken` **failed**: ValueError:" in summary
    assert "## Worst-quantized layers" in summary
    shown = json.loads(run(dvc + ["metrics", "show", "--json"], project))
    metrics = next(iter(shown.values()))["data"]["reports/metrics.json"]["data"]
    assert set(metrics) == set(variants)
    assert all(set(ALL_METRICS) <= set(m) for m in metrics.values())
    assert {len(m) for m in metrics.values()} == {len(metrics["float32"])}  # same columns
    assert metrics["int8"]["t2.latency_ms_p50"] > 0  # every thread count of the config
    assert (project / "evaluation" / "int8" / "confusion_matrix.png").stat().st_size > 0
    assert 0.5 < metrics["float32"]["accuracy"] <= 1.0  # three tiny epochs beat chance (0.1)
    assert metrics["float32"]["accuracy_drop"] == 0

    logged = runs(project)
    assert len(logged) == 2 + len(variants)
    parent = next(r for r in logged if "mlflow.parentRunId" not in r.data.tags)
    assert parent.info.status == "FINISHED"
    assert parent.data.metrics["keras_test_accuracy"] > 0.5
    assert parent.data.params["train.epochs"] == "3"
    assert parent.data.tags["failed_variants"] == "broken"
    assert parent.data.tags["recommended.smallest"] in variants
    children = {r.info.run_name: r for r in logged if r is not parent}
    broken = children.pop("broken")
    assert broken.info.status == "FAILED" and "inference_input_type" in broken.data.tags["error"]
    assert set(children) == set(variants)
    for name, child in children.items():
        assert child.info.status == "FINISHED"
        assert set(child.data.metrics) == set(metrics[name])
        assert child.data.metrics["accuracy"] == pytest.approx(metrics[name]["accuracy"])

    # Nothing changed: nothing runs, nothing is logged.
    out = run(dvc + ["repro"], project)
    assert "Data and pipelines are up to date" in out
    assert len(runs(project)) == len(logged)

    # Only the budget changed: only report and track rerun, and one complete new set is logged.
    raw["report"]["max_accuracy_drop"] = 0.5
    (project / "params.yaml").write_text(config_mod.render_params(raw))
    out = run(dvc + ["repro"], project)
    ran = {line.split("'")[1] for line in out.splitlines() if line.startswith("Running stage")}
    assert ran == {"report", "track"}
    assert len(runs(project)) == 2 * len(logged)
