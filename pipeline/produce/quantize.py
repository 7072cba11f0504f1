"""Produce one variant: convert, inspect, check its promise, measure per-layer error
(imports TensorFlow).

A variant that fails (the converter refuses, LiteRT cannot run the result on one of its
kernel paths, or an integer-only variant still computes in float) is recorded as failed with
the message; the other variants go on. The folder format
is `pipeline.artifacts`.
"""

from __future__ import annotations

import dataclasses
import logging
import tempfile
from collections.abc import Callable
import time
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.artifacts import (LAYER_ERRORS, MAX_ERROR_CHARS, PRECISION, RECIPE, RECORD,
                                new_record, tflite_path)
from pipeline.produce import convert, litert_quantizer
from pipeline.produce import layer_errors
from pipeline.produce.layer_errors import LayerTable, layer_table
from pipeline.io import atomic_dir, write_bytes, write_json, write_text
from pipeline.measure import inspection, litert
from pipeline.variants import ConverterVariant, QuantizerVariant, SearchVariant, VariantSpec

log = logging.getLogger(__name__)

WORST_LAYERS = 3  # how many of the worst layers the record (and the report) lists


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
        model: A `tf_keras` model, or a SavedModel folder's path (`pipeline.produce.model_store`).
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
        job = Job(calibration, selection, table, validation, out, Path(scratch), record)
        try:
            # by the kind's class (the config may be a recording view: a subclass of it)
            produce = next(PRODUCERS[k] for k in type(spec).__mro__ if k in PRODUCERS)
            flatbuffer = produce(model, spec, job)
            path = write_bytes(tflite_path(out, spec.name), flatbuffer)
            sample = next((s for s in (comparison, calibration, selection)
                           if s is not None and len(s)), None)
            if sample is not None:  # refused by LiteRT's kernels: failed here, not later
                litert.check_runs(path, sample[:1])
            if job.recipe is not None:  # what each layer asked for and what it got
                rows = litert_quantizer.asked_and_got(job.recipe[0], job.recipe[1], path)
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


@dataclasses.dataclass
class Job:
    """What a kind's producer gets besides its source model and spec."""

    calibration: np.ndarray | None
    selection: np.ndarray | None
    table: LayerTable | None
    validation: tuple[Any, np.ndarray, float] | None
    out: Path  # the variant's folder, being written
    scratch: Path
    record: dict[str, Any]
    recipe: tuple[Path, Any] | None = None  # the quantizer's input and applied recipe


def produce_converter(model: Any, spec: ConverterVariant, job: Job) -> bytes:
    """The TFLite converter, on the (prepared) Keras model or its SavedModel; a full-integer
    variant's per-layer table is recorded, and a selective one keeps its worst layers in
    float by it."""
    if spec.prepared:  # a copy of the tf_keras model, equalized and corrected
        adaround = (8, spec.per_channel, None) if spec.rounding == "adaround" else None
        model = prepare(model, spec, job, equalize_=spec.equalize,
                        bias_correction=spec.bias_correction, per_channel=spec.per_channel,
                        adaround=adaround)
    table = job.table
    if spec.full_integer and job.calibration is not None and table is None:
        table = layer_table(model, spec, job.calibration, job.selection)
    layers = table.rows if table and table.rows is not None else []
    if table and table.rows is not None:
        write_text(job.out / LAYER_ERRORS, layer_errors.to_csv(layers))
        job.record["worst_layers"] = layers[:WORST_LAYERS]
    elif table:
        job.record["layer_errors_error"] = table.error
    if not spec.selective:
        return convert.convert(model, spec, job.calibration)
    assert job.calibration is not None  # full_integer implies representative data
    if table is None or table.rows is None:
        raise RuntimeError("the per-layer error this variant chooses its float layers by is "
                           f"unavailable: {table and table.error}")
    denylist = layer_errors.choose_denylist(layers, spec.denylist_top_k,
                                            spec.denylist_threshold)
    job.record["denylisted_nodes"] = denylist
    return layer_errors.convert_selective(model, spec, job.calibration, denylist)


