"""Stage track: log this pipeline execution to MLflow (a parent run, a child per variant)
and register the chosen variant's `.tflite` with the alias `candidate`.

    python stages/track.py --reports reports --models models --evaluations evaluation \
        --benchmarks benchmark --out reports/mlflow_run.json
"""

from pathlib import Path

from pipeline import cli, quantize, report, tracking
from pipeline.config import ROOT, load_params
from pipeline.io import read_json, write_json


def main() -> None:
    p = cli.parser(__doc__)
    p.add_argument("--reports", required=True, help="folder written by the report stage")
    p.add_argument("--models", required=True, help="folder with keras/ and tflite/")
    p.add_argument("--evaluations", required=True)
    p.add_argument("--benchmarks", required=True)
    p.add_argument("--out", required=True, help="record of the logged run ids (JSON)")
    args = p.parse_args()
    cfg, raw = load_params(args.params)
    reports, keras = Path(args.reports), Path(args.models) / "keras"
    tflite = Path(args.models) / "tflite"
    rows = read_json(reports / "summary.json")
    rec = read_json(reports / "recommendation.json")
    # Step metrics, one value per epoch: train_loss, train_val_accuracy, qat_loss, ...
    curves = {f"{prefix}_{k}": v for prefix, model in (("train", "float"), ("qat", "qat"))
              for k, v in read_json(keras / f"{model}_history.json").items()}
    result = tracking.log_pipeline(
        uri=tracking.tracking_uri(cfg.tracking.uri),
        experiment=cfg.tracking.experiment,
        run_name=f"{cfg.model.name}-{cfg.data.name}",
        config=raw,
        specs=cfg.variants,
        rows=rows,
        parent_metrics={
            "keras_test_accuracy": read_json(keras / "float_metrics.json")["test_accuracy"],
            "qat_keras_test_accuracy": read_json(keras / "qat_metrics.json")["test_accuracy"]},
        curves=curves,
        parent_tags={"recommended.smallest": str(rec["smallest"]),
                     "recommended.fastest": str(rec["fastest"]),
                     "max_accuracy_drop": str(rec["max_accuracy_drop"]),
                     "budget.misses": ",".join(rec["misses"]) or "none",
                     "failed_variants": ",".join(rec["failed"]) or "none"},
        parent_artifacts={"report": reports, "config": Path(args.params),
                          "keras_model": keras / "float.h5"},
        variant_artifacts={v: {
            "model": quantize.tflite_path(tflite / v, v),
            "inspection": tflite / v / quantize.RECORD,
            "layer_errors": tflite / v / quantize.LAYER_ERRORS,
            "evaluation": Path(args.evaluations) / v,
            "benchmark": Path(args.benchmarks) / f"{v}.json"} for v in cfg.variants},
        common_tags=tracking.provenance(ROOT, raw),
        candidate=report.candidate(rows, rec, cfg.report.prefer),
        registered_model=cfg.tracking.registered_model,
    )
    write_json(args.out, result)
    cli.log.info("results: %s and %s; runs in %s (`mlflow ui --backend-store-uri %s`)",
                 reports / "summary.md", reports / "report.html", result["tracking_uri"],
                 result["tracking_uri"])


if __name__ == "__main__":
    cli.run(main)
