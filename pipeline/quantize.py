"""Produce one variant: convert, inspect, check its promise, measure per-layer error.

A variant that fails (the converter refuses, or an integer-only variant still computes in
float) is recorded as failed with the message; the other variants go on.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import numpy as np

from pipeline import convert, debug, inspection
from pipeline.io import atomic_dir, write_bytes, write_json, write_text
from pipeline.variants import VariantSpec

log = logging.getLogger(__name__)

RECORD = "conversion.json"  # per-variant record: status, error, inspection, worst layers
LAYER_ERRORS = "layer_errors.csv"
MAX_ERROR_CHARS = 4000  # converter messages can carry whole MLIR dumps
WORST_LAYERS = 3


def tflite_path(out_dir: str | Path, name: str) -> Path:
    """Where variant `name`'s model lives in its output folder."""
    return Path(out_dir) / f"{name}.tflite"


def _new_record(spec: VariantSpec) -> dict[str, Any]:
    return {"variant": spec.name, "status": "ok", "error": None, "inspection": None,
            "denylisted_nodes": [], "worst_layers": []}


def quantize_variant(model: Any, spec: VariantSpec, calibration: np.ndarray | None,
                     out_dir: str | Path) -> dict[str, Any]:
    """Convert `model` as `spec` says and write the variant's folder (replaced atomically).

    Writes `<name>.tflite` (on success), `layer_errors.csv` (full-integer variants) and
    `conversion.json` (always) into `out_dir`.

    Args:
        model: A `tf_keras` model, or a SavedModel folder's path (`pipeline.model_store`).

    Returns:
        The record written to `conversion.json`: `variant`, `status` (`ok` or `failed`),
        `error`, `seconds`, `inspection`, `denylisted_nodes`, `worst_layers`.
    """
    record = _new_record(spec)
    start = time.perf_counter()
    with atomic_dir(out_dir) as out:
        try:
            layers: list[dict[str, Any]] = []
            if spec.full_integer and calibration is not None:
                layers = debug.layer_errors(model, spec, calibration)
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


def record_failure(spec: VariantSpec, out_dir: str | Path, error: str) -> dict[str, Any]:
    """Write the folder of a variant that could not even be attempted (its source model is
    unavailable): only `conversion.json`, failed with `error`."""
    log.error("variant %s failed: %s", spec.name, error)
    record = {**_new_record(spec), "status": "failed", "error": error[:MAX_ERROR_CHARS],
              "seconds": 0.0}
    with atomic_dir(out_dir) as out:
        write_json(out / RECORD, record)
    return record


def read_record(out_dir: str | Path) -> dict[str, Any]:
    """The `conversion.json` record of a variant folder written by `quantize_variant`.

    Raises:
        FileNotFoundError: if the folder has no record (the quantize stage has not run).
    """
    from pipeline.io import read_json

    path = Path(out_dir) / RECORD
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist; run the quantize stage")
    return read_json(path)


def skipped(stage: str) -> dict[str, Any]:
    """What evaluate or benchmark writes for a variant whose conversion failed."""
    return {"status": "failed", "error": f"{stage} skipped: the conversion failed"}
