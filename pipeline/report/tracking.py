"""MLflow tracking: one parent run per pipeline execution, one child run per variant.

Everything is logged at the end of the pipeline, from the files the stages wrote, so a
pipeline execution gives one complete set of runs and an unchanged `dvc repro` logs nothing.
Every run is ended with a final status: FINISHED, FAILED, or KILLED when interrupted.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import subprocess
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from pipeline import signals
from pipeline.report.summary import metrics_of
from pipeline.variants import VariantSpec

log = logging.getLogger(__name__)

MAX_PARAMS_PER_BATCH = 100  # MLflow's log_batch limit
MAX_PARAM_LENGTH = 6000  # MLflow's limit on a param value


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
                client.set_terminated(run_id, status)


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
    """The experiment's id, creating it if missing (another process may win the race)."""
    from mlflow.exceptions import MlflowException

    exp = client.get_experiment_by_name(name)
    if exp:
        return str(exp.experiment_id)
    try:
        return str(client.create_experiment(name))
    except MlflowException:
        return str(client.get_experiment_by_name(name).experiment_id)


def _log_artifacts(client: Any, run_id: str, artifacts: Mapping[str, Path]) -> None:
    """Attach files or folders by artifact folder; missing paths (a failed variant has no
    model file) are skipped."""
    for folder, path in artifacts.items():
        if Path(path).is_dir():
            client.log_artifacts(run_id, str(path), artifact_path=folder)
        elif Path(path).exists():
            client.log_artifact(run_id, str(path), artifact_path=folder)


def register_candidate(client: Any, model_name: str, variant: str, run_id: str,
                       alias: str = "candidate") -> str:
    """Register the variant's `model/` artifact (its `.tflite`) as a new version of
    `model_name` and point `alias` at it.

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
    version = client.create_model_version(model_name, source=f"runs:/{run_id}/model",
                                          run_id=run_id, tags={"variant": variant}).version
    client.set_registered_model_alias(model_name, alias, version)
    log.info("MLflow registry: %s version %s (%s) is @%s", model_name, version, variant, alias)
    return str(version)


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


def log_pipeline(*, uri: str, experiment: str, run_name: str, config: Mapping[str, Any],
                 specs: Mapping[str, VariantSpec], rows: Mapping[str, Mapping[str, Any]],
                 parent_metrics: Mapping[str, float],
                 curves: Mapping[str, Sequence[float]], parent_tags: Mapping[str, str],
                 parent_artifacts: Mapping[str, Path],
                 variant_artifacts: Mapping[str, Mapping[str, Path]],
                 common_tags: Mapping[str, str] | None = None,
                 candidate: str | None = None,
                 registered_model: str | None = None,
                 extra_params: Mapping[str, str] | None = None) -> dict[str, Any]:
    """Log one pipeline execution: a parent run and a child run per variant.

    Args:
        uri: Tracking store or server.
        experiment: Experiment name (created if missing).
        run_name: Parent run name.
        config: The resolved config, logged as dotted params on the parent.
        specs: Variants, in order; each child gets its spec as params.
        rows: Per variant, the summary row (`pipeline.report.summarize`); a row whose
            `status` is not `ok` gives a FAILED child with its `error` as a tag.
        parent_metrics: Single metrics of the parent (e.g. the Keras model's test accuracy).
        curves: Step metrics of the parent (training curves, one value per epoch).
        parent_tags: Tags of the parent (e.g. the recommendation).
        parent_artifacts: Files or folders attached to the parent, by artifact folder.
        variant_artifacts: Per variant, files or folders attached to its child, by artifact
            folder.
        common_tags: Tags of every run (provenance: git commit, config hash, ...).
        candidate: The variant to register in the Model Registry with the alias
            `candidate`; None registers nothing.
        registered_model: The registered model's name (required with `candidate`).
        extra_params: More params of the parent (e.g. a sweep job's overrides).

    Returns:
        `tracking_uri`, `experiment_id`, `parent_run_id`, `child_run_ids` by variant, and
        `candidate` (`{variant, model, version}` or None).
    """
    with store_lock(uri):  # parallel sweep jobs take turns on one SQLite store
        from mlflow.tracking import MlflowClient

        client = MlflowClient(tracking_uri=uri)
        experiment_id = ensure_experiment(client, experiment)
        children: dict[str, str] = {}
        # Settings every child shares, so each run says how its figures were measured.
        some_ok = next((r for r in rows.values() if r.get("status", "ok") == "ok"), {})
        child_params = {"benchmark.settings": ",".join(some_ok.get("settings", {})) or "none",
                        "benchmark.headline": str(some_ok.get("headline")),
                        "evaluate.top_k": str(some_ok.get("top_k"))}
        common = dict(common_tags or {})
        parent_tags = {**common,
                       **{f"machine.{k}": str(v) for k, v in some_ok.get("machine", {}).items()},
                       **parent_tags}
        registered = None
        with signals.as_interrupt(), _run(client, experiment_id, run_name,
                                          {"pipeline": "dvc", **parent_tags}) as parent_id:
            _log(client, parent_id, params={**flatten(config), **(extra_params or {})},
                 metrics=parent_metrics, steps=curves)
            for name, spec in specs.items():
                row = rows[name]
                ok = row.get("status", "ok") == "ok"
                tags = {**common, "mlflow.parentRunId": parent_id, "variant": name,
                        **{f"machine.{k}": str(v) for k, v in row.get("machine", {}).items()},
                        **({"budget.verdict": str(row["budget_verdict"])}
                           if ok and "budget_verdict" in row else {}),
                        **({"kernel_paths.disagree": str(row["kernel_paths_disagree"]).lower()}
                           if ok and "kernel_paths_disagree" in row else {}),
                        "backend": spec.backend,
                        **({} if ok else {"error": str(row.get("error"))[:5000]})}
                with _run(client, experiment_id, name, tags,
                          "FINISHED" if ok else "FAILED") as child_id:
                    _log(client, child_id, params={**spec.as_params(), **child_params},
                         metrics=metrics_of(row) if ok else {})
                    _log_artifacts(client, child_id, variant_artifacts.get(name, {}))
                children[name] = child_id
            _log_artifacts(client, parent_id, parent_artifacts)
            if candidate is not None:
                if not registered_model:
                    raise ValueError("registered_model is required to register a candidate")
                version = register_candidate(client, registered_model, candidate,
                                             children[candidate])
                registered = {"variant": candidate, "model": registered_model, "version": version}
                client.set_tag(parent_id, "candidate", f"{registered_model}/{version} ({candidate})")
        log.info("MLflow: parent run %s with %d child runs in %s", parent_id, len(children), uri)
        return {"tracking_uri": uri, "experiment_id": experiment_id, "parent_run_id": parent_id,
                "child_run_ids": children, "candidate": registered}


