"""MLflow logging into a real SQLite store in tmp_path: run structure and final statuses."""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from pipeline import metrics
from pipeline import data
from test_bad_input import free_port
from pipeline.measure.benchmark import setting_key
from pipeline.report import summary
from pipeline.tracking import models, store
from pipeline.tracking import runs as tracking
from pipeline.config import Config

# The fixtures run every stage but the footprint (its tools are slow: test_footprint.py).
WITHOUT_FOOTPRINT = [s for s in metrics.STAGES if s != "footprint"]


@pytest.fixture(scope="module")
def rows(stage_results: dict, tiny_cfg: Config) -> dict[str, Any]:
    rows = summary.summarize(tiny_cfg.variants, stage_results["records"],
                            stage_results["evaluations"], stage_results["benchmarks"],
                            "float32", 0.01)
    rows["uint8_full"] = {"status": "failed", "error": "ValueError: converter refused"}
    return rows


def _log(uri: str, cfg: Config, raw: dict, rows: dict, models: dict[str, Path],
         data: models.Data | None = None, candidate: str | None = None) -> dict[str, Any]:
    artifacts = {v: {"model": models[v]} for v in cfg.variants}
    return tracking.log_pipeline(tracking.Execution(
        run_name="small_cnn-digits", config=raw, specs=cfg.variants, rows=rows,
        parent_metrics={"keras_test_accuracy": 0.5}, curves={"train_loss": [2.0, 1.0, 0.5]},
        parent_tags={"recommended.smallest": "int8"}, variant_artifacts=artifacts, data=data,
        note="Ship **int8**.", candidate=candidate), uri=uri, experiment="test",
        registered_model="lab-test" if candidate else None)


@pytest.fixture(scope="module")
def digits(small_dataset: data.Dataset, tmp_path_factory: pytest.TempPathFactory
           ) -> models.Data:
    """The small data set, stored as the prepare stage stores it, as the runs' input."""
    store = data.save(small_dataset, tmp_path_factory.mktemp("store") / "prepared",
                      source="digits")
    return models.Data(name="digits", digest=data.content_digest(store), path=str(store),
                         source="digits", splits=data.meta(store)["splits"],
                         sample_shape=small_dataset.input_shape,
                         num_classes=small_dataset.num_classes,
                         example=np.asarray(small_dataset.x_val[:2], np.float32))


def _by_variant(runs: list) -> dict[str, Any]:
    return {r.data.tags["variant"]: r for r in runs if "variant" in r.data.tags}


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
    children = _by_variant(runs)
    assert sorted(children) == sorted(tiny_cfg.variants)
    assert {r.info.run_name for r in children.values()} == {
        f"{v} · small_cnn-digits" for v in tiny_cfg.variants}
    # Each kind of variant logs its own fields, the same columns for every variant of a kind.
    columns: dict[str, set[frozenset[str]]] = {}
    for v, r in children.items():
        columns.setdefault(tiny_cfg.variants[v].backend, set()).add(frozenset(r.data.params))
    assert len(columns) >= 2 and all(len(c) == 1 for c in columns.values()), columns
    converter, quantizer = (next(iter(columns[k])) for k in ("converter", "litert_quantizer"))
    assert "variant.optimizations" in converter and "variant.recipe" not in converter
    assert "variant.recipe" in quantizer and "variant.optimizations" not in quantizer
    # The failed variant: FAILED, its error as a tag, no metrics; the others all metrics.
    failed = children.pop("uint8_full")
    assert failed.info.status == "FAILED" and failed.data.metrics == {}
    assert failed.data.tags["error"] == "ValueError: converter refused"
    assert {frozenset(r.data.metrics) for r in children.values()} == {
        frozenset(summary.metrics_of(rows["int8"]))}
    assert set(metrics.every_variant(WITHOUT_FOOTPRINT)) <= set(children["int8"].data.metrics)
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
                                                      models: dict[str, Path],
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    # A metric name MLflow refuses (declared here for the test): logging fails in the middle
    # of int8's child run.
    declared = metrics.declared
    monkeypatch.setattr(metrics, "declared", lambda k: k == "bad name!" or declared(k))
    broken = {**rows, "int8": {**rows["int8"], "bad name!": 1.0}}
    with pytest.raises(Exception, match="bad name!"):
        _log(uri, tiny_cfg, tiny_raw, broken, models)
    client = MlflowClient(uri)
    runs = client.search_runs([client.get_experiment_by_name("test").experiment_id])
    statuses = {r.data.tags.get("variant", r.info.run_name): r.info.status for r in runs}
    assert "RUNNING" not in statuses.values()
    assert statuses["int8"] == "FAILED" and statuses["small_cnn-digits"] == "FAILED"
    assert statuses["float32"] == "FINISHED"


