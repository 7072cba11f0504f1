"""Adjust the float Keras model's weights before it is converted (imports TensorFlow): the
one entry for what a variant asks of them, on a copy: cross-layer equalization and bias
correction (`pipeline.produce.equalize`), AdaRound (`pipeline.produce.adaround`).

A variant that does (`spec.adjusts_weights`) writes `equalization.csv` (each equalized
layer's channel ranges before and after) and notes `preparation` (what changed) and, for
AdaRound, `adaround` (each layer's reconstruction error) in its record.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.artifacts import EQUALIZATION
from pipeline.io import csv_text, write_text
from pipeline.produce import adaround, equalize
from pipeline.produce.producer import Folder
from pipeline.tfcompat import import_tf
from pipeline.variants import VariantSpec


@dataclasses.dataclass(frozen=True)
class Adjustments:
    """What to change in the float Keras model's weights before conversion.

    Attributes:
        equalize: Fold batch norms and equalize consecutive layers' channel ranges.
        bias_correction: Move each bias back by the mean shift its int8 weights cause.
        per_channel: The int8 weights bias correction simulates: per channel or per tensor.
        adaround: Round each weight up or down onto this grid; None: to nearest, later.
    """

    equalize: bool = False
    bias_correction: bool = False
    per_channel: bool = True
    adaround: adaround.Grid | None = None


def adjust_weights(model: Any, spec: VariantSpec, calibration: np.ndarray | None,
                   adjustments: Adjustments, out: Folder) -> Any:
    """A copy of the float Keras model `model` with its weights adjusted as `adjustments`
    say (the caller's model is untouched); writes `equalization.csv` into `out` and notes
    what changed.

    Raises:
        ValueError: if the model is a SavedModel only (a Keras 3 file), or the variant is
            calibrated and no calibration samples were given.
    """
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
        raise ValueError(f"variant {spec.name!r} adjusts its model's weights on calibration "
                         "samples: none were given")
    report = equalize.equalize(model) if adjustments.equalize else equalize.Report()
    if adjustments.bias_correction:
        equalize.correct_biases(model, calibration, adjustments.per_channel, report)
    rounding: list[dict[str, Any]] = []
    if adjustments.adaround is not None:
        assert calibration is not None
        if not adjustments.equalize:  # the converter folds batch norms into the kernels: first
            equalize.fold_batch_norms(model, report)
        rounding = adaround.adaround(model, calibration, adjustments.adaround)
        out.note(adaround=rounding)
    if report.rows:
        write_text(out / EQUALIZATION, csv_text(report.rows))
    figures = {f"spread_median_{when}": float(np.median([r[f"spread_{when}"]
                                                         for r in report.rows]))
               for when in ("before", "after") if report.rows}
    if adjustments.adaround is not None:
        ratios = [r["adaround"] / r["nearest"] for r in rounding if r["nearest"] > 0]
        figures.update(adaround_layers=len(rounding),
                       adaround_error_ratio_median=float(np.median(ratios)) if ratios else 1.0)
    # `preparation`: the record's key as the report and earlier records read it
    out.note(preparation={**report.summary(), **figures,
                          "seconds": time.perf_counter() - started})
    return model
