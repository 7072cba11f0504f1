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

import dataclasses
import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from pipeline import artifacts as a
from pipeline import signals
from pipeline.report.summary import metrics_of
from pipeline.tracking.models import Data, log_model, model_metrics, register_candidate
from pipeline.tracking.store import (MAX_PARAM_LENGTH, MAX_TAG_LENGTH, Uncut, ensure_experiment, flatten, log_artifacts, log_values,
                                     open_run, store_lock, tracking_uri, ui_link)
from pipeline.variants import VariantSpec

log = logging.getLogger(__name__)


def _log_inputs(client: Any, run_id: str, data: Data, splits: Sequence[str]) -> None:
    from mlflow.entities import DatasetInput, InputTag

    contexts = {"train": "training", "val": "validation", "test": "test"}
    client.log_inputs(run_id, datasets=[
        DatasetInput(data.dataset(s), tags=[InputTag("mlflow.data.context", contexts[s])])
        for s in splits])


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
    with open_run(client, experiment_id, f"{variant} trial {trial['trial']}", tags) as run_id:
        log_values(client, run_id, params={"search.trial": str(trial["trial"])}, metrics={
            k: float(trial[k]) for k in ("val_accuracy", "val_drop", "size_bytes", "seconds",
                                         "latency_ms_estimate")
            if trial.get(k) not in (None, "")})


# A calibration study point's figures (`pipeline.produce.calibration`), as its run's metrics.
STUDY_METRICS = ("accuracy", "accuracy_ci_low", "accuracy_ci_high", "agreement",
                 "worst_layer_snr_db", "train_samples", "size_bytes", "seconds")
STUDY_PARAMS = ("variant", "selection", "size", "draw", "whole")


def _log_study(client: Any, experiment_id: str, parent_id: str, run_name: str,
               study: Mapping[str, Any], folder: Path | None,
               common: Mapping[str, str]) -> str:
    """The calibration study as a run nested under the execution's, with one run per point
    nested under it (FAILED for a point whose variant the draw could not make)."""
    tags = {**common, "mlflow.parentRunId": parent_id, "study": "calibration"}
    with open_run(client, experiment_id, f"calibration study · {run_name}", tags) as study_id:
        log_values(client, study_id, params={
            "points": str(len(study["points"])), "main_size": str(study.get("main_size")),
            "misscale": str(study.get("misscale"))},
            metrics={f"float_{k}": float(v) for k, v in study["float"].items()})
        if folder is not None:
            log_artifacts(client, study_id, {"calibration": folder})
        for p in study["points"]:
            ok = p["status"] == "ok"
            point_tags = {**common, "mlflow.parentRunId": study_id, "variant": p["variant"],
                          "study": "calibration",
                          **({"worst_layer": p["worst_layer"][:MAX_TAG_LENGTH]}
                             if p.get("worst_layer") else {}),
                          **({} if ok else {"error": str(p.get("error"))[:MAX_TAG_LENGTH]})}
            with open_run(client, experiment_id, f"{p['name']} · {run_name}", point_tags,
                          "FINISHED" if ok else "FAILED") as run_id:
                log_values(client, run_id,
                           params={k: str(p[k]) for k in STUDY_PARAMS},
                           metrics={k: float(p[k]) for k in STUDY_METRICS
                                    if isinstance(p.get(k), (int, float))})
    return study_id


def variant_artifacts(variant_dir: Path, name: str, evaluation: Path, benchmark: Path,
                      footprint: Path, package: Path | None = None,
                      profile: Path | None = None) -> dict[str, Path | list[Path]]:
    """What a variant's child run gets, by artifact folder: its model (also its logged model),
    every file of its folder (`pipeline.artifacts`; the ones a kind does not write are
    skipped), its evaluation, benchmark (with its per-operator table) and footprint, and its
    device package (`deploy`, where the export stage wrote one)."""
    folder = Path(variant_dir)
    return {"model": a.tflite_path(folder, name), "inspection": folder / a.RECORD,
            "layer_errors": folder / a.LAYER_ERRORS, "tensor_errors": folder / a.TENSOR_ERRORS,
            "model_explorer": folder / a.OVERLAYS, "recipe": folder / a.RECIPE,
            "precision": folder / a.PRECISION, "equalization": folder / a.EQUALIZATION,
            "search": [folder / f for f in (a.SEARCH_TRIALS, a.SEARCH_PLOT,
                                            a.SEARCH_DECISIONS, a.SEARCH_RULES)],
            "evaluation": evaluation, "footprint": footprint,
            "benchmark": [benchmark, *([profile] if profile is not None else [])],
            **({"deploy": package} if package is not None else {})}


@dataclasses.dataclass
class Execution:
    """What one pipeline execution produced, as the runs log it.

    Attributes:
        run_name: Parent run name; a child is named `<variant> · <run_name>`.
        config: The resolved config, logged as dotted params on the parent.
        specs: Variants, in order; each child gets its spec as params.
        rows: Per variant, the summary row (`pipeline.report.summary.summarize`); a row whose
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
        study: The calibration study (`pipeline.produce.calibration`): a run nested under
            the parent, one run per point under it; None or no points: none.
        study_folder: The study's folder, the study run's artifact.
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
    study: Mapping[str, Any] | None = None
    study_folder: Path | None = None


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
        by variant, `study_run_id` (the calibration study's run, or None), `model_errors`
        (variants whose logged model MLflow refused: why), and
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
        experiment_id = ensure_experiment(client, experiment, uri)
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
        with signals.as_interrupt(), open_run(client, experiment_id, run_name,
                                          {"pipeline": "dvc", **parent_tags}) as parent_id:
            log_values(client, parent_id, params={**flatten(config), **(extra_params or {})},
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
                with open_run(client, experiment_id, f"{name} · {run_name}", tags,
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
                    run_metrics, linked = model_metrics(
                        model_ids.get(name), metrics_of(row) if ok else {}, data)
                    log_values(client, child_id, params=params, metrics=run_metrics)
                    for i in range(0, len(linked), 1000):
                        client.log_batch(child_id, metrics=linked[i:i + 1000])
                    log_artifacts(client, child_id, files)
                    for trial in (variant_trials or {}).get(name, []):  # a search's trials
                        _log_trial(client, experiment_id, child_id, name, trial, common)
                children[name] = child_id
            study_id = None
            if e.study and e.study["points"]:
                study_id = _log_study(client, experiment_id, parent_id, run_name, e.study,
                                      e.study_folder, common)
            log_artifacts(client, parent_id, parent_artifacts)
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
                "study_run_id": study_id,
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
