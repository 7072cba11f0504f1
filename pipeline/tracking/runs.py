"""MLflow tracking: one parent run per pipeline execution, one child run per variant.

Everything is logged at the end of the pipeline, from the files the stages wrote, so a
pipeline execution gives one complete set of runs and an unchanged `dvc repro` logs nothing.
Every run is ended with a final status: FINISHED, FAILED, or KILLED when interrupted.

What a person meets in the MLflow UI:
- the experiment is tagged as model development (`mlflow.experimentKind`) and carries a
  shared view (`mlflow.sharedViewState.lab`): the runs table sorted by accuracy with the
  accuracy, drop, size and latency columns; `ui_link` is the address that opens it in the
  model-training view;
- runs are named by variant, model and data; the parent run's description
  (`mlflow.note.content`) is the recommendation in one sentence, each child's its result;
- every variant is a logged model (`pipeline/tracking/tflite_pyfunc.py`: float in, scores out)
  with its metrics linked, and the candidate is registered from it, so
  `mlflow models serve -m models:/<registered model>@candidate` serves it;
- the prepared data is each run's input, named by split, with its DVC content digest.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import hashlib
import json
import logging
import os
import subprocess
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from pipeline import artifacts as a
from pipeline import signals
from pipeline.report.summary import metrics_of
from pipeline.variants import VariantSpec

log = logging.getLogger(__name__)

MAX_PARAMS_PER_BATCH = 100  # MLflow's log_batch limit
MAX_PARAM_LENGTH = 6000  # MLflow's limit on a param value
MAX_TAG_LENGTH = 5000

# The tag the MLflow 3 UI reads for the kind of an experiment: model development, not GenAI.
EXPERIMENT_KIND = {"mlflow.experimentKind": "custom_model_development"}
# The runs table as the lab's experiment opens: a shared view (an experiment tag the UI reads
# for `?viewStateShareKey=lab`), sorted by accuracy, with the columns that compare variants.
VIEW_KEY = "lab"
VIEW_METRICS = ("accuracy", "accuracy_drop", "accuracy_drop_ci_high", "size_bytes",
                "compression_ratio", "latency_ms_p50")
VIEW_STATE = {
    "orderByKey": "metrics.`accuracy`", "orderByAsc": False, "searchFilter": "",
    "startTime": "ALL", "lifecycleFilter": "Active", "datasetsFilter": [],
    "modelVersionFilter": "All Runs",
    "selectedColumns": ["attributes.`Dataset`", "attributes.`Models`",
                        *(f"metrics.`{m}`" for m in VIEW_METRICS), "tags.`budget.verdict`",
                        "tags.`backend`"]}  # each child's tag (its param is variant.backend)
# Linked to each variant's logged model (the Models tab's columns); the test-set figures
# also name the data they were measured on.
MODEL_METRICS = ("accuracy", "accuracy_ci_low", "accuracy_ci_high", "accuracy_drop",
                 "accuracy_drop_ci_low", "accuracy_drop_ci_high", "p_value_vs_reference",
                 "agreement", "top_k_accuracy", "size_bytes", "compression_ratio",
                 "latency_ms_p50", "latency_ms_p50_ci_low", "latency_ms_p50_ci_high",
                 "speedup_vs_float32", "peak_rss_mb")
TEST_SET_METRICS = frozenset({"accuracy", "accuracy_ci_low", "accuracy_ci_high",
                              "accuracy_drop", "accuracy_drop_ci_low",
                              "accuracy_drop_ci_high", "p_value_vs_reference", "agreement",
                              "top_k_accuracy"})
PYFUNC_FILE = Path(__file__).with_name("tflite_pyfunc.py")  # the logged models' code
# What a logged model needs to load and serve: no TensorFlow, not the lab.
MODEL_REQUIREMENTS = ("mlflow", "ai-edge-litert", "numpy")


@dataclasses.dataclass(frozen=True)
class Data:
    """The prepared data a pipeline execution was measured on.

    Attributes:
        name: The data set's name (`data.name`).
        digest: Its content digest, as DVC computes it (`pipeline.data.content_digest`).
        path: The store folder.
        source: Where the splits came from (`meta.json`).
        splits: Each split's size.
        sample_shape: One sample's shape.
        num_classes: Classes the models score.
        example: A few validation samples, float32: the logged models' input example.
    """

    name: str
    digest: str
    path: str
    source: str
    splits: Mapping[str, int]
    sample_shape: tuple[int, ...]
    num_classes: int
    example: Any = None

    def dataset(self, split: str) -> Any:
        """The split as an MLflow dataset: named `<name>/<split>`, with the store's digest."""
        from mlflow.entities import Dataset

        return Dataset(name=f"{self.name}/{split}", digest=self.digest[:36],
                       source_type="local",
                       source=json.dumps({"uri": self.path, "split": split,
                                          "source": self.source}),
                       schema=json.dumps({"x": {"shape": [-1, *self.sample_shape],
                                                "dtype": "float32"},
                                          "y": {"classes": self.num_classes}}),
                       profile=json.dumps({"num_rows": int(self.splits.get(split, 0))}))