def test_environment_overrides_the_configured_store(monkeypatch: pytest.MonkeyPatch,
                                                   tmp_path: Path) -> None:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    project = tmp_path.resolve()
    assert store.tracking_uri("sqlite:///mlflow.db", project) == \
        f"sqlite:///{project}/mlflow.db"
    # A queued DVC experiment runs in <project>/.dvc/tmp/exps/<tmp>: same store as the project.
    queued = project / ".dvc" / "tmp" / "exps" / "tmpabc123"
    queued.mkdir(parents=True)
    assert store.tracking_uri("sqlite:///mlflow.db", queued) == \
        f"sqlite:///{project}/mlflow.db"
    assert store.tracking_uri("sqlite:////abs/m.db", queued) == "sqlite:////abs/m.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:5999")
    assert store.tracking_uri("sqlite:///mlflow.db") == "http://127.0.0.1:5999"


def test_flatten_gives_dotted_params() -> None:
    assert store.flatten({"a": {"b": 1, "c": [1, 2]}, "d": {}}) == {
        "a.b": "1", "a.c": "1,2", "d": "{}"}


@pytest.fixture(scope="module")
def logged(tmp_path_factory: pytest.TempPathFactory, tiny_cfg: Config, tiny_raw: dict,
           rows: dict, models: dict[str, Path], digits: models.Data) -> dict[str, Any]:
    """One pipeline execution logged with its data, logged models and a candidate: int8_full,
    whose input and output are int8 (quantized inside the logged model)."""
    store = tmp_path_factory.mktemp("mlflow")
    uri = f"sqlite:///{store / 'mlflow.db'}"
    cwd = os.getcwd()
    os.chdir(store)  # the default artifact root (./mlruns) lands in the store's folder
    try:
        result = _log(uri, tiny_cfg, tiny_raw, rows, models, digits, candidate="int8_full")
    finally:
        os.chdir(cwd)
    return {**result, "store": store}


def test_every_variant_is_a_logged_model_with_its_metrics_and_data(
        logged: dict, tiny_cfg: Config, rows: dict, digits: models.Data) -> None:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(logged["tracking_uri"])
    exp = client.get_experiment(logged["experiment_id"])
    assert exp.tags["mlflow.experimentKind"] == "custom_model_development"
    view = json.loads(exp.tags[f"mlflow.sharedViewState.{store.VIEW_KEY}"])
    assert view["orderByKey"] == "metrics.`accuracy`" and "metrics.`size_bytes`" in \
        view["selectedColumns"]
    ok = [v for v in tiny_cfg.variants if rows[v].get("status", "ok") == "ok"]
    assert sorted(logged["model_ids"]) == sorted(ok) and not logged["model_errors"]
    for name in ok:
        model = client.get_logged_model(logged["model_ids"][name])
        assert model.name == name and str(model.status) == "READY"
        assert model.source_run_id == logged["child_run_ids"][name]
        linked = {m.key: m for m in model.metrics}
        assert linked["accuracy"].value == pytest.approx(rows[name]["accuracy"])
        assert linked["accuracy"].dataset_digest == digits.digest[:36]
        assert linked["size_bytes"].value == rows[name]["size_bytes"]
        assert "size_bytes" not in {m.key for m in model.metrics if m.dataset_name}
    parent = client.get_run(logged["parent_run_id"])
    assert parent.data.tags["mlflow.note.content"] == "Ship **int8**."
    assert sorted(i.dataset.name for i in parent.inputs.dataset_inputs) == [
        "digits/test", "digits/train", "digits/val"]
    child = client.get_run(logged["child_run_ids"]["int8"])
    # Every column of the view is something a variant's run has (not an empty column).
    has = ({f"metrics.`{k}`" for k in child.data.metrics}
           | {f"params.`{k}`" for k in child.data.params}
           | {f"tags.`{k}`" for k in child.data.tags})
    named = [c for c in view["selectedColumns"] if not c.startswith("attributes.")]
    assert set(named) <= has, set(named) - has
    assert [(i.dataset.name, i.dataset.digest) for i in child.inputs.dataset_inputs] == [
        ("digits/test", digits.digest[:36])]
    assert child.data.tags["mlflow.note.content"].startswith("**int8** (converter")
    assert "uint8_full" not in logged["model_ids"]  # failed upstream: no model
    failed = client.get_run(logged["child_run_ids"]["uint8_full"])
    assert "failed: ValueError: converter refused" in failed.data.tags["mlflow.note.content"]


