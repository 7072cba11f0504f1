"""Produce one variant: convert, inspect, check its promise, measure per-layer error
(imports TensorFlow).

A variant that fails (the converter refuses, LiteRT cannot run the result on one of its
kernel paths, or an integer-only variant still computes in float) is recorded as failed with
the message; the other variants go on. The folder format
is `pipeline.artifacts`.
"""

from __future__ import annotations

import logging
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.artifacts import (LAYER_ERRORS, MAX_ERROR_CHARS, PRECISION, RECIPE, RECORD,
                                new_record, tflite_path)
from pipeline.build import convert, debug, litert_quantizer
from pipeline.io import atomic_dir, write_bytes, write_json, write_text
from pipeline.measure import inspection, litert
from pipeline.variants import VariantSpec

log = logging.getLogger(__name__)

WORST_LAYERS = 3  # how many of the worst layers the record (and the report) lists


class LayerTable:
    """A full-integer variant's per-layer error table, computed once per source model and
    setting by the layer_errors step, or the reason it could not be computed."""

    def __init__(self, rows: list[dict[str, Any]] | None, error: str | None = None) -> None:
        self.rows, self.error = rows, error


def quantize_variant(model: Any, spec: VariantSpec, calibration: np.ndarray | None,
                     out_dir: str | Path, selection: np.ndarray | None = None,
                     table: LayerTable | None = None, reference: Path | None = None,
                     comparison: np.ndarray | None = None,
                     validation: tuple[Any, np.ndarray, float] | None = None
                     ) -> dict[str, Any]:
    """Convert `model` as `spec` says and write the variant's folder (replaced atomically).

    Writes `<name>.tflite` (on success), `layer_errors.csv` (full-integer variants) and
    `conversion.json` (always) into `out_dir`. Whatever the converter or the debugger raise
    on the model fails this variant alone, with the message; a per-layer table that could
    not be computed fails only a selective variant (which needs it to choose its layers).

    Args:
        model: A `tf_keras` model, or a SavedModel folder's path (`pipeline.build.model_store`).
        calibration: Representative samples from the training split (calibrated variants).
        selection: Samples from the validation split that per-layer error (and so the
            choice of layers kept in float) is measured on; default: the calibration samples.
        table: The per-layer table already computed for this variant's setting; None
            computes it here (full-integer variants).
        reference: The float model's `.tflite`, to compare every tensor with (and the
            LiteRT Quantizer's input); with `comparison` samples (validation split).
        validation: For a search: `(x_val, y_val, budget)`, what candidates are measured on.

    Returns:
        The record written to `conversion.json` (`pipeline.artifacts`).
    """
    record = new_record(spec.name)
    start = time.perf_counter()
    with atomic_dir(out_dir) as out, tempfile.TemporaryDirectory() as scratch:
        try:
            if spec.prepared:  # a copy of the tf_keras model, equalized and corrected
                model = prepare(model, spec, calibration, out, record)
            if spec.full_integer and calibration is not None and table is None:
                table = layer_table(model, spec, calibration, selection)
            layers = table.rows if table and table.rows is not None else []
            if table and table.rows is not None:
                write_text(out / LAYER_ERRORS, debug.to_csv(layers))
                record["worst_layers"] = layers[:WORST_LAYERS]
            elif table:
                record["layer_errors_error"] = table.error
            if spec.search:  # `model` is the float .tflite, searched over
                if validation is None:
                    raise ValueError(f"variant {spec.name!r} searches: it needs the "
                                     "validation split")
                flatbuffer = run_search(Path(model), spec, calibration, validation, out,
                                        record)
            elif spec.quantizer:  # LiteRT Quantizer: `model` is the float .tflite
                if spec.prepared:  # the prepared Keras model's own float .tflite
                    model = write_bytes(Path(scratch) / "prepared.tflite",
                                        convert.convert(model, VariantSpec("float32",
                                                                           source="float")))
                flatbuffer, recipe = litert_quantizer.quantize(Path(model), spec, calibration)
                write_json(out / RECIPE, recipe)
            elif spec.selective:
                assert calibration is not None  # full_integer implies representative data
                if table is None or table.rows is None:
                    raise RuntimeError("the per-layer error this variant chooses its float "
                                       f"layers by is unavailable: {table and table.error}")
                denylist = debug.choose_denylist(layers, spec.denylist_top_k,
                                                 spec.denylist_threshold)
                record["denylisted_nodes"] = denylist
                flatbuffer = debug.convert_selective(model, spec, calibration, denylist)
            else:
                flatbuffer = convert.convert(model, spec, calibration)
            path = write_bytes(tflite_path(out, spec.name), flatbuffer)
            sample = next((s for s in (comparison, calibration, selection)
                           if s is not None and len(s)), None)
            if sample is not None:  # refused by LiteRT's kernels: failed here, not later
                litert.check_runs(path, sample[:1])
            if spec.quantizer:
                rows = litert_quantizer.asked_and_got(Path(model), recipe, path)
                write_text(out / PRECISION, _csv(rows))
                record["asked_vs_got"] = litert_quantizer.mismatches(rows)
            record["inspection"] = inspection.inspect(path)
            inspection.check_promise(spec.name, spec.integer_only, record["inspection"])
            if reference is not None and comparison is not None and len(comparison):
                compare_tensors(reference, path, comparison, out, spec.name, record)
        except Exception as exc:  # one variant failing must not sink the others
            message = f"{type(exc).__name__}: {exc}".strip()[:MAX_ERROR_CHARS]
            log.error("variant %s failed: %s", spec.name, message.splitlines()[0])
            tflite_path(out, spec.name).unlink(missing_ok=True)
            record.update(status="failed", error=message)
        record["seconds"] = time.perf_counter() - start
        write_json(out / RECORD, record)
    return record


