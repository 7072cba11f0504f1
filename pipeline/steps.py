"""The pipeline's steps, one function per DVC stage, shared by both drivers: the stage
scripts (`dvc repro`) and the in-process Hydra app (`python -m pipeline`). Each step reads
its inputs from paths, writes its outputs to paths, and returns what it wrote.

`Layout` names every path relative to one root: the project for DVC (the same paths as
dvc.yaml), a Hydra job directory for the app.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pipeline.config import Config
from pipeline.io import atomic_dir, read_json, write_json
from pipeline.variants import select

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class Layout:
    """Where each step's outputs go, under `root` (as in dvc.yaml)."""

    root: Path

    @property
    def dataset(self) -> Path:
        return self.root / "data" / "prepared" / "dataset.npz"

    def keras(self, model: str, kind: str = "model") -> Path:
        """`model` is `float` or `qat`; `kind` is `model` (a folder, `pipeline.model_store`),
        `history` or `metrics`."""
        return self.root / "models" / "keras" / (
            model if kind == "model" else f"{model}_{kind}.json")

    @property
    def tflite(self) -> Path:
        return self.root / "models" / "tflite"

    @property
    def evaluations(self) -> Path:
        return self.root / "evaluation"

    @property
    def reference_outputs(self) -> Path:
        return self.evaluations / "reference_outputs.npy"

    @property
    def benchmarks(self) -> Path:
        return self.root / "benchmark"

    @property
    def reports(self) -> Path:
        return self.root / "reports"


def prepare(cfg: Config, out: Path) -> Path:
    """Load the dataset and write its seeded, stratified splits."""
    from pipeline import data

    ds = data.prepare(cfg.data, cfg.seed)
    data.save(ds, out)
    log.info("wrote %s: train %d, val %d, test %d samples of shape %s", out, len(ds.x_train),
             len(ds.x_val), len(ds.x_test), ds.input_shape)
    return out


def train(cfg: Config, data_path: Path, out: Path, history: Path, metrics: Path) -> float:
    """Train the float Keras model, or with `model.name: file` load the user's model, check
    that it fits the data, and measure it; returns its test accuracy.

    Raises:
        FileNotFoundError, ValueError: a missing or unloadable model file, or one whose input
            does not fit the data (nothing is written).
    """
    from pipeline import data, model_store
    from pipeline import train as train_mod
    from pipeline.models import FROM_FILE

    ds = data.load(data_path)
    if cfg.model.name == FROM_FILE:
        if not cfg.model.path:
            raise ValueError("model.path is required for model.name=file")
        model, kind, blocker = model_store.load_user_model(cfg.model.path,
                                                           cfg.model.safe_mode)
        model_store.check_fits(model, ds.input_shape, ds.num_classes)
        accuracy = model_store.accuracy(model, ds.x_test, ds.y_test)
        hist: dict[str, list[float]] = {}  # not trained here
        info = {"origin": str(Path(cfg.model.path).expanduser().resolve()), "kind": kind}
        log.info("model %s (%s): test accuracy %.4f", cfg.model.path, kind, accuracy)
    else:
        model, hist, accuracy = train_mod.train(ds, cfg.model, cfg.train, cfg.seed)
        info, blocker = {"origin": "trained", "kind": "tf_keras"}, None
    if blocker:
        log.warning("QAT will not be possible: %s; the post-training variants still run "
                    "(%s)", blocker, model_store.QAT_HOW_TO)
    model_store.save(model, out, info, blocker)
    write_json(history, hist)
    write_json(metrics, {"test_accuracy": accuracy})
    return accuracy


def qat(cfg: Config, data_path: Path, model: Path, out: Path, history: Path,
        metrics: Path) -> float | None:
    """Fine-tune the float model with QAT; returns its test accuracy.

    A float model QAT cannot annotate (subclassed, Keras 3, a layer tfmot does not support)
    is not an error: the QAT model is recorded as unavailable with the reason, its accuracy
    is None, and the variants made from it are reported as failed.
    """
    from pipeline import data, model_store
    from pipeline import qat as qat_mod

    blocker = model_store.read_info(model).get("qat_blocker")
    qat_model = None
    if not blocker:
        ds = data.load(data_path)
        try:
            qat_model, hist, accuracy = qat_mod.fine_tune(model_store.load(model), ds, cfg.qat,
                                                          cfg.seed)
        except qat_mod.QatUnsupported as exc:
            blocker = str(exc).splitlines()[0]
    if blocker:
        reason = f"QAT is not possible: {blocker}; {model_store.QAT_HOW_TO}"
        log.warning("%s. The post-training variants still run.", reason)
        model_store.save_unavailable(out, reason)
        write_json(history, {})
        write_json(metrics, {"test_accuracy": None, "error": reason})
        return None
    model_store.save(qat_model, out, {"origin": "qat"})
    write_json(history, hist)
    write_json(metrics, {"test_accuracy": accuracy})
    return accuracy


