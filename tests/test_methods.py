"""Quantization methods beyond min/max: cross-layer equalization and bias correction on the
Keras model (on a real MobileNetV2 and the tiny trained model), and the LiteRT Quantizer's
other algorithms (OCTAV, MSE, GPTQ) as variants, run for real."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from pipeline import artifacts, data
from pipeline.produce import adaround, equalize, quantize
from pipeline.produce.producer import Inputs, Source
from pipeline.tfcompat import import_tf
from pipeline.config import Config
from pipeline.measure import evaluate
from pipeline.variants import parse_variant


def _copy(model: Any) -> Any:
    _, keras = import_tf()
    copy = keras.models.clone_model(model)
    copy.set_weights(model.get_weights())
    return copy


@pytest.fixture(scope="module")
def mobilenet() -> Any:
    """Keras' own MobileNetV2 (alpha 0.35, 32x32) with batch-norm statistics that differ per
    channel, as training leaves them (a fresh model's are all 0 and 1, which hides folding)."""
    _, keras = import_tf()
    model = keras.applications.MobileNetV2(input_shape=(32, 32, 3), alpha=0.35, weights=None,
                                           classes=10)
    rng = np.random.default_rng(0)
    for layer in model.layers:
        if type(layer).__name__ == "BatchNormalization":
            shapes = [w.shape for w in layer.get_weights()]
            layer.set_weights([rng.uniform(0.3, 3.0, shapes[0]), rng.normal(0, 0.5, shapes[1]),
                               rng.normal(0, 0.5, shapes[2]), rng.uniform(0.2, 2.0, shapes[3])])
    return model


def _block(model: Any, x: np.ndarray, name: str = "block_2_add") -> np.ndarray:
    _, keras = import_tf()
    return keras.Model(model.inputs, model.get_layer(name).output)(x, training=False).numpy()


def test_equalization_keeps_a_mobilenetv2_block_and_narrows_its_channel_ranges(
        mobilenet: Any) -> None:
    x = np.random.default_rng(1).uniform(0, 1, (4, 32, 32, 3)).astype(np.float32)
    relu = _copy(mobilenet)  # the float function equalization must keep: ReLU6 made ReLU
    for layer in relu.layers:
        if type(layer).__name__ == "ReLU":
            layer.max_value = None
    before = _block(relu, x)
    model = _copy(mobilenet)
    report = equalize.equalize(model)
    after = _block(model, x)
    assert np.abs(before).max() > 0.5  # the block computes something of size
    assert np.abs(after - before).max() < 1e-4
    summary = report.summary()
    assert summary["batch_norms_folded"] >= 20 and summary["pairs_equalized"] >= 10
    assert summary["relu6_replaced"] >= 10
    # What per-tensor scales pay: the spread of channel ranges, narrowed in most layers.
    spread = [(r["spread_before"], r["spread_after"]) for r in report.rows]
    assert len(spread) >= 10
    assert np.median([a for _, a in spread]) < 0.7 * np.median([b for b, _ in spread])
    # Folding alone (no pair crosses a ReLU6) keeps the ReLU6 model itself.
    folded = _copy(mobilenet)
    equalize.equalize(folded, replace_relu6=False)
    assert np.abs(_block(folded, x) - _block(mobilenet, x)).max() < 1e-4


def test_bias_correction_moves_the_mean_back(tiny_models: dict[str, Any],
                                             small_dataset: data.Dataset) -> None:
    """The first conv's output mean under per-tensor int8 weights, with and without the
    correction: the corrected layer's mean shift is a fraction of the plain one's."""
    _, keras = import_tf()
    x = small_dataset.x_train[:64]
    model = _copy(tiny_models["float"])
    conv = next(layer for layer in model.layers if type(layer).__name__ == "Conv2D")
    conv.activation = keras.activations.linear  # the mean before the ReLU

    def mean_out(m: Any) -> np.ndarray:
        layer = m.get_layer(conv.name)
        return keras.Model(m.inputs, layer.output)(x).numpy().mean(axis=(0, 1, 2))

    def with_int8(m: Any) -> Any:
        q = _copy(m)
        layer = q.get_layer(conv.name)
        kernel, *rest = layer.get_weights()
        layer.set_weights([equalize.simulate_int8(layer, kernel, per_channel=False), *rest])
        return q

    reference = mean_out(model)
    plain = np.abs(mean_out(with_int8(model)) - reference).mean()
    corrected = _copy(model)
    report = equalize.correct_biases(corrected, x, per_channel=False)
    assert report.corrected == 4  # two convs, two dense layers
    fixed = np.abs(mean_out(with_int8(corrected)) - reference).mean()
    assert plain > 0 and fixed < 0.25 * plain


def test_equalized_per_tensor_int8_converts_and_says_what_changed(
        tiny_models: dict[str, Any], small_dataset: data.Dataset, tmp_path: Path,
        tiny_cfg: Config) -> None:
    calibration = data.calibration_samples(small_dataset, 32, tiny_cfg.seed)
    fields = {"source": "float", "optimizations": ["DEFAULT"], "representative_data": True,
              "per_channel": False}
    plain = parse_variant("int8_per_tensor", fields)
    cle = parse_variant("int8_per_tensor_cle", {**fields, "equalize": True,
                                                "bias_correction": True})
    assert cle.adjusts_weights and cle.calibrated and cle.full_integer
    assert not plain.adjusts_weights
    original = [w.copy() for w in tiny_models["float"].get_weights()]
    source = Source.given(keras=tiny_models["float"])
    records = {s.name: quantize.variant(s, Inputs(source, calibration=calibration),
                                        tmp_path / s.name) for s in (plain, cle)}
    assert all(r["status"] == "ok" for r in records.values()), records
    # The caller's model is untouched: the variant works on a copy.
    assert all(np.array_equal(a, b) for a, b in
               zip(original, tiny_models["float"].get_weights()))
    prep = records["int8_per_tensor_cle"]["preparation"]
    assert prep["pairs_equalized"] == 3 and prep["biases_corrected"] == 4
    with (tmp_path / "int8_per_tensor_cle" / artifacts.EQUALIZATION).open() as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 4 and all(float(r["spread_after"]) <= float(r["spread_before"]) * 1.01
                                  for r in rows[:1])
    assert (tmp_path / "int8_per_tensor_cle" / artifacts.LAYER_ERRORS).is_file()
    x, y = small_dataset.x_test, small_dataset.y_test
    float_acc = tiny_models["accuracy"]
    got = evaluate.evaluate(artifacts.tflite_path(tmp_path / "int8_per_tensor_cle",
                                                  "int8_per_tensor_cle"), x, y)["accuracy"]
    assert got > float_acc - 0.15


@pytest.mark.parametrize("algorithm,recipe,key", [
    ("octav", "weight_only_wi4_afp32", "OCTAV"),
    ("mse", "static_wi8_ai8", "MSE"),
    ("gptq", "weight_only_wi4_afp32", "GPTQ"),
])
def test_a_litert_quantizer_algorithm_is_a_variant_field(
        algorithm: str, recipe: str, key: str, variant_dirs: Path, small_dataset: data.Dataset,
        tmp_path: Path, tiny_cfg: Config) -> None:
    spec = parse_variant(f"x_{algorithm}", {"source": "float", "backend": "litert_quantizer",
                                            "recipe": recipe, "algorithm": algorithm})
    assert spec.calibrated == (recipe.startswith("static") or algorithm == "gptq")
    float_tflite = artifacts.tflite_path(variant_dirs / "float32", "float32")
    calibration = data.calibration_samples(small_dataset, 16, tiny_cfg.seed)
    record = quantize.variant(spec, Inputs(Source.given(float_tflite=float_tflite),
                                           calibration=calibration if spec.calibrated else None),
                              tmp_path / spec.name)
    assert record["status"] == "ok", record["error"]
    applied = json.loads((tmp_path / spec.name / artifacts.RECIPE).read_text())
    assert {e["algorithm_key"] for e in applied} >= {key}
    x, y = small_dataset.x_test, small_dataset.y_test
    plain = evaluate.evaluate(float_tflite, x, y)["accuracy"]
    got = evaluate.evaluate(artifacts.tflite_path(tmp_path / spec.name, spec.name), x, y)
    assert got["accuracy"] > plain - 0.2


@pytest.mark.parametrize("fields,message", [
    ({"backend": "litert_quantizer", "recipe": "static_wi8_ai8", "equalize": True},
     "belong to the converter backend"),
    ({"optimizations": ["DEFAULT"], "algorithm": "gptq"}, "belong to the litert_quantizer"),
    ({"backend": "litert_quantizer", "recipe": "static_wi8_ai8", "algorithm": "adaround"},
     "octav"),
    ({"equalize": True}, "optimizations: [DEFAULT]"),
    ({"backend": "litert_quantizer", "recipe": "dynamic_wi4b32_afp32", "rounding": "adaround"},
     "needs one of the recipes"),
    ({"optimizations": ["DEFAULT"], "supported_types": ["float16"], "rounding": "adaround"},
     "needs int8 weights"),
    ({"optimizations": ["DEFAULT"], "rounding": "stochastic"}, "adaround"),
    ({"source": "qat", "optimizations": ["DEFAULT"], "bias_correction": True},
     "source: float"),
])
def test_methods_in_the_wrong_place_are_refused(fields: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message.replace("[", r"\[").replace("]", r"\]")):
        parse_variant("v", {"source": "float", **fields})



def test_adaround_lands_on_the_grid_and_reconstructs_better_than_nearest() -> None:
    _, keras = import_tf()
    rng = np.random.default_rng(0)
    layer = keras.layers.Dense(16)
    layer.build((None, 32))
    kernel = rng.normal(0, 1, (32, 16)).astype(np.float32)
    layer.set_weights([kernel, np.zeros(16, np.float32)])
    inputs = np.maximum(rng.normal(0.5, 1, (128, 32)), 0).astype(np.float32)  # post-ReLU
    errors = adaround.adaround_layer(layer, inputs, bits=4, per_channel=True, iterations=300)
    rounded = layer.get_weights()[0]
    scale = adaround.grid_scale(layer, kernel, 4, True)
    steps = rounded / scale
    assert np.allclose(steps, np.round(steps), atol=1e-4)  # on the int4 grid ...
    assert np.abs(steps).max() <= 7 + 1e-4
    assert np.allclose(np.abs(rounded).max(axis=0), np.abs(kernel).max(axis=0))  # same scale
    assert np.all(np.abs(rounded - kernel) <= scale + 1e-6)  # ... one step of W at most
    assert errors["adaround"] < 0.9 * errors["nearest"]


def test_int4_adaround_is_a_variant(tiny_models: dict[str, Any], small_dataset: data.Dataset,
                                    variant_dirs: Path, tmp_path: Path,
                                    tiny_cfg: Config) -> None:
    spec = parse_variant("int4_adaround", {"source": "float", "backend": "litert_quantizer",
                                           "recipe": "weight_only_wi4_afp32",
                                           "rounding": "adaround"})
    assert spec.adjusts_weights and spec.calibrated
    calibration = data.calibration_samples(small_dataset, 64, tiny_cfg.seed)
    record = quantize.variant(spec, Inputs(Source.given(keras=tiny_models["float"]),
                                           calibration=calibration), tmp_path / spec.name)
    assert record["status"] == "ok", record["error"]
    prep = record["preparation"]
    assert prep["adaround_layers"] == 4 and prep["adaround_error_ratio_median"] <= 1.0
    path = artifacts.tflite_path(tmp_path / spec.name, spec.name)
    plain = artifacts.tflite_path(variant_dirs / "int4_weight_only", "int4_weight_only")
    assert path.read_bytes() != plain.read_bytes()
    assert abs(path.stat().st_size - plain.stat().st_size) < 0.05 * plain.stat().st_size
    with (tmp_path / spec.name / artifacts.PRECISION).open() as f:
        assert all(r["got"].startswith("int4") for r in csv.DictReader(f))
    x, y = small_dataset.x_test, small_dataset.y_test
    got = evaluate.evaluate(path, x, y)["accuracy"]
    assert got > evaluate.evaluate(plain, x, y)["accuracy"] - 0.1


def test_adaround_on_a_converter_variant_keeps_the_converters_int8_grid(
        tiny_models: dict[str, Any], small_dataset: data.Dataset, tmp_path: Path,
        tiny_cfg: Config) -> None:
    """The converter re-quantizes the rounded kernel with its own per-channel scale (max /
    127): the rounded values must come out as they went in, each within one step of the
    float weight, and not all equal to rounding to nearest."""
    from pipeline.measure import litert

    spec = parse_variant("int8_adaround", {"source": "float", "optimizations": ["DEFAULT"],
                                           "representative_data": True,
                                           "rounding": "adaround"})
    calibration = data.calibration_samples(small_dataset, 64, tiny_cfg.seed)
    record = quantize.variant(spec, Inputs(Source.given(keras=tiny_models["float"]),
                                           calibration=calibration), tmp_path / spec.name)
    assert record["status"] == "ok", record["error"]
    assert record["preparation"]["adaround_layers"] == 4
    interpreter = litert.load_interpreter(artifacts.tflite_path(tmp_path / spec.name,
                                                                spec.name))
    stored = {tuple(d["shape"]): d for d in interpreter.get_tensor_details()
              if d["dtype"] == np.int8 and len(d["shape"]) in (2, 4)}
    flipped = 0
    for layer in tiny_models["float"].layers:
        if type(layer).__name__ not in ("Conv2D", "Dense"):
            continue
        kernel = layer.get_weights()[0]  # conv (kh, kw, in, out), dense (in, out)
        kernel = np.moveaxis(kernel, -1, 0)  # as TFLite stores it: out first
        tensor = stored[kernel.shape]
        steps = interpreter.get_tensor(tensor["index"]).astype(np.float32)
        scale = tensor["quantization_parameters"]["scales"].reshape(-1, *[1] * (kernel.ndim - 1))
        float_steps = kernel / scale
        assert np.all(np.abs(steps - float_steps) < 1 + 1e-3), layer.name
        flipped += int(np.sum(steps != np.round(float_steps)))
    assert flipped > 0  # some weights were rounded the other way than to nearest
