"""Step track: log this pipeline execution to MLflow (a parent run, a child per variant) and
register the candidate (`reports/recommendation.json`) with the alias `candidate`
(no TensorFlow)."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pipeline import artifacts
from pipeline.config import Config
from pipeline.io import read_json, write_json
from pipeline.layout import Layout
from pipeline.report import tracking

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
        The logged run ids (`pipeline.report.tracking.log_pipeline`).
    """
    uri = tracking.tracking_uri(cfg.tracking.uri)
    tracking.check_reachable(uri)  # at once, before anything is read or logged
    rows = read_json(layout.report("summary.json"))
    rec = read_json(layout.report("recommendation.json"))
    # Step metrics, one value per epoch: train_loss, train_val_accuracy, qat_loss, ...
    curves = {f"{prefix}_{k}": v for prefix, model in (("train", "float"), ("qat", "qat"))
              for k, v in read_json(layout.history(model)).items()}
    qat_metrics = read_json(layout.keras_metrics("qat"))
    keras_metrics = {
        "keras_test_accuracy": read_json(layout.keras_metrics("float"))["test_accuracy"],
        "qat_keras_test_accuracy": qat_metrics["test_accuracy"],  # None: QAT was impossible
        "qat_coverage": (qat_metrics.get("coverage") or {}).get("coverage")}
    result = tracking.log_pipeline(
        uri=uri,
        experiment=cfg.tracking.experiment,
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
        variant_artifacts={v: {
            "model": artifacts.tflite_path(layout.variant(v), v),
            "inspection": layout.variant(v) / artifacts.RECORD,
            "layer_errors": layout.variant(v) / artifacts.LAYER_ERRORS,
            "tensor_errors": layout.variant(v) / artifacts.TENSOR_ERRORS,
            "model_explorer": layout.variant(v) / artifacts.OVERLAYS,
            "recipe": layout.variant(v) / artifacts.RECIPE,
            "precision": layout.variant(v) / artifacts.PRECISION,
            "evaluation": layout.evaluation(v),
            "benchmark": layout.benchmark(v)} for v in cfg.variants},
        common_tags=tracking.provenance(Path.cwd(), raw),  # the project being run
        candidate=rec["candidate"],
        registered_model=cfg.tracking.registered_model,
        extra_params=extra_params,
    )
    write_json(layout.mlflow_run, result)
    log.info("results: %s and %s; runs in %s", layout.report("summary.md"),
             layout.report("report.html"), result["tracking_uri"])
    return result