def ui_link(base: str, experiment_id: str) -> str:
    """The address of the experiment's runs table in the model-training view, with the lab's
    shared view (`VIEW_STATE`). The `workflowType` parameter is needed: MLflow 3.17's UI
    opens an experiment in its GenAI view otherwise, whatever the experiment's kind tag."""
    return (f"{base.rstrip('/')}/#/experiments/{experiment_id}/runs?"
            f"viewStateShareKey={VIEW_KEY}&workflowType=machine_learning")


def project_root(cwd: Path | None = None) -> Path:
    """The project the runs belong to. `dvc exp run --queue` runs each experiment in a
    temporary copy at `<project>/.dvc/tmp/exps/<tmp>/`; its runs belong to `<project>`."""
    cwd = (cwd or Path.cwd()).resolve()
    parts = cwd.parts
    for i in range(len(parts) - 3):
        if parts[i:i + 3] == (".dvc", "tmp", "exps"):
            return Path(*parts[:i])
    return cwd


def tracking_uri(configured: str, cwd: Path | None = None) -> str:
    """`MLFLOW_TRACKING_URI` if set, else the configured store. A relative SQLite path is
    made absolute against the project root, so that a queued DVC experiment (run in a
    temporary copy that is deleted afterwards) logs into the project's store."""
    uri = os.environ.get("MLFLOW_TRACKING_URI") or configured
    prefix = "sqlite:///"
    if uri.startswith(prefix) and not uri[len(prefix):].startswith("/"):
        uri = prefix + str(project_root(cwd) / uri[len(prefix):])
    return uri


def flatten(d: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    """Nested config to dotted string params: `{"train": {"epochs": 3}}` -> `train.epochs`."""
    flat: dict[str, str] = {}
    for key, value in d.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            flat.update(flatten(value, f"{name}."))
        else:
            text = ",".join(map(str, value)) if isinstance(value, (list, tuple)) else str(value)
            flat[name] = text[:MAX_PARAM_LENGTH]
    return flat


class Uncut:
    """An MLflow client whose calls an interrupt waits for (`pipeline.signals.deferred`).

    A `KeyboardInterrupt` raised inside MLflow's store code can leave its SQLite transaction
    open: the process's own connection then holds the database's write lock, ending the runs
    KILLED fails with "database is locked" after a minute of retries, and they stay RUNNING.
    Through this wrapper an interrupt lands between two store calls, never inside one."""

    def __init__(self, client: Any) -> None:
        self._client = client

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._client, name)
        if not callable(attr):
            return attr

        @functools.wraps(attr)
        def uncut(*args: Any, **kwargs: Any) -> Any:
            with signals.deferred():
                return attr(*args, **kwargs)
        return uncut


@contextlib.contextmanager
def _run(client: Any, experiment_id: str, name: str, tags: Mapping[str, str],
         success_status: str = "FINISHED") -> Iterator[str]:
    """Create a run and always end it: `success_status` if the block completes (FAILED for a
    variant that failed upstream), KILLED on interrupt, FAILED on error. An interrupt while
    the run is created or ended waits for that call (`pipeline.signals.deferred`)."""
    run_id = None
    status = "FAILED"
    try:
        with signals.deferred():
            run_id = client.create_run(experiment_id, run_name=name, tags=dict(tags)).info.run_id
        yield run_id
        status = success_status
    except KeyboardInterrupt:
        status = "KILLED"
        raise
    finally:
        if run_id is not None:
            with signals.deferred():
                _set_terminated(client, run_id, status)


