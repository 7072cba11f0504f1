"""MLflow logging into a real SQLite store in tmp_path: run structure and final statuses."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from pipeline.measure.benchmark import setting_key
from pipeline.report import summary, tracking
from pipeline.config import Config


@pytest.fixture(scope="module")
def rows(stage_results: dict, tiny_cfg: Config) -> dict[str, Any]:
    rows = summary.summarize(tiny_cfg.variants, stage_results["records"],
                            stage_results["evaluations"], stage_results["benchmarks"],
                            "float32", 0.01)
    rows["uint8_full"] = {"status": "failed", "error": "ValueError: converter refused"}
    return rows


def _log(uri: str, cfg: Config, raw: dict, rows: dict, models: dict[str, Path]
         ) -> dict[str, Any]:
    artifacts = {v: {"model": models[v]} for v in cfg.variants}
    return tracking.log_pipeline(
        uri=uri, experiment="test", run_name="small_cnn-digits", config=raw,
        specs=cfg.variants, rows=rows,
        parent_metrics={"keras_test_accuracy": 0.5}, curves={"train_loss": [2.0, 1.0, 0.5]},
        parent_tags={"recommended.smallest": "int8"}, parent_artifacts={},
        variant_artifacts=artifacts)


def test_one_parent_and_a_child_per_variant(tmp_path: Path, tiny_cfg: Config, tiny_raw: dict,
                                            rows: dict, models: dict[str, Path]) -> None:
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    result = _log(uri, tiny_cfg, tiny_raw, rows, models)
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
    children = {r.info.run_name: r for r in runs if r.info.run_id != parent.info.run_id}
    assert sorted(children) == sorted(tiny_cfg.variants)
    assert len({frozenset(r.data.params) for r in children.values()}) == 1  # same columns
    # The failed variant: FAILED, its error as a tag, no metrics; the others all metrics.
    failed = children.pop("uint8_full")
    assert failed.info.status == "FAILED" and failed.data.metrics == {}
    assert failed.data.tags["error"] == "ValueError: converter refused"
    assert {frozenset(r.data.metrics) for r in children.values()} == {
        frozenset(summary.metrics_of(rows["int8"]))}
    assert set(summary.ALL_METRICS) <= set(children["int8"].data.metrics)
    for name, child in children.items():
        assert child.info.status == "FINISHED"
        assert child.data.tags["mlflow.parentRunId"] == parent.info.run_id
        assert child.data.metrics["accuracy"] == pytest.approx(rows[name]["accuracy"])
        assert child.data.metrics["float_compute_ops"] == rows[name]["float_compute_ops"]
        assert child.data.tags["machine.cores"] == str(os.cpu_count())
        assert child.data.params["benchmark.settings"] == ",".join(
            setting_key(t, x) for t in tiny_cfg.benchmark.num_threads
            for x in tiny_cfg.benchmark.xnnpack)
        files = [a.path for a in client.list_artifacts(child.info.run_id, "model")]
        assert files == [f"model/{name}.tflite"]


def test_a_failure_ends_every_run_with_a_final_status(tmp_path: Path, tiny_cfg: Config,
                                                      tiny_raw: dict, rows: dict,
                                                      models: dict[str, Path]) -> None:
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    # A metric name MLflow refuses: logging fails in the middle of int8's child run.
    broken = {**rows, "int8": {**rows["int8"], "bad name!": 1.0}}
    with pytest.raises(Exception, match="bad name!"):
        _log(uri, tiny_cfg, tiny_raw, broken, models)
    client = MlflowClient(uri)
    runs = client.search_runs([client.get_experiment_by_name("test").experiment_id])
    statuses = {r.info.run_name: r.info.status for r in runs}
    assert "RUNNING" not in statuses.values()
    assert statuses["int8"] == "FAILED" and statuses["small_cnn-digits"] == "FAILED"
    assert statuses["float32"] == "FINISHED"


def test_environment_overrides_the_configured_store(monkeypatch: pytest.MonkeyPatch,
                                                   tmp_path: Path) -> None:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    project = tmp_path.resolve()
    assert tracking.tracking_uri("sqlite:///mlflow.db", project) == \
        f"sqlite:///{project}/mlflow.db"
    # A queued DVC experiment runs in <project>/.dvc/tmp/exps/<tmp>: same store as the project.
    queued = project / ".dvc" / "tmp" / "exps" / "tmpabc123"
    queued.mkdir(parents=True)
    assert tracking.tracking_uri("sqlite:///mlflow.db", queued) == \
        f"sqlite:///{project}/mlflow.db"
    assert tracking.tracking_uri("sqlite:////abs/m.db", queued) == "sqlite:////abs/m.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:5999")
    assert tracking.tracking_uri("sqlite:///mlflow.db") == "http://127.0.0.1:5999"


def test_flatten_gives_dotted_params() -> None:
    assert tracking.flatten({"a": {"b": 1, "c": [1, 2]}, "d": {}}) == {
        "a.b": "1", "a.c": "1,2", "d": "{}"}
