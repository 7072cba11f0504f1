"""Step quantize@VARIANT: convert, inspect and measure one variant."""

from __future__ import annotations

import logging
from typing import Any

from pipeline import artifacts, data
from pipeline.produce import model_store
from pipeline.produce import quantize as quantize_mod
from pipeline.produce.layer_errors import read_table
from pipeline.config import Config
from pipeline.layout import Layout
from pipeline.variants import FLOAT_TFLITE, KERAS, select

log = logging.getLogger(__name__)


def run(cfg: Config, layout: Layout, variant: str) -> dict[str, Any]:
    """Write the variant's folder (`pipeline.artifacts`); returns its record.

    The variant is converted from its source model's SavedModel (exported once by the
    train or qat step), or quantized from the float model's `.tflite` (LiteRT Quantizer); a
    full-integer variant reads its per-layer table from the layer_errors step instead of
    running the debugger again; every variant of the float model has each tensor compared
    with the float model's on validation samples.
    """
    spec = select(cfg.variants, variant)
    out_dir = layout.variant(variant)
    calibration = selection = table = None
    ds = data.load(layout.dataset)
    if spec.calibrated:
        calibration = data.calibration_samples(ds, cfg.quantization.calibration_samples,
                                               cfg.seed)
        # Per-layer choices are decisions: made on the validation split, never on test.
        selection = ds.x_val[:cfg.quantization.calibration_samples]
    comparison = ds.x_val[:cfg.quantization.comparison_samples]
    reference = None  # the source's float .tflite, to compare every tensor with
    if spec.source == "float":
        try:
            reference = model_store.float_tflite(layout.keras("float"))
        except model_store.ModelUnavailable:
            pass  # nothing to compare with: the variant still converts
    try:
        if spec.source_form == KERAS:  # equalization and AdaRound change the Keras model
            source = model_store.load(layout.keras(spec.source))
        elif spec.source_form == FLOAT_TFLITE:
            source = model_store.float_tflite(layout.keras(spec.source))
        else:
            source = model_store.conversion_source(layout.keras(spec.source))
    except model_store.ModelUnavailable as exc:  # no QAT model: this variant fails, alone
        log.error("variant %s failed: %s", variant, exc)
        record = artifacts.record_failure(variant, out_dir, str(exc))
    else:
        if spec.full_integer and not spec.prepared:  # a prepared model has its own table
            table = read_table(layout.layer_errors, spec)
        validation = None
        target = spec.validation_target()
        if target is not None:  # candidates measured on the validation split
            budget, scored_against = target
            y_val = ds.y_val
            if scored_against == "model":  # label-free: the float model's own answers
                from pipeline.measure.litert import Runner

                y_val = Runner(source).predict(ds.x_val).argmax(axis=1)
            validation = (ds.x_val, y_val, budget)
        record = quantize_mod.quantize_variant(source, spec, calibration, out_dir, selection,
                                               table, reference, comparison, validation)
    log.info("%s: %s in %.1f s -> %s", variant, record["status"], record["seconds"], out_dir)
    return record
