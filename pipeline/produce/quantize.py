"""Produce one variant: its kind's producer makes the flatbuffer, then the same for every
kind: the file, a run on LiteRT's kernels, what each layer asked for and got, inspection,
the promise check, every tensor against the float model, the record (imports TensorFlow).

A variant that fails (the converter refuses, LiteRT cannot run the result on one of its
kernel paths, or an integer-only variant still computes in float) is recorded as failed with
the message; the other variants go on. The folder format is `pipeline.artifacts`.

Each kind's producer is a module of this package (`pipeline.produce.producer`); adding a
kind is its spec module in `pipeline/variants/`, its producer module here, and one import
line in each package (here, not in `pipeline/produce/__init__.py`: every stage that imports
any `pipeline.produce` module runs that file, and would then depend on every producer).
"""

from __future__ import annotations

import logging
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.artifacts import (MAX_ERROR_CHARS, PRECISION, RECORD, new_record, record_failure,
                                tflite_path)
from pipeline.io import atomic_dir, csv_text, write_bytes, write_json, write_text
from pipeline.measure import inspection, litert
from pipeline.produce import litert_quantizer, model_store
# The producers, one per kind: importing them registers them (`PRODUCERS`).
from pipeline.produce import by_converter, by_quantizer, by_search, by_torch  # noqa: F401
from pipeline.produce.producer import (PRODUCERS, WORST_LAYERS, Folder, Inputs, Source,
                                       Validation, producer_for)
from pipeline.variants import VariantSpec

__all__ = ["PRODUCERS", "Inputs", "Source", "Validation", "compare_tensors", "variant"]

log = logging.getLogger(__name__)


def variant(spec: VariantSpec, inputs: Inputs, out_dir: str | Path) -> dict[str, Any]:
    """Make the variant `spec` from `inputs` and write its folder (replaced atomically).

    Writes `<name>.tflite` (on success), the kind's own files (`layer_errors.csv` of
    full-integer variants, the quantizer's `recipe.json` and `precision.csv`, the search's
    trajectory, ...), `tensor_errors.csv` and `conversion.json` (always) into `out_dir`.
    Whatever the producer or the checks raise fails this variant alone, with the message;
    a source model that could not be made (no QAT model) leaves only the failed record.

    Returns:
        The record written to `conversion.json` (`pipeline.artifacts`).
    """
    try:
        return _write(spec, inputs, Path(out_dir))
    except model_store.ModelUnavailable as exc:  # no QAT model: this variant fails, alone
        log.error("variant %s failed: %s", spec.name, exc)
        return record_failure(spec.name, out_dir, str(exc))


def _write(spec: VariantSpec, inputs: Inputs, out_dir: Path) -> dict[str, Any]:
    producer = producer_for(spec)
    checks: dict[str, Any] = {}  # what the shared steps after the producer found
    start = time.perf_counter()
    with atomic_dir(out_dir) as folder, tempfile.TemporaryDirectory() as scratch:
        out = Folder(folder, Path(scratch))
        try:
            produced = producer.produce(spec, inputs, out)
            path = write_bytes(tflite_path(folder, spec.name), produced.flatbuffer)
            sample = next((s for s in (inputs.comparison, inputs.calibration, inputs.selection)
                           if s is not None and len(s)), None)
            if sample is not None:  # refused by LiteRT's kernels: failed here, not later
                litert.check_runs(path, sample[:1])
            if produced.recipe is not None:  # what each layer asked for and what it got
                rows = litert_quantizer.asked_and_got(produced.recipe.quantized,
                                                      produced.recipe.recipe, path)
                write_text(folder / PRECISION, csv_text(rows))
                checks["asked_vs_got"] = litert_quantizer.mismatches(rows)
            checks["inspection"] = inspection.inspect(path)
            if spec.plain and inputs.source.intake:  # the float model converted as it is
                fid = inputs.source.intake["fidelity"]
                checks["fidelity"] = {"conversion_max_abs_diff": fid["max_abs_diff"],
                                      "conversion_agreement": fid["agreement"]}
            inspection.check_promise(spec.name, spec.integer_only, checks["inspection"])
            if inputs.float_tflite is not None and inputs.comparison is not None and \
                    len(inputs.comparison):
                checks.update(compare_tensors(inputs.float_tflite, path, inputs.comparison,
                                              folder, spec.name))
        except model_store.ModelUnavailable:
            raise  # the source model itself: `variant` records it, as if never attempted
        except Exception as exc:  # one variant failing must not sink the others
            message = f"{type(exc).__name__}: {exc}".strip()[:MAX_ERROR_CHARS]
            log.error("variant %s failed: %s", spec.name, message.splitlines()[0])
            tflite_path(folder, spec.name).unlink(missing_ok=True)
            checks.update(status="failed", error=message)
        record = {**new_record(spec.name), **out.facts, **checks,
                  "seconds": time.perf_counter() - start}
        write_json(folder / RECORD, record)
    return record


def compare_tensors(float_tflite: Path, path: Path, samples: np.ndarray, out: Path,
                    name: str) -> dict[str, Any]:
    """Every tensor of the variant against the float model (`tensor_errors.csv`, Model
    Explorer overlays); returns the record's facts: the three worst layers, or why the
    validator could not compare the pair (the variant stands)."""
    from pipeline.artifacts import OVERLAYS, TENSOR_ERRORS

    try:
        rows = litert_quantizer.tensor_errors(float_tflite, path, samples, out / OVERLAYS,
                                              name)
    except Exception as exc:  # the validator on this pair: its limit, not the variant's
        return {"tensor_errors_error": f"{type(exc).__name__}: {exc}"[:MAX_ERROR_CHARS]}
    write_text(out / TENSOR_ERRORS, csv_text(rows))
    return {"worst_tensors": [r for r in rows if r["kind"] == "intermediate"][:WORST_LAYERS]}