def prepare(model: Any, spec: VariantSpec, calibration: np.ndarray | None, out: Path,
            record: dict[str, Any]) -> Any:
    """A copy of the float Keras model, equalized, bias-corrected and AdaRounded as the
    variant asks (`pipeline.build.equalize`); writes `equalization.csv` (each equalized
    layer's channel ranges before and after) and what changed into the record."""
    from pipeline.artifacts import EQUALIZATION
    from pipeline.build import equalize
    from pipeline.build.tfcompat import import_tf

    if isinstance(model, (str, Path)):
        raise ValueError(f"variant {spec.name!r} changes the Keras model before converting "
                         "it, but this model is stored as a SavedModel only (a Keras 3 "
                         "file): equalize, bias_correction and adaround need a tf_keras "
                         "model")
    started = time.perf_counter()
    _, keras = import_tf()
    copy = keras.models.clone_model(model)
    copy.set_weights(model.get_weights())
    model = copy
    if spec.calibrated and (calibration is None or not len(calibration)):
        raise ValueError(f"variant {spec.name!r} prepares its model on calibration samples: "
                         "none were given")
    report = equalize.equalize(model) if spec.equalize else equalize.Report()
    if spec.bias_correction:
        equalize.correct_biases(model, calibration, spec.per_channel, report)
    ratios: list[float] = []
    if spec.rounding == "adaround":
        assert calibration is not None
        if not spec.equalize:  # the converter folds batch norms into the kernels: first
            equalize.fold_batch_norms(model, report)
        bits, per_channel, kinds = 8, spec.per_channel, equalize.WEIGHTED
        if spec.quantizer:  # the recipe's width; int4 leaves depthwise convs in float
            bits = 4 if "wi4" in (spec.recipe or "") else 8
            per_channel = True
            kinds = ("Conv2D", "Dense") if bits == 4 else equalize.WEIGHTED
        equalize.adaround(model, calibration, bits, per_channel, report, kinds)
        ratios = [r["adaround"] / r["nearest"] for r in report.rounding if r["nearest"] > 0]
        record["adaround"] = report.rounding
    if report.rows:
        write_text(out / EQUALIZATION, _csv(report.rows))
    figures = {f"spread_median_{when}": float(np.median([r[f"spread_{when}"]
                                                         for r in report.rows]))
               for when in ("before", "after") if report.rows}
    if spec.rounding == "adaround":
        figures.update(adaround_layers=len(report.rounding),
                       adaround_error_ratio_median=float(np.median(ratios)) if ratios else 1.0)
    record["preparation"] = {**report.summary(), **figures,
                             "seconds": time.perf_counter() - started}
    return model


