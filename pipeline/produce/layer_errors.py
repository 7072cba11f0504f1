"""The per-layer table: quantization error per layer with TFLite's `QuantizationDebugger`
(imports TensorFlow), selective quantization by it, and the table the layer_errors step
stores (`INDEX` and one CSV per setting) read back.

For each quantized layer the debugger runs the float and the quantized graph side by side on
the calibration samples. `rmse/scale` is the error in units of the layer's quantization step:
a layer quantized as well as rounding allows sits near 1/sqrt(12) ~ 0.289; layers far above it
hurt accuracy, and selective quantization keeps them in float.
"""

from __future__ import annotations

import csv
import io
import logging
import math
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from pipeline import quiet
from pipeline.artifacts import MAX_ERROR_CHARS
from pipeline.io import read_json
from pipeline.produce.convert import configure, new_converter
from pipeline.tfcompat import import_tf
from pipeline.variants import ConverterVariant

log = logging.getLogger(__name__)

INDEX = "index.json"  # {setting key: {"variants": [...], "status": ..., "error": ...}}
# Columns of the per-layer CSV, in order.
COLUMNS = ("op_name", "tensor_name", "num_elements", "mean_squared_error", "max_abs_error",
           "scale", "zero_point", "rmse_over_scale")


def _debugger(model: Any, spec: ConverterVariant, calibration: np.ndarray,
              denylisted_nodes: Sequence[str] = (), samples: np.ndarray | None = None) -> Any:
    tf, _ = import_tf()
    # The debugger needs float I/O and fallback-capable ops to run both graphs side by side.
    converter = configure(new_converter(model), spec, calibration)
    converter.inference_input_type = tf.float32
    converter.inference_output_type = tf.float32
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    # The layers are compared on `samples` (the validation split: a per-layer choice is a
    # decision, and decisions are made on validation data), calibrated on `calibration`.
    samples = (calibration if samples is None else samples).astype(np.float32)

    def dataset() -> Iterator[list[np.ndarray]]:
        from tqdm import tqdm

        for sample in tqdm(samples, desc=f"per-layer error ({spec.name})", unit="sample",
                           disable=None, leave=False):
            yield [sample[np.newaxis]]

    options = tf.lite.experimental.QuantizationDebugOptions(
        denylisted_nodes=list(denylisted_nodes) or None)
    with warnings.catch_warnings():  # it runs tf.lite.Interpreter, which warns of deprecation
        warnings.simplefilter("ignore", UserWarning)
        with quiet.native():  # it converts: the converter's "fully_quantize: 0, ..." line
            return tf.lite.experimental.QuantizationDebugger(
                converter=converter, debug_dataset=dataset, debug_options=options)


def compute(model: Any, spec: ConverterVariant, calibration: np.ndarray,
                 samples: np.ndarray | None = None) -> list[dict[str, Any]]:
    """Per-layer error of the variant's quantization against the float model.

    Args:
        model: The float `tf_keras` model, or a SavedModel folder's path.
        spec: A full-integer variant (`spec.full_integer`).
        calibration: Samples `(n, *input_shape)` used to calibrate.
        samples: Samples the float and quantized layers are compared on (default: the
            calibration samples).

    Returns:
        One row per quantized layer with the keys of `COLUMNS`, worst `rmse_over_scale` first.

    Raises:
        ValueError: if the variant is not full-integer.
    """
    if not spec.full_integer:
        raise ValueError(f"per-layer error needs a full-integer variant, not {spec.name!r}")
    debugger = _debugger(model, spec, calibration, samples=samples)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        debugger.run()
    buf = io.StringIO()
    debugger.layer_statistics_dump(buf)
    rows = []
    for r in csv.DictReader(io.StringIO(buf.getvalue())):
        scale, mse = float(r["scale"]), float(r["mean_squared_error"])
        rows.append({
            "op_name": r["op_name"],
            "tensor_name": r["tensor_name"],
            "num_elements": int(float(r["num_elements"])),
            "mean_squared_error": mse,
            "max_abs_error": float(r["max_abs_error"]),
            "scale": scale,
            "zero_point": int(float(r["zero_point"])),
            "rmse_over_scale": math.sqrt(mse) / scale if scale > 0 else math.inf,
        })
    rows.sort(key=lambda row: row["rmse_over_scale"], reverse=True)
    return rows