def test_the_registered_candidate_loads_as_a_predictor_equal_to_the_evaluation(
        logged: dict, models: dict[str, Path], small_dataset: data.Dataset) -> None:
    import mlflow

    from pipeline.measure import litert

    assert logged["candidate"]["variant"] == "int8_full"
    assert litert.Runner(models["int8_full"]).input["dtype"] == np.int8
    mlflow.set_tracking_uri(logged["tracking_uri"])
    model = mlflow.pyfunc.load_model("models:/lab-test@candidate")
    x = np.asarray(small_dataset.x_test[:20], np.float32)
    scores = model.predict(x)  # float in, float scores out: int8 I/O handled inside
    expected = litert.Runner(models["int8_full"]).predict(x)
    assert scores.dtype == np.float32 and scores.shape == expected.shape == (20, 10)
    np.testing.assert_allclose(scores, expected, atol=1e-6)
    assert (scores.argmax(1) == small_dataset.y_test[:20]).mean() > 0.2  # not noise


@contextlib.contextmanager
def started(cmd: list[str], probe: str, log: Path, env: dict[str, str] | None = None,
            wait: float = 180.0) -> Iterator[float]:
    """Run `cmd` in its own session until `probe` answers; yield the seconds that took; stop
    the whole process group (a server's workers too) afterwards."""
    start = time.monotonic()
    with log.open("w") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env,
                                start_new_session=True)
    try:
        while True:
            try:
                urllib.request.urlopen(probe, timeout=2).close()
                break
            except OSError:
                pass
            assert proc.poll() is None, log.read_text()[-3000:]
            assert time.monotonic() - start < wait, f"no answer in {wait} s: {log.read_text()}"
            time.sleep(0.25)
        yield time.monotonic() - start
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def tool_env(logged: dict) -> dict[str, str]:
    """A shell with the venv's tools first on PATH, the test store as the tracking store,
    offline."""
    bin_dir = str(Path(sys.executable).parent)
    return {**os.environ, "PATH": f"{bin_dir}:{os.environ.get('PATH', '')}",
            "MLFLOW_TRACKING_URI": logged["tracking_uri"], "MLFLOW_DISABLE_TELEMETRY": "true",
            "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}


@pytest.mark.slow
def test_mlflow_models_serve_answers_as_the_evaluation(logged: dict, models: dict[str, Path],
                                                        small_dataset: data.Dataset,
                                                        tmp_path: Path) -> None:
    from pipeline.measure import litert

    port = free_port()
    cmd = [str(Path(sys.executable).parent / "mlflow"), "models", "serve",
           "-m", "models:/lab-test@candidate", "--env-manager", "local",
           "-h", "127.0.0.1", "-p", str(port)]
    x = np.asarray(small_dataset.x_test[:8], np.float32)
    url = f"http://127.0.0.1:{port}"
    with started(cmd, f"{url}/ping", tmp_path / "serve.log", tool_env(logged)) as seconds:
        request = urllib.request.Request(f"{url}/invocations",
                                         data=json.dumps({"inputs": x.tolist()}).encode(),
                                         headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=60) as resp:
            answer = json.loads(resp.read())
    scores = np.asarray(answer["predictions"], np.float32)
    expected = litert.Runner(models["int8_full"]).predict(x)
    assert scores.shape == (8, 10)
    assert scores.argmax(1).tolist() == expected.argmax(1).tolist()
    np.testing.assert_allclose(scores, expected, atol=1e-5)
    print(f"mlflow models serve: first answer {seconds:.1f} s after start")


@pytest.mark.slow
def test_the_mlflow_ui_opens_the_comparison_in_headless_chromium(logged: dict,
                                                                 tiny_cfg: Config,
                                                                 tmp_path: Path) -> None:
    chromium = shutil.which("chromium")
    assert chromium, "Debian's chromium is needed: `apt-get install chromium` (make test does)"
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    cmd = [str(Path(sys.executable).parent / "mlflow"), "ui", "--backend-store-uri",
           logged["tracking_uri"], "--host", "127.0.0.1", "--port", str(port), "--workers", "1"]
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             f"--user-data-dir={tmp_path / 'profile'}", "--window-size=2600,1400",
             "--virtual-time-budget=30000"]

    def dom(url: str) -> str:
        return subprocess.run([chromium, *flags, "--dump-dom", url], capture_output=True,
                              text=True, timeout=180, check=True).stdout

    with started(cmd, f"{base}/health", tmp_path / "ui.log", tool_env(logged)):
        runs = dom(store.ui_link(base, logged["experiment_id"]))
        models = dom(f"{base}/#/experiments/{logged['experiment_id']}/models"
                     "?workflowType=machine_learning")
    # The runs table in the model-training view, not the GenAI overview.
    assert "<title>Runs - Experiment" in runs and "Detect issues" not in runs
    # The shared view's columns, sorted by accuracy: best first.
    for column in ("accuracy", "accuracy_drop", "size_bytes", "latency_ms_p", "budget.verdict"):
        assert f'sort-header-{column}"' in runs or f"sort-header-{column}" in runs, column
    shown = list(dict.fromkeys(re.findall(r"([a-z0-9_]+) · small_cnn-digits", runs)))
    assert sorted(shown) == sorted(tiny_cfg.variants)
    assert "digits/test" in runs  # the Dataset column
    # Every variant a logged model, with its linked metrics and the data they were measured on.
    text = re.sub(r"<[^>]+>", " ", models)
    assert "<title>Logged Models - Experiment" in models
    for name in logged["model_ids"]:
        assert re.search(rf"\b{name}\s+Ready\b", text), name
    assert text.count("digits/test") >= len(logged["model_ids"])


