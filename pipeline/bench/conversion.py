"""Conversion figures on a real architecture: MobileNetV2 (alpha 0.35, 96x96x3, random
init), every converter variant of the default config, measured in one process, before and
after the lab converted from one exported artifact:

- before: each variant traced the Keras model again (`TFLiteConverter.from_keras_model`
  saves a SavedModel internally on every call), and each full-integer variant ran the
  per-layer debugger itself (`int8_selective` twice);
- after: the SavedModel is exported once, every variant is converted from it, and the
  debugger runs once per full-integer setting (the layer_errors stage).

Goal: the whole quantize phase at most 3x the time of one float32 conversion.

    python -m pipeline.bench --only conversion
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import numpy as np

from pipeline.config import compose, parse_config

CALIBRATION = 200  # samples, as the default config


def _timed(fn, *args):  # type: ignore[no-untyped-def]
    start = time.perf_counter()
    fn(*args)
    return time.perf_counter() - start


def main() -> dict[str, float]:
    from pipeline.build import convert, debug
    from pipeline.build.tfcompat import import_tf

    tf, keras = import_tf(seed=0)
    specs = {n: s for n, s in parse_config(compose()).variants.items() if s.source == "float"}
    model = keras.applications.MobileNetV2(input_shape=(96, 96, 3), alpha=0.35,
                                           weights=None, classes=10)
    rng = np.random.default_rng(0)
    calibration = rng.random((CALIBRATION, 96, 96, 3), np.float32)
    selection = rng.random((CALIBRATION, 96, 96, 3), np.float32)
    before: dict[str, float] = {}
    after: dict[str, float] = {}
    for name, spec in specs.items():  # before: from the Keras model, debugger per variant
        seconds = 0.0
        if spec.full_integer:
            seconds += _timed(debug.layer_errors, model, spec, calibration, selection)
        if spec.selective:
            seconds += _timed(debug.convert_selective, model, spec, calibration,
                              ["no_such_layer"])
        else:
            seconds += _timed(convert.convert, model, spec,
                              calibration if spec.representative_data else None)
        before[name] = seconds
    with tempfile.TemporaryDirectory() as tmp:
        saved = Path(tmp) / "saved_model"
        after["export SavedModel (once)"] = _timed(tf.saved_model.save, model, str(saved))
        settings_done: set[str] = set()
        for name, spec in specs.items():
            seconds = 0.0
            key = debug.setting_key(spec)
            if spec.full_integer and key not in settings_done:  # once per setting
                seconds += _timed(debug.layer_errors, saved, spec, calibration, selection)
                settings_done.add(key)
            if spec.selective:
                seconds += _timed(debug.convert_selective, saved, spec, calibration,
                                  ["no_such_layer"])
            else:
                seconds += _timed(convert.convert, saved, spec,
                                  calibration if spec.representative_data else None)
            after[name] = seconds
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
