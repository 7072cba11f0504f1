"""MLflow logging into a real SQLite store in tmp_path: run structure and final statuses."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from pipeline import benchmark, data, evaluate, report, tracking
from pipeline.config import Config


@pytest.fixture(scope="module")
def rows(tflite_dir: Path, tiny_cfg: Config, small_dataset: data.Dataset) -> dict[str, Any]:
    x, y = small_dataset.x_test[:20], small_dataset.y_test[:20]
    ev = {v: evaluate.evaluate(tflite_dir / f"{v}.tflite", x, y) for v in tiny_cfg.variants}
    bench = {v: benchmark.benchmark(tflite_dir / f"{v}.tflite", x[:1], tiny_cfg.benchmark)
             for v in tiny_cfg.variants}
    return report.summarize(tiny_cfg.variants, ev, bench, "float32")


def _log(uri: str, cfg: Config, raw: dict, rows: dict, tflite_dir: Path,
         missing: str | None = None) -> dict[str, Any]:
    artifacts = {v: {"model": tflite_dir / f"{v}.tflite"} for v in cfg.variants}
    if missing:
        artifacts[missing] = {"model": tflite_dir / "does-not-exist.tflite"}
    return tracking.log_pipeline(
        uri=uri, experiment="test", run_name="small_cnn-digits", config=raw,
        specs=cfg.variants, rows=rows, metric_names=report.METRICS,
        parent_metrics={"keras_test_accuracy": 0.5}, curves={"train_loss": [2.0, 1.0, 0.5]},
        parent_tags={"recommended.smallest": "int8"}, parent_artifacts=[],
        variant_artifacts=artifacts)


def test_one_parent_and_a_child_per_variant(tmp_path: Path, tiny_cfg: Config, tiny_raw: dict,
                                            rows: dict, tflite_dir: Path) -> None:
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    result = _log(uri, tiny_cfg, tiny_raw, rows, tflite_dir)
    client = MlflowClient(uri)
    runs = client.search_runs([result["experiment_id"]])
    assert len(runs) == 1 + len(tiny_cfg.variants)
    parent = client.get_run(result["parent_run_id"])
    assert parent.info.status == "FINISHED" and parent.info.run_name == "small_cnn-digits"
    assert parent.data.params["train.epochs"] == "3"
    assert parent.data.params["quantization.variants.int8.source"] == "float"
    assert parent.data.tags["recommended.smallest"] == "int8"
    curve = client.get_metric_history(parent.info.run_id, "train_loss")
    assert [(m.step, m.value) for m in curve] == [(0, 2.0), (1, 1.0), (2, 0.5)]
    children = [r for r in runs if r.info.run_id != parent.info.run_id]
    assert sorted(r.info.run_name for r in children) == sorted(tiny_cfg.variants)
    param_keys = {frozenset(r.data.params) for r in children}
    metric_keys = {frozenset(r.data.metrics) for r in children}
    assert len(param_keys) == 1 and len(metric_keys) == 1  # same columns for every variant
    assert set(next(iter(metric_keys))) == set(report.METRICS)
    for child in children:
        assert child.info.status == "FINISHED"
        assert child.data.tags["mlflow.parentRunId"] == parent.info.run_id
        name = child.info.run_name
        assert child.data.metrics["accuracy"] == pytest.approx(rows[name]["accuracy"])
        files = [a.path for a in client.list_artifacts(child.info.run_id, "model")]
        assert files == [f"model/{name}.tflite"]


def test_a_failure_ends_every_run_with_a_final_status(tmp_path: Path, tiny_cfg: Config,
                                                      tiny_raw: dict, rows: dict,
                                                      tflite_dir: Path) -> None:
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    with pytest.raises(Exception, match="does-not-exist"):
        _log(uri, tiny_cfg, tiny_raw, rows, tflite_dir, missing="int8")
    client = MlflowClient(uri)
    runs = client.search_runs([client.get_experiment_by_name("test").experiment_id])
    statuses = {r.info.run_name: r.info.status for r in runs}
    assert "RUNNING" not in statuses.values()
    assert statuses["int8"] == "FAILED" and statuses["small_cnn-digits"] == "FAILED"
    assert statuses["float32"] == "FINISHED"


def test_environment_overrides_the_configured_store(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert tracking.tracking_uri("sqlite:///mlflow.db") == "sqlite:///mlflow.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:5999")
    assert tracking.tracking_uri("sqlite:///mlflow.db") == "http://127.0.0.1:5999"


def test_flatten_gives_dotted_params() -> None:
    assert tracking.flatten({"a": {"b": 1, "c": [1, 2]}, "d": {}}) == {
        "a.b": "1", "a.c": "1,2", "d": "{}"}
