"""Step track: log this pipeline execution to MLflow (a parent run, a child per variant) and
register the candidate (`reports/recommendation.json`) with the alias `candidate`
(no TensorFlow)."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pipeline import artifacts, data
from pipeline.config import Config
from pipeline.io import read_json, write_json
from pipeline.layout import (CALIBRATION_STUDY, RECOMMENDATION, REPORT_HTML, SUMMARY_JSON,
                             SUMMARY_MD, Layout)
from pipeline.labels import keras_accuracy
from pipeline.tracking import models, store
from pipeline.tracking import runs as tracking

log = logging.getLogger(__name__)


def run(cfg: Config, layout: Layout, raw: Mapping[str, Any], params_file: Path,
        parent_run_id: str | None = None, extra_params: Mapping[str, str] | None = None,
        run_name: str | None = None) -> dict[str, Any]:
    """Log the execution whose outputs are under `layout`; writes `layout.mlflow_run`.

    Args:
        raw: The resolved config as a mapping, logged as params.
        params_file: The composed config file, logged as an artifact.
        parent_run_id: Nest the execution's run under this run (a sweep).
        extra_params: More params of the execution's run (a sweep job's overrides).
        run_name: Name of the execution's run; default `<model.name>-<data.name>`.

    Returns:
        The logged run ids (`pipeline.tracking.runs.log_pipeline`).
    """
    uri = store.tracking_uri(cfg.tracking.uri)
    store.check_reachable(uri)  # at once, before anything is read or logged
    rows = read_json(layout.report(SUMMARY_JSON))
    rec = read_json(layout.report(RECOMMENDATION))
    # Step metrics, one value per epoch: train_loss, train_val_accuracy, qat_loss, ...
    curves = {f"{prefix}_{k}": v for prefix, model in (("train", "float"), ("qat", "qat"))
              for k, v in read_json(layout.history(model)).items()}
    qat_metrics = read_json(layout.keras_metrics("qat"))
    keras_metrics = {
        "keras_test_accuracy": keras_accuracy(cfg, layout),  # None: label-free
        "qat_keras_test_accuracy": qat_metrics["test_accuracy"],  # None: QAT was impossible
        "qat_coverage": (qat_metrics.get("coverage") or {}).get("coverage")}
    execution = tracking.Execution(
        run_name=run_name or f"{cfg.model.name}-{cfg.data.name}",
        config=raw,
        specs=cfg.variants,
        rows=rows,
        parent_metrics={k: v for k, v in keras_metrics.items() if v is not None},
        curves=curves,
        parent_tags={"recommended.smallest": str(rec["smallest"]),
                     "recommendation.evidence": rec["evidence"],
                     "recommended.fastest": str(rec["fastest"]),
                     "max_accuracy_drop": str(rec["max_accuracy_drop"]),
                     "budget.misses": ",".join(rec["misses"]) or "none",
                     "failed_variants": ",".join(rec["failed"]) or "none",
                     **({"qat.error": qat_metrics["error"][:5000]} if qat_metrics.get("error")
                        else {}),
                     **({"qat.mode": qat_metrics["coverage"]["mode"]}
                        if qat_metrics.get("coverage") else {}),
                     **({"mlflow.parentRunId": parent_run_id} if parent_run_id else {})},
        parent_artifacts={"report": layout.reports, "config": params_file,
                          "keras_model": layout.keras("float")},
        variant_artifacts={v: tracking.variant_artifacts(
            layout.variant(v), v, layout.evaluation(v), layout.benchmark(v), layout.footprint(v),
            layout.package(v), layout.profile(v)) for v in cfg.variants},
        data=dataset_of(cfg, layout),
        note=recommendation_note(rec, rows),
        common_tags=store.provenance(Path.cwd(), raw),  # the project being run
        candidate=rec["candidate"],
        extra_params=extra_params or {},
        variant_trials={v: _csv_rows(layout.variant(v) / artifacts.SEARCH_TRIALS)
                        for v in cfg.variants
                        if (layout.variant(v) / artifacts.SEARCH_TRIALS).is_file()},
        # the calibration study (a job folder from before the study has none)
        study=(read_json(layout.calibration / CALIBRATION_STUDY)
               if (layout.calibration / CALIBRATION_STUDY).is_file() else None),
        study_folder=layout.calibration,
    )
    result = tracking.log_pipeline(execution, uri=uri, experiment=cfg.tracking.experiment,
                                   registered_model=cfg.tracking.registered_model)
    if uri.startswith(("http://", "https://")):
        result["ui"] = store.ui_link(uri, result["experiment_id"])
    write_json(layout.mlflow_run, result)
    log.info("results: %s and %s; runs in %s%s", layout.report(SUMMARY_MD),
             layout.report(REPORT_HTML), result["tracking_uri"],
             f" (open {result['ui']})" if "ui" in result else "")
    return result


def dataset_of(cfg: Config, layout: Layout, examples: int = 2) -> models.Data | None:
    """The prepared data as the runs' input: its DVC content digest, sizes and shapes, and
    a few validation samples as the logged models' input example (the test split is read
    by the evaluation alone). None, with a warning, if the store is not there: the runs are
    logged without a dataset input and the variants without logged models."""
    if not (Path(layout.dataset) / data.META).is_file():
        log.warning("no prepared data in %s: runs logged without their dataset input and "
                    "logged models", layout.dataset)
        return None
    info = data.meta(layout.dataset)
    ds = data.load(layout.dataset)
    return models.Data(
        name=cfg.data.name, digest=data.content_digest(layout.dataset),
        path=str(Path(layout.dataset).resolve()), source=str(info.get("source", "")),
        splits=info.get("splits", {}), sample_shape=tuple(ds.input_shape),
        num_classes=max(ds.num_classes, _model_classes(cfg, layout)),
        example=ds.x_val[:examples].astype("float32"))


def _model_classes(cfg: Config, layout: Layout) -> int:
    """How many classes the models score (the reference's evaluation: its per-class
    accuracies), 0 if it has not run; more than the data's when a split lacks some."""
    metrics = layout.evaluation_metrics(cfg.report.reference)
    return len(read_json(metrics).get("per_class_accuracy", [])) if metrics.is_file() else 0