def _set_terminated(client: Any, run_id: str, status: str, attempts: int = 8) -> None:
    """End a run, retrying while the store is busy: a SQLite store that another process is
    reading says "database is locked" (MLflow: TEMPORARILY_UNAVAILABLE), and a run must not be
    left RUNNING for that."""
    from mlflow.exceptions import MlflowException

    for attempt in range(attempts):
        try:
            client.set_terminated(run_id, status)
            return
        except MlflowException as exc:
            if exc.error_code != "TEMPORARILY_UNAVAILABLE" or attempt == attempts - 1:
                raise
            log.warning("the tracking store is busy (%s); ending run %s %s again",
                        str(exc).splitlines()[0], run_id, status)
            time.sleep(0.5 * 2 ** attempt)  # 0.5 s, 1 s, ...: about a minute in all


def _log(client: Any, run_id: str, params: Mapping[str, str] = {},
         metrics: Mapping[str, float] = {}, steps: Mapping[str, Sequence[float]] = {}) -> None:
    from mlflow.entities import Metric, Param

    now = int(time.time() * 1000)
    items = list(params.items())
    for i in range(0, len(items), MAX_PARAMS_PER_BATCH):
        client.log_batch(run_id, params=[Param(k, v) for k, v in
                                         items[i:i + MAX_PARAMS_PER_BATCH]])
    ms = [Metric(k, float(v), now, 0) for k, v in metrics.items()]
    ms += [Metric(k, float(v), now, step) for k, vs in steps.items() for step, v in enumerate(vs)]
    for i in range(0, len(ms), 1000):
        client.log_batch(run_id, metrics=ms[i:i + 1000])


# What a run's figures depend on: the code and config, not the outputs DVC rewrites mid-run.
SOURCE_PATHS = ("conf", "pipeline", "stages", "dvc.yaml", "params.yaml", "pyproject.toml",
                "requirements.lock")


def _git(root: Path, *args: str) -> str | None:
    try:
        proc = subprocess.run(["git", *args], cwd=root, capture_output=True, text=True,
                              timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return proc.stdout.strip() if proc.returncode == 0 else None


def provenance(root: str | Path, config: Mapping[str, Any]) -> dict[str, str]:
    """Tags that say where a run came from.

    Returns:
        `git.commit`, `git.dirty` (code or config differ from that commit: `SOURCE_PATHS`),
        `config.hash` (sha256 of the resolved config) and, under `dvc exp run`,
        `dvc.exp_name`.
    """
    root = Path(root)
    commit = _git(root, "rev-parse", "HEAD")
    changes = _git(root, "status", "--porcelain", "--", *SOURCE_PATHS)
    tags = {
        "git.commit": commit or "unknown",
        "git.dirty": "unknown" if changes is None else str(bool(changes)).lower(),
        "config.hash": hashlib.sha256(json.dumps(config, sort_keys=True).encode()).hexdigest(),
    }
    if os.environ.get("DVC_EXP_NAME"):
        tags["dvc.exp_name"] = os.environ["DVC_EXP_NAME"]
    return tags


def check_reachable(uri: str, timeout: float = 5.0) -> None:
    """Refuse an MLflow server that does not answer, at once (MLflow's own client would
    retry for minutes). Stores that are not servers pass.

    Raises:
        ValueError: naming the server and what went wrong.
    """
    if not uri.startswith(("http://", "https://")):
        return
    import http.client
    import urllib.error
    import urllib.request

    try:
        urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=timeout).close()
    except urllib.error.HTTPError:
        return  # it answered
    except (urllib.error.URLError, OSError, http.client.HTTPException, ValueError) as exc:
        reason = getattr(exc, "reason", None) or f"{type(exc).__name__}: {exc}"
        raise ValueError(f"tracking server {uri} is unreachable ({reason}); start it (make "
                         "mlflow-server) or set tracking.uri / MLFLOW_TRACKING_URI to a "
                         "reachable server or a sqlite:/// store. Nothing was logged") from None


def ensure_experiment(client: Any, name: str) -> str:
    """The experiment's id, creating it if missing (another process may win the race),
    tagged as model development with the lab's shared view (also an experiment an older lab
    created)."""
    from mlflow.exceptions import MlflowException

    tags = {**EXPERIMENT_KIND, f"mlflow.sharedViewState.{VIEW_KEY}": json.dumps(VIEW_STATE)}
    exp = client.get_experiment_by_name(name)
    if exp is None:
        try:
            return str(client.create_experiment(name, tags=tags))
        except MlflowException:
            exp = client.get_experiment_by_name(name)
    for key, value in tags.items():
        if exp.tags.get(key) != value:
            client.set_experiment_tag(exp.experiment_id, key, value)
    return str(exp.experiment_id)