def quantize(cfg: Config, variant: str, data_path: Path, model: Path, out_dir: Path
             ) -> dict[str, Any]:
    """Convert, inspect and measure one variant (`pipeline.quantize`); returns its record."""
    from pipeline import data, model_store, quantize as quantize_mod

    spec = select(cfg.variants, variant)
    calibration = None
    if spec.representative_data:
        calibration = data.calibration_samples(data.load(data_path),
                                               cfg.quantization.calibration_samples, cfg.seed)
    try:
        source = model_store.load(model, qat=spec.source == "qat")
    except model_store.ModelUnavailable as exc:  # no QAT model: this variant fails, alone
        record = quantize_mod.record_failure(spec, out_dir, str(exc))
    else:
        record = quantize_mod.quantize_variant(source, spec, calibration, out_dir)
    log.info("%s: %s in %.1f s -> %s", variant, record["status"], record["seconds"], out_dir)
    return record


def reference(cfg: Config, data_path: Path, variant_dir: Path, out: Path) -> Path:
    """The reference variant's outputs on the test split.

    Raises:
        ValueError: if the reference variant failed to convert.
    """
    from pipeline import data, evaluate as evaluate_mod, quantize as quantize_mod

    name = cfg.report.reference
    record = quantize_mod.read_record(variant_dir)
    if record["status"] != "ok":
        raise ValueError(f"the reference variant {name!r} failed, so nothing can be "
                         f"compared: {record['error']}")
    ds = data.load(data_path)
    return evaluate_mod.reference_outputs(quantize_mod.tflite_path(variant_dir, name),
                                          ds.x_test, out, cfg.evaluate.batch_size)


def evaluate(cfg: Config, variant: str, data_path: Path, variant_dir: Path,
             reference_path: Path, out_dir: Path) -> dict[str, Any]:
    """Evaluate one variant; writes `metrics.json` and the confusion matrix (JSON, PNG)."""
    import numpy as np

    from pipeline import data, evaluate as evaluate_mod, plots, quantize as quantize_mod

    select(cfg.variants, variant)
    if quantize_mod.read_record(variant_dir)["status"] != "ok":
        result = quantize_mod.skipped("evaluate")
        with atomic_dir(out_dir) as out:
            write_json(out / "metrics.json", result)
        return result
    ds = data.load(data_path)
    ref = np.load(reference_path, mmap_mode="r")  # read batch by batch
    result = evaluate_mod.evaluate(quantize_mod.tflite_path(variant_dir, variant), ds.x_test,
                                   ds.y_test, ref, cfg.evaluate.batch_size, cfg.evaluate.top_k,
                                   ds.num_classes)
    matrix = result.pop("confusion_matrix")
    result = {"status": "ok", **result}
    with atomic_dir(out_dir) as out:
        write_json(out / "confusion_matrix.json", matrix)
        plots.confusion_matrix(matrix, f"{variant}: accuracy {result['accuracy']:.4f}",
                               out / "confusion_matrix.png")
        write_json(out / "metrics.json", result)
    return result


def benchmark(cfg: Config, variant: str, data_path: Path, variant_dir: Path,
              reference_dir: Path, out: Path, progress: bool = True) -> dict[str, Any]:
    """Benchmark one variant in every configured setting; writes its JSON."""
    from pipeline import benchmark as benchmark_mod, data, quantize as quantize_mod

    select(cfg.variants, variant)
    if quantize_mod.read_record(variant_dir)["status"] != "ok":
        result = quantize_mod.skipped("benchmark")
        write_json(out, result)
        return result
    ref_name = cfg.report.reference
    ds = data.load(data_path)
    result = {"status": "ok", **benchmark_mod.benchmark(
        quantize_mod.tflite_path(variant_dir, variant), ds.x_test[:1], cfg.benchmark,
        None if variant == ref_name else quantize_mod.tflite_path(reference_dir, ref_name),
        progress=progress)}
    write_json(out, result)
    return result


def report(cfg: Config, variants_dir: Path, evaluations_dir: Path, benchmarks_dir: Path,
           keras_metrics: Path, histories: Mapping[str, Path], out_dir: Path
           ) -> dict[str, Path]:
    """Summarize every variant and write the report (`pipeline.report.write_report`)."""
    from pipeline import quantize as quantize_mod, report as report_mod

    names = list(cfg.variants)
    records = {v: quantize_mod.read_record(variants_dir / v) for v in names}
    evaluations = {v: read_json(evaluations_dir / v / "metrics.json") for v in names}
    benchmarks = {v: read_json(benchmarks_dir / f"{v}.json") for v in names}
    rows = report_mod.summarize(cfg.variants, records, evaluations, benchmarks,
                                cfg.report.reference)
    rec = report_mod.recommend(rows, cfg.report.max_accuracy_drop)
    return report_mod.write_report(out_dir, rows, cfg.variants, rec,
                                   read_json(keras_metrics)["test_accuracy"],
                                   {m: read_json(p) for m, p in histories.items()})


