"""The MLflow store the lab logs into: its address (`tracking_uri`), whether it answers, the
lock that lets parallel sweep jobs share one SQLite store, the experiment with its shared view
(`VIEW_STATE`: the runs table sorted by accuracy) and a run that always ends with a final
status, and what every run says of where it came from (`provenance`)."""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import logging
import os
import re
import subprocess
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from pipeline import metrics, signals
from pipeline.reads import leaves

log = logging.getLogger(__name__)

MAX_PARAMS_PER_BATCH = 100  # MLflow's log_batch limit


MAX_PARAM_LENGTH = 6000  # MLflow's limit on a param value


MAX_TAG_LENGTH = 5000


# The tag the MLflow 3 UI reads for the kind of an experiment: model development, not GenAI.
EXPERIMENT_KIND = {"mlflow.experimentKind": "custom_model_development"}


# The runs table as the lab's experiment opens: a shared view (an experiment tag the UI reads
# for `?viewStateShareKey=lab`), sorted by accuracy, with the columns that compare variants.
VIEW_KEY = "lab"


VIEW_METRICS = metrics.keys(metrics.VIEW)


VIEW_STATE = {
    "orderByKey": "metrics.`accuracy`", "orderByAsc": False, "searchFilter": "",
    "startTime": "ALL", "lifecycleFilter": "Active", "datasetsFilter": [],
    "modelVersionFilter": "All Runs",
    "selectedColumns": ["attributes.`Dataset`", "attributes.`Models`",
                        *(f"metrics.`{m}`" for m in VIEW_METRICS), "tags.`budget.verdict`",
                        "tags.`backend`"]}  # each child's tag (its param is variant.backend)


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
    return {name: (",".join(map(str, value)) if isinstance(value, (list, tuple))
                   else str(value))[:MAX_PARAM_LENGTH]
            for name, value in leaves(d, prefix).items()}


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
def open_run(client: Any, experiment_id: str, name: str, tags: Mapping[str, str],
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


def log_values(client: Any, run_id: str, params: Mapping[str, str] = {},
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


def artifact_location(uri: str, name: str) -> str | None:
    """Where a new experiment of a SQLite store keeps its artifacts: `mlruns/<name>` beside
    the database, not MLflow's default `./mlruns` in whatever folder the process runs in
    (a store elsewhere, as the tests' are, got its artifacts in the working directory)."""
    prefix = "sqlite:///"
    if not uri.startswith(prefix) or uri == prefix + ":memory:":
        return None  # a server or another database: its own default
    folder = Path(uri[len(prefix):]).resolve().parent / "mlruns"
    return (folder / re.sub(r"[^A-Za-z0-9_.-]", "_", name)).as_uri()


def ensure_experiment(client: Any, name: str, uri: str | None = None) -> str:
    """The experiment's id, creating it if missing (another process may win the race;
    artifacts beside a SQLite store `uri`: `artifact_location`), tagged as model development
    with the lab's shared view (also an experiment an older lab created)."""
    from mlflow.exceptions import MlflowException

    tags = {**EXPERIMENT_KIND, f"mlflow.sharedViewState.{VIEW_KEY}": json.dumps(VIEW_STATE)}
    exp = client.get_experiment_by_name(name)
    if exp is None:
        try:
            return str(client.create_experiment(
                name, artifact_location=artifact_location(uri, name) if uri else None,
                tags=tags))
        except MlflowException:
            exp = client.get_experiment_by_name(name)
    for key, value in tags.items():
        if exp.tags.get(key) != value:
            client.set_experiment_tag(exp.experiment_id, key, value)
    return str(exp.experiment_id)


def log_artifacts(client: Any, run_id: str,
                   artifacts: Mapping[str, Path | Sequence[Path]]) -> None:
    """Attach files or folders (one, or a list) by artifact folder; missing paths (a failed
    variant has no model file) are skipped."""
    for folder, paths in artifacts.items():
        for path in [paths] if isinstance(paths, (str, Path)) else paths:
            if Path(path).is_dir():
                client.log_artifacts(run_id, str(path), artifact_path=folder)
            elif Path(path).exists():
                client.log_artifact(run_id, str(path), artifact_path=folder)


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