def _log_artifacts(client: Any, run_id: str,
                   artifacts: Mapping[str, Path | Sequence[Path]]) -> None:
    """Attach files or folders (one, or a list) by artifact folder; missing paths (a failed
    variant has no model file) are skipped."""
    for folder, paths in artifacts.items():
        for path in [paths] if isinstance(paths, (str, Path)) else paths:
            if Path(path).is_dir():
                client.log_artifacts(run_id, str(path), artifact_path=folder)
            elif Path(path).exists():
                client.log_artifact(run_id, str(path), artifact_path=folder)


def register_candidate(client: Any, model_name: str, variant: str, run_id: str,
                       model_id: str | None = None, alias: str = "candidate") -> str:
    """Register the variant as a new version of `model_name` and point `alias` at it: its
    logged model (`model_id`: loads and serves as a pyfunc), else its run's `model/`
    artifact (the bare `.tflite`).

    Returns:
        The new version.
    """
    from mlflow.exceptions import MlflowException

    try:
        client.create_registered_model(
            model_name, description="TFLite models chosen by the quantization lab")
    except MlflowException as exc:
        if "RESOURCE_ALREADY_EXISTS" not in str(exc.error_code):
            raise
    source = f"models:/{model_id}" if model_id else f"runs:/{run_id}/model"
    version = client.create_model_version(model_name, source=source, run_id=run_id,
                                          model_id=model_id, tags={"variant": variant}).version
    client.set_registered_model_alias(model_name, alias, version)
    log.info("MLflow registry: %s version %s (%s) is @%s", model_name, version, variant, alias)
    return str(version)


def _requirements() -> list[str]:
    from importlib.metadata import version

    return [f"{name}=={version(name)}" for name in MODEL_REQUIREMENTS]


def log_model(client: Any, experiment_id: str, run_id: str, variant: str, tflite: Path,
              data: Data, params: Mapping[str, str], tags: Mapping[str, str]) -> str:
    """Log one variant's `.tflite` as an MLflow logged model of its run: a pyfunc that takes
    float samples `(n, *sample_shape)` and returns float scores `(n, num_classes)`, quantizing
    inside (`PYFUNC_FILE`), with a signature and an input example.

    Returns:
        The logged model's id.

    Raises:
        Exception: what MLflow raised; the model is marked FAILED first.
    """
    import mlflow
    import numpy as np
    from mlflow.entities import LoggedModelOutput
    from mlflow.models import ModelSignature
    from mlflow.types.schema import Schema, TensorSpec

    model = client.create_logged_model(experiment_id=experiment_id, name=variant,
                                       source_run_id=run_id, tags=dict(tags),
                                       params=dict(params), model_type="tflite")
    try:
        signature = ModelSignature(
            inputs=Schema([TensorSpec(np.dtype(np.float32), (-1, *data.sample_shape))]),
            outputs=Schema([TensorSpec(np.dtype(np.float32), (-1, data.num_classes))]))
        with signals.deferred():  # MLflow's store calls inside it are not cut (Uncut)
            mlflow.pyfunc.log_model(name=variant, model_id=model.model_id,
                                    python_model=str(PYFUNC_FILE),
                                    artifacts={"tflite": str(tflite)}, signature=signature,
                                    input_example=data.example,
                                    pip_requirements=_requirements())
    except BaseException:
        client.finalize_logged_model(model.model_id, "FAILED")
        raise
    client.log_outputs(run_id, [LoggedModelOutput(model.model_id, step=0)])
    return model.model_id


def _log_inputs(client: Any, run_id: str, data: Data, splits: Sequence[str]) -> None:
    from mlflow.entities import DatasetInput, InputTag

    contexts = {"train": "training", "val": "validation", "test": "test"}
    client.log_inputs(run_id, datasets=[
        DatasetInput(data.dataset(s), tags=[InputTag("mlflow.data.context", contexts[s])])
        for s in splits])