def layer_table(model: Any, spec: VariantSpec, calibration: np.ndarray,
                selection: np.ndarray | None) -> LayerTable:
    """The per-layer error of a full-integer variant's setting, or why the debugger could
    not give it (whatever it raised on the model, in one line)."""
    try:
        return LayerTable(debug.layer_errors(model, spec, calibration, selection))
    except Exception as exc:  # TensorFlow's debugger on the user's model: its failure
        message = f"{type(exc).__name__}: {' '.join(str(exc).split())}"[:MAX_ERROR_CHARS]
        log.warning("per-layer error of %s unavailable: %s", spec.name, message[:300])
        return LayerTable(None, message)


def _csv(rows: list[dict[str, Any]]) -> str:
    import csv
    import io

    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(rows[0]) if rows else ["op"],
                            lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buf.getvalue()


def compare_tensors(reference: Path, path: Path, samples: np.ndarray, out: Path, name: str,
                    record: dict[str, Any]) -> None:
    """Every tensor of the variant against the float model (`tensor_errors.csv`, Model
    Explorer overlays, the three worst layers in the record); a pair the validator cannot
    compare is noted in the record, and the variant stands."""
    from pipeline.artifacts import OVERLAYS, TENSOR_ERRORS

    try:
        rows = litert_quantizer.tensor_errors(reference, path, samples, out / OVERLAYS, name)
    except Exception as exc:  # the validator on this pair: its limit, not the variant's
        record["tensor_errors_error"] = f"{type(exc).__name__}: {exc}"[:MAX_ERROR_CHARS]
        return
    write_text(out / TENSOR_ERRORS, _csv(rows))
    record["worst_tensors"] = [r for r in rows if r["kind"] == "intermediate"][:WORST_LAYERS]


def run_search(float_tflite: Path, spec: VariantSpec, calibration: np.ndarray | None,
               validation: tuple[Any, np.ndarray, float], out: Path,
               record: dict[str, Any]) -> bytes:
    """The accuracy-aware search (`pipeline.build.search`): writes its trajectory, plot,
    decisions and rules into the variant's folder, its summary into the record; returns the
    model found."""
    import tempfile

    from pipeline.artifacts import SEARCH_DECISIONS, SEARCH_PLOT, SEARCH_RULES, SEARCH_TRIALS
    from pipeline.build import search

    x_val, y_val, budget = validation
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as work:
        result = search.search(spec, float_tflite, calibration, x_val, y_val, budget,
                               Path(work))
    write_text(out / SEARCH_TRIALS, _csv([t.row() for t in result.trials]))
    write_text(out / SEARCH_DECISIONS, _csv(result.decisions))
    layers = litert_quantizer.weight_ops(float_tflite)
    write_text(out / SEARCH_RULES, search.rules_yaml(result.decisions, layers))
    search.plot(result, budget, spec.objective, out / SEARCH_PLOT)
    record["search"] = {
        "stop": result.stop, "budget_met": result.met, "budget": budget,
        "trials": len(result.trials), "found_trial": result.best.index,
        "val_accuracy": result.best.accuracy, "val_drop": result.best.drop,
        "float_val_accuracy": result.float_accuracy, "noise_floor": result.noise_floor,
        "resolvable": result.resolvable, "seconds": time.perf_counter() - started,
        "seconds_per_trial": (time.perf_counter() - started) / len(result.trials),
        "start": result.trials[0].change,
        "precisions": {d["layer"]: d["precision"] for d in result.decisions}}
    if not result.met:
        log.warning("search %s: the budget was not met (%s); the best found is kept, flagged",
                    spec.name, result.stop)
    if not result.resolvable:
        log.warning("search %s: a budget of %g is tighter than the validation split can show "
                    "(even a model agreeing on every sample has a drop bound of %.4f)",
                    spec.name, budget, result.noise_floor)
    return result.best.flatbuffer
