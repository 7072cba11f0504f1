"""Step quantize@VARIANT: make one variant, inspect and measure it."""

from __future__ import annotations

import logging
from typing import Any

from pipeline import data
from pipeline.produce import model_store, quantize
from pipeline.produce.layer_errors import read_table
from pipeline.produce.producer import Inputs, Source, Validation
from pipeline.config import Config
from pipeline.layout import Layout
from pipeline.variants import select

log = logging.getLogger(__name__)


def run(cfg: Config, layout: Layout, variant: str) -> dict[str, Any]:
    """Write the variant's folder (`pipeline.artifacts`); returns its record.

    The variant's kind makes it from its source model in the form it needs (the SavedModel
    exported once by the train or qat step, the Keras model, or the float model's
    `.tflite`: `pipeline.produce.quantize.variant`); a full-integer variant reads its
    per-layer table from the layer_errors step instead of running the debugger again; every
    variant of the float model has each tensor compared with the float model's on
    validation samples.
    """
    spec = select(cfg.variants, variant)
    out_dir = layout.variant(variant)
    calibration = selection = None
    ds = data.load(layout.dataset)
    if spec.calibrated:
        calibration = data.calibration_samples(ds, cfg.quantization.calibration_samples,
                                               cfg.seed)
        # Per-layer choices are decisions: made on the validation split, never on test.
        selection = ds.x_val[:cfg.quantization.calibration_samples]
    comparison = ds.x_val[:cfg.quantization.comparison_samples]
    float_tflite = None  # the float model's .tflite, to compare every tensor with
    if spec.source == "float":
        try:
            float_tflite = model_store.float_tflite(layout.keras("float"))
        except model_store.ModelUnavailable:
            pass  # nothing to compare with: the variant is still made
    validation = None
    target = spec.validation_target()
    if target is not None:  # trial models measured on the validation split
        budget, scored_against = target
        # label-free (`model`): scored against the float model's own answers, which the
        # variant's producer computes from the float .tflite it starts from
        validation = Validation(ds.x_val, ds.y_val if scored_against == "data" else None,
                                budget)
    inputs = Inputs(Source.stored(layout.keras(spec.source)), calibration=calibration,
                    selection=selection,
                    stored_table=lambda spec: read_table(layout.layer_errors, spec),
                    validation=validation, comparison=comparison, float_tflite=float_tflite)
    record = quantize.variant(spec, inputs, out_dir)
    log.info("%s: %s in %.1f s -> %s", variant, record["status"], record["seconds"], out_dir)
    return record