def _model_metrics(model_id: str | None, metrics: Mapping[str, float],
                   data: Data | None) -> tuple[dict[str, float], list[Any]]:
    """Split a variant's metrics into plain run metrics and those linked to its logged model
    (`MODEL_METRICS`; the test-set ones also name the data)."""
    from mlflow.entities import Metric

    if model_id is None or data is None:
        return dict(metrics), []
    now = int(time.time() * 1000)
    linked = [Metric(k, float(metrics[k]), now, 0, model_id=model_id,
                     **({"dataset_name": f"{data.name}/test", "dataset_digest": data.digest[:36]}
                        if k in TEST_SET_METRICS else {}))
              for k in MODEL_METRICS if k in metrics]
    return {k: v for k, v in metrics.items() if k not in MODEL_METRICS}, linked


def variant_note(name: str, spec: VariantSpec, row: Mapping[str, Any]) -> str:
    """A child run's description: what the variant is and how it did, in one line."""
    what = f"**{name}** ({spec.backend}"
    what += f", {spec.description})" if getattr(spec, "description", "") else ")"
    if row.get("status", "ok") != "ok":
        return f"{what} failed: {str(row.get('error', '')).splitlines()[0][:500]}"
    parts = [f"test accuracy {row['accuracy']:.4f}"]
    if "accuracy_drop_ci_low" in row:
        parts.append(f"drop {row['accuracy_drop']:+.4f} [{row['accuracy_drop_ci_low']:+.4f}, "
                     f"{row['accuracy_drop_ci_high']:+.4f}]")
    if "budget_verdict" in row:
        parts.append(f"budget: {row['budget_verdict']}")
    parts.append(f"{row['size_bytes'] / 1024:.1f} KiB")
    if "latency_ms_p50" in row:
        parts.append(f"p50 {row['latency_ms_p50']:.3f} ms")
    return f"{what}: " + "; ".join(parts) + "."


def _log_trial(client: Any, experiment_id: str, parent_id: str, variant: str,
               trial: Mapping[str, Any], common: Mapping[str, str]) -> None:
    """One trial of a search, as a run nested under its variant's run."""
    tags = {**common, "mlflow.parentRunId": parent_id, "variant": variant,
            "search.change": str(trial["change"])[:5000],
            "search.accepted": str(trial["accepted"]).lower()}
    with _run(client, experiment_id, f"{variant} trial {trial['trial']}", tags) as run_id:
        _log(client, run_id, params={"search.trial": str(trial["trial"])}, metrics={
            k: float(trial[k]) for k in ("val_accuracy", "val_drop", "size_bytes", "seconds",
                                         "latency_ms_estimate")
            if trial.get(k) not in (None, "")})