def recommendation_note(rec: Mapping[str, Any], rows: Mapping[str, Mapping[str, Any]]) -> str:
    """The parent run's description: the recommendation in one sentence, with its evidence."""
    name = rec.get("candidate")
    row = rows.get(name or "", {})
    if not name or row.get("status", "ok") != "ok":
        return ("No variant to recommend: " + (", ".join(rec.get("failed", [])) or "none")
                + " failed. See reports/summary.md.")
    facts = [f"{row['size_bytes'] / 1024:.1f} KiB"
             + (f" ({row['compression_ratio']:.1f}x smaller than the reference)"
                if row.get("compression_ratio") else "")]
    if "smallest_arena_bytes" in row:
        facts.append(f"TFLite Micro arena {row['smallest_arena_bytes'] / 1024:.1f} KiB")
    if "accuracy_ci_low" in row:
        facts.append(f"test accuracy {row['accuracy']:.4f} "
                     f"[{row['accuracy_ci_low']:.4f}, {row['accuracy_ci_high']:.4f}]")
    if "accuracy_drop_ci_high" in row:
        facts.append(f"drop {row['accuracy_drop']:+.4f} [{row['accuracy_drop_ci_low']:+.4f}, "
                     f"{row['accuracy_drop_ci_high']:+.4f}] against a budget of "
                     f"{rec['max_accuracy_drop']:.4f} ({row.get('budget_verdict', '?')})")
    return f"Ship **{name}**, {', '.join(facts)}: {rec.get('candidate_reason', '')}."


def _csv_rows(path: Path) -> list[dict[str, Any]]:
    import csv

    with path.open() as f:
        return list(csv.DictReader(f))
