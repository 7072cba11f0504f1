"""Produce one variant: convert, inspect, check its promise, measure per-layer error
(imports TensorFlow).

A variant that fails (the converter refuses, or an integer-only variant still computes in
float) is recorded as failed with the message; the other variants go on. The folder format
is `pipeline.artifacts`.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.artifacts import LAYER_ERRORS, MAX_ERROR_CHARS, RECORD, new_record, tflite_path
from pipeline.build import convert, debug
from pipeline.io import atomic_dir, write_bytes, write_json, write_text
from pipeline.measure import inspection
from pipeline.variants import VariantSpec

log = logging.getLogger(__name__)

WORST_LAYERS = 3  # how many of the worst layers the record (and the report) lists


def quantize_variant(model: Any, spec: VariantSpec, calibration: np.ndarray | None,
                     out_dir: str | Path, selection: np.ndarray | None = None
                     ) -> dict[str, Any]:
    """Convert `model` as `spec` says and write the variant's folder (replaced atomically).

    Writes `<name>.tflite` (on success), `layer_errors.csv` (full-integer variants) and
    `conversion.json` (always) into `out_dir`.

    Args:
        model: A `tf_keras` model, or a SavedModel folder's path (`pipeline.build.model_store`).
        calibration: Representative samples from the training split (calibrated variants).
        selection: Samples from the validation split that per-layer error (and so the
            choice of layers kept in float) is measured on; default: the calibration samples.

    Returns:
        The record written to `conversion.json` (`pipeline.artifacts`).
    """
    record = new_record(spec.name)
    start = time.perf_counter()
    with atomic_dir(out_dir) as out:
        try:
            layers: list[dict[str, Any]] = []
            if spec.full_integer and calibration is not None:
                layers = debug.layer_errors(model, spec, calibration, selection)
                write_text(out / LAYER_ERRORS, debug.to_csv(layers))
                record["worst_layers"] = layers[:WORST_LAYERS]
            if spec.selective:
                assert calibration is not None  # full_integer implies representative data
                denylist = debug.choose_denylist(layers, spec.denylist_top_k,
                                                 spec.denylist_threshold)
                record["denylisted_nodes"] = denylist
                flatbuffer = debug.convert_selective(model, spec, calibration, denylist)
            else:
                flatbuffer = convert.convert(model, spec, calibration)
            path = write_bytes(tflite_path(out, spec.name), flatbuffer)
            record["inspection"] = inspection.inspect(path)
            inspection.check_promise(spec.name, spec.integer_only, record["inspection"])
        except Exception as exc:  # one variant failing must not sink the others
            message = f"{type(exc).__name__}: {exc}".strip()[:MAX_ERROR_CHARS]
            log.error("variant %s failed: %s", spec.name, message.splitlines()[0])
            tflite_path(out, spec.name).unlink(missing_ok=True)
            record.update(status="failed", error=message)
        record["seconds"] = time.perf_counter() - start
        write_json(out / RECORD, record)
    return record