@contextlib.contextmanager
def store_lock(uri: str) -> Iterator[None]:
    """Serialize writers of one SQLite store across processes (parallel sweep jobs): an
    exclusive lock on `<db>.lock` beside the database. A server needs none."""
    if not uri.startswith("sqlite:///"):
        yield
        return
    import fcntl

    db = Path(uri[len("sqlite:///"):])
    db.parent.mkdir(parents=True, exist_ok=True)
    with open(db.with_name(db.name + ".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def variant_artifacts(variant_dir: Path, name: str, evaluation: Path, benchmark: Path,
                      footprint: Path) -> dict[str, Path | list[Path]]:
    """What a variant's child run gets, by artifact folder: its model (also its logged model),
    every file of its folder (`pipeline.artifacts`; the ones a kind does not write are
    skipped), and its evaluation, benchmark and footprint."""
    folder = Path(variant_dir)
    return {"model": a.tflite_path(folder, name), "inspection": folder / a.RECORD,
            "layer_errors": folder / a.LAYER_ERRORS, "tensor_errors": folder / a.TENSOR_ERRORS,
            "model_explorer": folder / a.OVERLAYS, "recipe": folder / a.RECIPE,
            "precision": folder / a.PRECISION, "equalization": folder / a.EQUALIZATION,
            "search": [folder / f for f in (a.SEARCH_TRIALS, a.SEARCH_PLOT,
                                            a.SEARCH_DECISIONS, a.SEARCH_RULES)],
            "evaluation": evaluation, "benchmark": benchmark, "footprint": footprint}


@dataclasses.dataclass
class Execution:
    """What one pipeline execution produced, as the runs log it.

    Attributes:
        run_name: Parent run name; a child is named `<variant> · <run_name>`.
        config: The resolved config, logged as dotted params on the parent.
        specs: Variants, in order; each child gets its spec as params.
        rows: Per variant, the summary row (`pipeline.report.summarize`); a row whose
            `status` is not `ok` gives a FAILED child with its `error` as a tag.
        parent_metrics: Single metrics of the parent (e.g. the Keras model's test accuracy).
        curves: Step metrics of the parent (training curves, one value per epoch).
        parent_tags: Tags of the parent (e.g. the recommendation).
        parent_artifacts: Files or folders attached to the parent, by artifact folder.
        variant_artifacts: Per variant, files or folders attached to its child, by artifact
            folder; its `model` (the `.tflite`) also becomes its logged model.
        data: The data the runs were measured on: the runs' dataset inputs, and the shapes
            and input example of the logged models. None logs neither.
        note: The parent run's description (Markdown): the recommendation.
        common_tags: Tags of every run (provenance: git commit, config hash, ...).
        candidate: The variant to register in the Model Registry with the alias
            `candidate`; None registers nothing.
        extra_params: More params of the parent (e.g. a sweep job's overrides).
        variant_trials: Per variant found by a search, its trials (`search_trajectory.csv`
            rows): each becomes a run nested under the variant's.
    """

    run_name: str
    config: Mapping[str, Any]
    specs: Mapping[str, VariantSpec]
    rows: Mapping[str, Mapping[str, Any]]
    parent_metrics: Mapping[str, float] = dataclasses.field(default_factory=dict)
    curves: Mapping[str, Sequence[float]] = dataclasses.field(default_factory=dict)
    parent_tags: Mapping[str, str] = dataclasses.field(default_factory=dict)
    parent_artifacts: Mapping[str, Path] = dataclasses.field(default_factory=dict)
    variant_artifacts: Mapping[str, Mapping[str, Path]] = dataclasses.field(
        default_factory=dict)
    data: Data | None = None
    note: str | None = None
    common_tags: Mapping[str, str] = dataclasses.field(default_factory=dict)
    candidate: str | None = None
    extra_params: Mapping[str, str] = dataclasses.field(default_factory=dict)
    variant_trials: Mapping[str, list[dict[str, Any]]] = dataclasses.field(
        default_factory=dict)


def log_pipeline(execution: Execution, *, uri: str, experiment: str,
                 registered_model: str | None = None) -> dict[str, Any]:
    """Log one pipeline execution: a parent run and a child run per variant, each variant's
    `.tflite` (its `model` artifact) also a logged model.

    Args:
        execution: What the execution produced.
        uri: Tracking store or server.
        experiment: Experiment name (created if missing).
        registered_model: The registered model's name (required with a candidate).

    Returns:
        `tracking_uri`, `experiment_id`, `parent_run_id`, `child_run_ids` and `model_ids`
        by variant, `model_errors` (variants whose logged model MLflow refused: why), and
        `candidate` (`{variant, model, version, model_id}` or None).
    """
    e = execution
    run_name, config, specs, rows = e.run_name, e.config, e.specs, e.rows
    parent_metrics, curves, parent_tags = e.parent_metrics, e.curves, e.parent_tags
    parent_artifacts, variant_artifacts, data = e.parent_artifacts, e.variant_artifacts, e.data
    note, common_tags, candidate = e.note, e.common_tags, e.candidate
    extra_params, variant_trials = e.extra_params, e.variant_trials
    with store_lock(uri):  # parallel sweep jobs take turns on one SQLite store
        import mlflow
        from mlflow.tracking import MlflowClient

        mlflow.set_tracking_uri(uri)  # log_model logs into the global store
        # One progress bar per logged model's files is noise in a stage's log.
        os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
        client = Uncut(MlflowClient(tracking_uri=uri))  # interrupts wait for each call
        experiment_id = ensure_experiment(client, experiment)
        children: dict[str, str] = {}
        model_ids: dict[str, str] = {}
        model_errors: dict[str, str] = {}
        # Settings every child shares, so each run says how its figures were measured.
        some_ok = next((r for r in rows.values() if r.get("status", "ok") == "ok"), {})
        child_params = {"benchmark.settings": ",".join(some_ok.get("settings", {})) or "none",
                        "benchmark.headline": str(some_ok.get("headline")),
                        "evaluate.top_k": str(some_ok.get("top_k"))}
        common = dict(common_tags or {})
        parent_tags = {**common,
                       **{f"machine.{k}": str(v) for k, v in some_ok.get("machine", {}).items()},
                       **({"mlflow.note.content": note} if note else {}),
                       **parent_tags}
        registered = None
        with signals.as_interrupt(), _run(client, experiment_id, run_name,
                                          {"pipeline": "dvc", **parent_tags}) as parent_id:
            _log(client, parent_id, params={**flatten(config), **(extra_params or {})},
                 metrics=parent_metrics, steps=curves)
            if data is not None:
                _log_inputs(client, parent_id, data, ("train", "val", "test"))
            for name, spec in specs.items():
                row = rows[name]
                ok = row.get("status", "ok") == "ok"
                tags = {**common, "mlflow.parentRunId": parent_id, "variant": name,
                        "mlflow.note.content": variant_note(name, spec, row),
                        **{f"machine.{k}": str(v) for k, v in row.get("machine", {}).items()},
                        **({"budget.verdict": str(row["budget_verdict"])}
                           if ok and "budget_verdict" in row else {}),
                        **({"kernel_paths.disagree": str(row["kernel_paths_disagree"]).lower()}
                           if ok and "kernel_paths_disagree" in row else {}),
                        "backend": spec.backend,
                        **({} if ok else {"error": str(row.get("error"))[:MAX_TAG_LENGTH]})}
                with _run(client, experiment_id, f"{name} · {run_name}", tags,
                          "FINISHED" if ok else "FAILED") as child_id:
                    params = {**spec.as_params(), **child_params}
                    files = variant_artifacts.get(name, {})
                    tflite = files.get("model")
                    if ok and data is not None and tflite and Path(tflite).is_file():
                        try:
                            model_ids[name] = log_model(
                                client, experiment_id, child_id, name, Path(tflite), data,
                                params={k: v[:MAX_PARAM_LENGTH] for k, v in params.items()},
                                tags={"variant": name, **{k: tags[k] for k in (
                                    "budget.verdict", "backend") if k in tags}})
                        except Exception as exc:  # MLflow refused this model: say why
                            reason = f"{type(exc).__name__}: {exc}"
                            model_errors[name] = reason
                            client.set_tag(child_id, "logged_model.error",
                                           reason[:MAX_TAG_LENGTH])
                            log.warning("%s: no logged model (%s)", name, reason)
                    if ok and data is not None:
                        _log_inputs(client, child_id, data, ("test",))
                    run_metrics, linked = _model_metrics(
                        model_ids.get(name), metrics_of(row) if ok else {}, data)
                    _log(client, child_id, params=params, metrics=run_metrics)
                    for i in range(0, len(linked), 1000):
                        client.log_batch(child_id, metrics=linked[i:i + 1000])
                    _log_artifacts(client, child_id, files)
                    for trial in (variant_trials or {}).get(name, []):  # a search's trials
                        _log_trial(client, experiment_id, child_id, name, trial, common)
                children[name] = child_id
            _log_artifacts(client, parent_id, parent_artifacts)
            if candidate is not None:
                if not registered_model:
                    raise ValueError("registered_model is required to register a candidate")
                version = register_candidate(client, registered_model, candidate,
                                             children[candidate], model_ids.get(candidate))
                registered = {"variant": candidate, "model": registered_model,
                              "version": version, "model_id": model_ids.get(candidate)}
                client.set_tag(parent_id, "candidate", f"{registered_model}/{version} ({candidate})")
        log.info("MLflow: parent run %s with %d child runs and %d logged models in %s",
                 parent_id, len(children), len(model_ids), uri)
        return {"tracking_uri": uri, "experiment_id": experiment_id, "parent_run_id": parent_id,
                "child_run_ids": children, "model_ids": model_ids,
                "model_errors": model_errors, "candidate": registered}


def main(argv: Sequence[str] | None = None) -> None:
    """`python -m pipeline.tracking.runs [BASE_URL]`: print the address that opens the
    experiment of `params.yaml` (in the store it names) in the model-training view."""
    import argparse

    import yaml

    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("base", nargs="?", default="http://127.0.0.1:5000")
    parser.add_argument("--params", default="params.yaml")
    args = parser.parse_args(argv)
    with open(args.params, encoding="utf-8") as f:
        cfg = yaml.safe_load(f)["tracking"]
    uri = tracking_uri(cfg["uri"])
    experiment = None
    if not uri.startswith("sqlite:///") or Path(uri[len("sqlite:///"):]).is_file():
        from mlflow.tracking import MlflowClient

        experiment = MlflowClient(uri).get_experiment_by_name(cfg["experiment"])
    if experiment is None:  # nothing logged yet: the UI's home page
        print(args.base)
    else:
        print(ui_link(args.base, experiment.experiment_id))


if __name__ == "__main__":
    main()