def produce_quantizer(model: Any, spec: QuantizerVariant, job: Job) -> bytes:
    """The LiteRT Quantizer on the float model's `.tflite` (for AdaRound: on the rounded
    Keras model's own float `.tflite`); writes the applied recipe."""
    if spec.prepared:
        bits = 4 if "wi4" in (spec.recipe or "") else 8  # int4 leaves depthwise convs float
        model = prepare(model, spec, job, adaround=(
            bits, True, ("Conv2D", "Dense") if bits == 4 else None))
        model = write_bytes(job.scratch / "prepared.tflite", convert.convert(
            model, ConverterVariant("float32", source="float")))
    flatbuffer, recipe = litert_quantizer.quantize(Path(model), spec, job.calibration)
    write_json(job.out / RECIPE, recipe)
    job.recipe = (Path(model), recipe)
    return flatbuffer


def produce_search(model: Any, spec: SearchVariant, job: Job) -> bytes:
    """The accuracy-aware search from the float model's `.tflite`."""
    if job.validation is None:
        raise ValueError(f"variant {spec.name!r} searches: it needs the validation split")
    return run_search(Path(model), spec, job.calibration, job.validation, job.out, job.record)


# The one dispatch: each kind of variant (`pipeline.variants.KINDS`) and what makes its file.
PRODUCERS: dict[type[VariantSpec], Callable[[Any, Any, Job], bytes]] = {
    ConverterVariant: produce_converter,
    QuantizerVariant: produce_quantizer,
    SearchVariant: produce_search,
}


def prepare(model: Any, spec: VariantSpec, job: Job, *, equalize_: bool = False,
            bias_correction: bool = False, per_channel: bool = True,
            adaround: tuple[int, bool, tuple[str, ...] | None] | None = None) -> Any:
    """A copy of the float Keras model, equalized, bias-corrected and AdaRounded
    (`adaround`: bits, per channel, the layer kinds or None for every weighted one; bias
    correction simulates per-channel or per-tensor int8 weights) as the
    variant asks (`pipeline.produce.equalize`); writes `equalization.csv` (each equalized
    layer's channel ranges before and after) and what changed into the record."""
    from pipeline.artifacts import EQUALIZATION
    from pipeline.produce import equalize
    from pipeline.tfcompat import import_tf

    calibration, record = job.calibration, job.record
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
    report = equalize.equalize(model) if equalize_ else equalize.Report()
    if bias_correction:
        equalize.correct_biases(model, calibration, per_channel, report)
    ratios: list[float] = []
    if adaround is not None:
        assert calibration is not None
        if not equalize_:  # the converter folds batch norms into the kernels: first
            equalize.fold_batch_norms(model, report)
        bits, per_channel, kinds = adaround
        equalize.adaround(model, calibration, bits, per_channel, report,
                          kinds or equalize.WEIGHTED)
        ratios = [r["adaround"] / r["nearest"] for r in report.rounding if r["nearest"] > 0]
        record["adaround"] = report.rounding
    if report.rows:
        write_text(job.out / EQUALIZATION, _csv(report.rows))
    figures = {f"spread_median_{when}": float(np.median([r[f"spread_{when}"]
                                                         for r in report.rows]))
               for when in ("before", "after") if report.rows}
    if adaround is not None:
        figures.update(adaround_layers=len(report.rounding),
                       adaround_error_ratio_median=float(np.median(ratios)) if ratios else 1.0)
    record["preparation"] = {**report.summary(), **figures,
                             "seconds": time.perf_counter() - started}
    return model


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
    """The accuracy-aware search (`pipeline.produce.search`): writes its trajectory, plot,
    decisions and rules into the variant's folder, its summary into the record; returns the
    model found."""
    import tempfile

    from pipeline.artifacts import SEARCH_DECISIONS, SEARCH_PLOT, SEARCH_RULES, SEARCH_TRIALS
    from pipeline.produce import search

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
