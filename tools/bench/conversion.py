"""Conversion figures on a real architecture: MobileNetV2 (alpha 0.35, 96x96x3, random
init), every converter variant of the default config, measured in one process, before and
after the lab converted from one exported artifact:

- before: each variant traced the Keras model again (`TFLiteConverter.from_keras_model`
  saves a SavedModel internally on every call), and each full-integer variant ran the
  per-layer debugger itself (`int8_selective` twice);
- after: the SavedModel of the forward pass is exported once (`model_store.export_inference`),
  every variant is converted from it, and the debugger runs once per full-integer setting
  (the layer_errors stage).

Goal: the whole quantize phase at most 3x the time of one float32 conversion.

    python -m tools.bench --only conversion
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import numpy as np

from pipeline.config import parse_config
from pipeline.params import compose
from pipeline.variants import FLOAT_TFLITE

CALIBRATION = 200  # samples, as the default config


def _timed(fn, *args):  # type: ignore[no-untyped-def]
    start = time.perf_counter()
    fn(*args)
    return time.perf_counter() - start


def _quantize_phase(source, specs, calibration, selection,  # type: ignore[no-untyped-def]
                    debugger_once: bool) -> dict[str, float]:
    """Seconds per variant converted from `source` (a Keras model or a SavedModel path), the
    per-layer debugger included: once per full-integer setting, or for every full-integer
    variant as the lab used to."""
    from pipeline.produce import convert, layer_errors

    seconds: dict[str, float] = {}
    settings_done: set[str] = set()
    for name, spec in specs.items():
        seconds[name] = 0.0
        key = layer_errors.setting_key(spec)
        if spec.full_integer and not (debugger_once and key in settings_done):
            seconds[name] += _timed(layer_errors.layer_errors, source, spec, calibration, selection)
            settings_done.add(key)
        if spec.selective:
            seconds[name] += _timed(layer_errors.convert_selective, source, spec, calibration,
                                    ["no_such_layer"])
        else:
            seconds[name] += _timed(convert.convert, source, spec,
                                    calibration if spec.representative_data else None)
    return seconds


def main() -> dict[str, float]:
    from pipeline.produce import model_store
    from pipeline.tfcompat import import_tf

    _, keras = import_tf(seed=0)
    # The TFLite converter's variants of the float model; the LiteRT Quantizer's (and the
    # search's) start from the float32 `.tflite`, without TensorFlow.
    specs = {n: s for n, s in parse_config(compose()).variants.items()
             if s.source == "float" and s.source_form != FLOAT_TFLITE}
    model = keras.applications.MobileNetV2(input_shape=(96, 96, 3), alpha=0.35,
                                           weights=None, classes=10)
    rng = np.random.default_rng(0)
    calibration = rng.random((CALIBRATION, 96, 96, 3), np.float32)
    selection = rng.random((CALIBRATION, 96, 96, 3), np.float32)
    print(f"before: {len(specs)} converter variants ({', '.join(specs)}) from the Keras "
          "model ...", flush=True)
    before = _quantize_phase(model, specs, calibration, selection, debugger_once=False)
    with tempfile.TemporaryDirectory() as tmp:
        print("after: one SavedModel, every variant from it ...", flush=True)
        saved = Path(tmp) / "saved_model"
        after = {"export SavedModel (once)": _timed(model_store.export_inference, model,
                                                    saved)}
        after.update(_quantize_phase(saved, specs, calibration, selection,
                                     debugger_once=True))
    float32 = before["float32"]
    print("conversion of MobileNetV2 (alpha 0.35, 96x96), every converter variant, one "
          "process (seconds)")
    print(f"   {'variant':28s} {'before':>8s} {'after':>8s}")
    for name in [*specs, "export SavedModel (once)"]:
        b = f"{before[name]:8.1f}" if name in before else " " * 8
        print(f"   {name:28s} {b} {after[name]:8.1f}")
    total_before, total_after = sum(before.values()), sum(after.values())
    print(f"   {'whole quantize phase':28s} {total_before:8.1f} {total_after:8.1f}")
    print(f"   quantize phase / one float32 conversion (from the Keras model, {float32:.1f} s): "
          f"before {total_before / float32:.1f}x, after {total_after / float32:.1f}x "
          "(goal <= 3x)")
    return {"before": total_before, "after": total_after, "float32": float32}


if __name__ == "__main__":
    main()