def test_an_experiment_an_older_lab_created_gets_the_kind_and_view(tmp_path: Path) -> None:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    old = client.create_experiment("older", artifact_location=str(tmp_path / "a"))
    assert "mlflow.experimentKind" not in client.get_experiment(old).tags
    assert store.ensure_experiment(client, "older") == old
    tags = client.get_experiment(old).tags
    assert tags["mlflow.experimentKind"] == "custom_model_development"
    assert json.loads(tags["mlflow.sharedViewState.lab"]) == store.VIEW_STATE
    assert store.ui_link("http://127.0.0.1:5000/", old).endswith(
        f"/#/experiments/{old}/runs?viewStateShareKey=lab&workflowType=machine_learning")


def test_a_run_is_ended_even_while_another_process_locks_the_store(tmp_path: Path) -> None:
    """SQLite says "database is locked" while another connection writes (a reader polling
    the store, a second stage): ending the run retries instead of leaving it RUNNING."""
    import sqlite3
    import threading

    from mlflow.tracking import MlflowClient

    from pipeline.tracking import store

    db = tmp_path / "mlflow.db"
    client = MlflowClient(f"sqlite:///{db}")
    run_id = client.create_run(client.create_experiment("locked")).info.run_id
    locker = sqlite3.connect(db, check_same_thread=False)
    locker.execute("BEGIN EXCLUSIVE")  # what a writer in another process holds
    released = threading.Timer(24.0, locker.rollback)  # longer than MLflow's 20 s busy wait
    released.start()
    try:
        store._set_terminated(client, run_id, "KILLED")
    finally:
        released.join()
        locker.close()
    assert client.get_run(run_id).info.status == "KILLED"


def test_an_interrupt_inside_a_store_call_waits_for_it(tmp_path: Path) -> None:
    """SIGTERM delivered while MLflow's SQLite store is writing (here: inside its INSERT of a
    param, through SQLAlchemy's own event hook): the call completes, the interrupt is raised
    after it, and the run ends KILLED. Raised inside the store, it used to leave the process's
    own transaction open, and ending the run then failed with "database is locked"."""
    from mlflow.tracking import MlflowClient
    from sqlalchemy import event

    from pipeline import signals

    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    experiment_id = client.create_experiment("interrupted")
    fired: list[str] = []

    def interrupt(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        if not fired and statement.lstrip().upper().startswith("INSERT INTO PARAMS"):
            fired.append(statement)
            os.kill(os.getpid(), signal.SIGTERM)  # its handler runs at once, in this call

    event.listen(client._tracking_client.store.engine, "before_cursor_execute", interrupt)
    guarded = store.Uncut(client)
    ids = []
    started = time.monotonic()
    with signals.as_interrupt(), pytest.raises(KeyboardInterrupt, match="SIGTERM"):
        with store.open_run(guarded, experiment_id, "interrupted", {}) as run_id:
            ids.append(run_id)
            guarded.log_param(run_id, "a", "1")
            ids.append("not reached")
    assert fired and ids == [run_id]
    run = client.get_run(run_id)
    assert run.data.params == {"a": "1"}  # the call the signal came in completed
    assert run.info.status == "KILLED"
    assert time.monotonic() - started < 15  # ended at once, not after the busy retries


def test_a_sqlite_store_keeps_its_artifacts_beside_it(tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """Not in `./mlruns` of whatever folder the process runs in (MLflow's default): a store
    elsewhere (the tests', a queued DVC experiment's copy) scattered its artifacts there."""
    from mlflow.tracking import MlflowClient

    elsewhere = tmp_path / "cwd"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    uri = f"sqlite:///{tmp_path / 'store' / 'mlflow.db'}"
    (tmp_path / "store").mkdir()
    client = MlflowClient(uri)
    exp = client.get_experiment(store.ensure_experiment(client, "my lab/1", uri))
    assert exp.artifact_location == (tmp_path / "store" / "mlruns" / "my_lab_1").as_uri()
    run = client.create_run(exp.experiment_id)
    (tmp_path / "f.txt").write_text("x")
    client.log_artifact(run.info.run_id, str(tmp_path / "f.txt"))
    assert list((tmp_path / "store" / "mlruns").rglob("f.txt")) and not list(
        elsewhere.rglob("*"))
    assert store.artifact_location("http://127.0.0.1:5000", "x") is None