def choose_denylist(rows: Sequence[dict[str, Any]], top_k: int,
                    threshold: float | None) -> list[str]:
    """Tensor names to keep in float: the `top_k` worst, plus all above `threshold`.

    Args:
        rows: Output of `layer_errors` (worst first).
        top_k: How many of the worst layers to keep in float.
        threshold: Keep every layer whose rmse/scale exceeds this (None: no threshold).
    """
    chosen = [r["tensor_name"] for r in rows[:top_k]]
    if threshold is not None:
        chosen += [r["tensor_name"] for r in rows
                   if r["rmse_over_scale"] > threshold and r["tensor_name"] not in chosen]
    return chosen


def convert_selective(model: Any, spec: ConverterVariant, calibration: np.ndarray,
                      denylisted_nodes: Sequence[str]) -> bytes:
    """Quantize the model with the named layers kept in float.

    Returns:
        The `.tflite` bytes. Input/output stay float (the debugger's converter set-up).
    """
    log.info("selective quantization of %s: %d layer(s) kept in float", spec.name,
             len(denylisted_nodes))
    debugger = _debugger(model, spec, calibration, denylisted_nodes)
    with quiet.native():
        return bytes(debugger.get_nondebug_quantized_model())


def to_csv(rows: Sequence[dict[str, Any]]) -> str:
    """The per-layer rows as CSV text, with a header even when there are no rows."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buf.getvalue()


def from_csv(text: str) -> list[dict[str, Any]]:
    """Rows written by `to_csv`, typed again."""
    rows = []
    for r in csv.DictReader(io.StringIO(text)):
        rows.append({"op_name": r["op_name"], "tensor_name": r["tensor_name"],
                     "num_elements": int(r["num_elements"]),
                     "mean_squared_error": float(r["mean_squared_error"]),
                     "max_abs_error": float(r["max_abs_error"]), "scale": float(r["scale"]),
                     "zero_point": int(r["zero_point"]),
                     "rmse_over_scale": float(r["rmse_over_scale"])})
    return rows


def setting_key(spec: ConverterVariant) -> str:
    """The name of a full-integer variant's debugger setting: variants with the same key get
    the same per-layer table (the debugger converts with float I/O and builtin ops, so only
    the weight granularity and storage types change what it measures)."""
    return "_".join(["per_channel" if spec.per_channel else "per_tensor",
                     *spec.supported_types])


class LayerTable:
    """A full-integer variant's per-layer error table, computed once per source model and
    setting by the layer_errors step, or the reason it could not be computed."""

    def __init__(self, rows: list[dict[str, Any]] | None, error: str | None = None) -> None:
        self.rows, self.error = rows, error


def layer_table(model: Any, spec: ConverterVariant, calibration: np.ndarray,
                selection: np.ndarray | None) -> LayerTable:
    """The per-layer error of a full-integer variant's setting, or why the debugger could
    not give it (whatever it raised on the model, in one line)."""
    try:
        return LayerTable(compute(model, spec, calibration, selection))
    except Exception as exc:  # TensorFlow's debugger on the user's model: its failure
        message = f"{type(exc).__name__}: {' '.join(str(exc).split())}"[:MAX_ERROR_CHARS]
        log.warning("per-layer error of %s unavailable: %s", spec.name, message[:300])
        return LayerTable(None, message)


def read_table(folder: Path, spec: ConverterVariant) -> LayerTable | None:
    """The table the layer_errors step wrote into `folder` for a full-integer variant's setting; None when
    that step has not run (the quantize step then computes it itself)."""
    index = folder / INDEX
    if not index.is_file():
        return None
    key = setting_key(spec)
    entry = read_json(index).get(key)
    if entry is None:
        return LayerTable(None, f"no per-layer table for setting {key}; run layer_errors")
    if entry["status"] != "ok":
        return LayerTable(None, entry["error"])
    return LayerTable(from_csv((folder / f"{key}.csv").read_text()))