def track(cfg: Config, raw: Mapping[str, Any], layout: Layout, params_file: Path, out: Path,
          parent_run_id: str | None = None, extra_params: Mapping[str, str] | None = None,
          run_name: str | None = None) -> dict[str, Any]:
    """Log the execution whose outputs are under `layout` to MLflow (`pipeline.tracking`).

    Args:
        parent_run_id: Nest the execution's run under this run (a sweep).
        extra_params: More params of the execution's run (a sweep job's overrides).
        run_name: Name of the execution's run; default `<model>-<data>`.
    """
    from pipeline import quantize as quantize_mod, report as report_mod, tracking

    uri = tracking.tracking_uri(cfg.tracking.uri)
    tracking.check_reachable(uri)  # at once, before anything is read or logged
    reports = layout.reports
    rows = read_json(reports / "summary.json")
    rec = read_json(reports / "recommendation.json")
    # Step metrics, one value per epoch: train_loss, train_val_accuracy, qat_loss, ...
    curves = {f"{prefix}_{k}": v for prefix, model in (("train", "float"), ("qat", "qat"))
              for k, v in read_json(layout.keras(model, "history")).items()}
    tflite = layout.tflite
    qat_metrics = read_json(layout.keras("qat", "metrics"))
    keras_metrics = {
        "keras_test_accuracy": read_json(layout.keras("float", "metrics"))["test_accuracy"],
        "qat_keras_test_accuracy": qat_metrics["test_accuracy"]}  # None: QAT was impossible
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
                     "recommended.fastest": str(rec["fastest"]),
                     "max_accuracy_drop": str(rec["max_accuracy_drop"]),
                     "budget.misses": ",".join(rec["misses"]) or "none",
                     "failed_variants": ",".join(rec["failed"]) or "none",
                     **({"qat.error": qat_metrics["error"][:5000]} if qat_metrics.get("error")
                        else {}),
                     **({"mlflow.parentRunId": parent_run_id} if parent_run_id else {})},
        parent_artifacts={"report": reports, "config": params_file,
                          "keras_model": layout.keras("float")},
        variant_artifacts={v: {
            "model": quantize_mod.tflite_path(tflite / v, v),
            "inspection": tflite / v / quantize_mod.RECORD,
            "layer_errors": tflite / v / quantize_mod.LAYER_ERRORS,
            "evaluation": layout.evaluations / v,
            "benchmark": layout.benchmarks / f"{v}.json"} for v in cfg.variants},
        common_tags=tracking.provenance(Path.cwd(), raw),  # the project being run
        candidate=report_mod.candidate(rows, rec, cfg.report.prefer),
        registered_model=cfg.tracking.registered_model,
        extra_params=extra_params,
    )
    write_json(out, result)
    log.info("results: %s and %s; runs in %s", reports / "summary.md", reports / "report.html",
             result["tracking_uri"])
    return result


def run_all(cfg: Config, raw: Mapping[str, Any], root: Path, params_file: Path,
            parent_run_id: str | None = None, extra_params: Mapping[str, str] | None = None,
            run_name: str | None = None) -> dict[str, Any]:
    """Every step in order, in one process, with outputs under `root` (the Hydra app).

    Returns:
        The track step's result (run ids).
    """
    lay = Layout(Path(root))
    prepare(cfg, lay.dataset)
    train(cfg, lay.dataset, lay.keras("float"), lay.keras("float", "history"),
          lay.keras("float", "metrics"))
    qat(cfg, lay.dataset, lay.keras("float"), lay.keras("qat"), lay.keras("qat", "history"),
        lay.keras("qat", "metrics"))
    for name, spec in cfg.variants.items():
        quantize(cfg, name, lay.dataset, lay.keras(spec.source), lay.tflite / name)
    ref_dir = lay.tflite / cfg.report.reference
    reference(cfg, lay.dataset, ref_dir, lay.reference_outputs)
    for name in cfg.variants:
        evaluate(cfg, name, lay.dataset, lay.tflite / name, lay.reference_outputs,
                 lay.evaluations / name)
        benchmark(cfg, name, lay.dataset, lay.tflite / name, ref_dir,
                  lay.benchmarks / f"{name}.json", progress=False)
    report(cfg, lay.tflite, lay.evaluations, lay.benchmarks, lay.keras("float", "metrics"),
           {"float": lay.keras("float", "history"), "qat": lay.keras("qat", "history")},
           lay.reports)
    return track(cfg, raw, lay, params_file, lay.reports / "mlflow_run.json", parent_run_id,
                 extra_params, run_name)
