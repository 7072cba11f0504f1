"""Producing a variant: inspection of what the model really is, the integer-only promise,
per-layer error, selective quantization, recorded failures, and QAT layer selection."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from pipeline import artifacts, data
from pipeline.produce import layer_errors, qat, quantize
from pipeline.produce.producer import Inputs, Source
from pipeline.measure import inspection
from pipeline.config import Config
from pipeline.variants import parse_variant


def record(variant_dirs: Path, name: str) -> dict[str, Any]:
    return artifacts.read_record(variant_dirs / name)


def test_int4_weights_are_seen_as_int4_and_their_packed_bytes_fit_the_file(
        variant_dirs: Path, models: dict[str, Path]) -> None:
    """The interpreter reports int4 tensors as int8 (a 24,816-byte int4 model was recorded
    with 38,160 bytes of int8 weights); the flatbuffer says INT4, two values a byte."""
    for name in ("int4_weight_only", "int4_dynamic_blockwise", "aeq_mixed"):
        insp = record(variant_dirs, name)["inspection"]
        assert insp["weight_bytes_by_dtype"].get("int4", 0) > 0, name
        assert insp["weight_bytes"] <= models[name].stat().st_size, name
        assert insp["weight_bytes"] == sum(insp["weight_bytes_by_dtype"].values())
    int8 = record(variant_dirs, "aeq_int8_static")["inspection"]["weight_bytes_by_dtype"]
    int4 = record(variant_dirs, "int4_weight_only")["inspection"]["weight_bytes_by_dtype"]
    # The same weights at half the bits: about half the bytes (per-channel scales aside).
    assert int4["int4"] == pytest.approx(int8["int8"] / 2, rel=0.05)


def test_each_variant_is_inspected(variant_dirs: Path, tiny_cfg: Config) -> None:
    insp = {v: record(variant_dirs, v)["inspection"] for v in tiny_cfg.variants}
    # float32: float weights and float compute everywhere.
    assert set(insp["float32"]["weight_bytes_by_dtype"]) <= {"float32", "int32"}
    assert insp["float32"]["float_compute_ops"] > 0
    # float16 stores float16 weights, dequantized at load time.
    assert insp["float16"]["weight_bytes_by_dtype"]["float16"] > 0
    assert "float32" not in insp["float16"]["weight_bytes_by_dtype"]
    assert insp["float16"]["ops_by_type"]["DEQUANTIZE"] > 0
    # dynamic range: int8 weights, but the compute still runs in float.
    assert insp["dynamic_range"]["weight_bytes_by_dtype"]["int8"] > 0
    assert insp["dynamic_range"]["float_compute_ops"] > 0
    # full-integer: int8 weights, no float compute; int8_full has int8 I/O, no QUANTIZE op.
    for name in ("int8", "int8_full", "uint8_full", "qat_int8"):
        assert insp[name]["float_compute_ops"] == 0, name
        assert "float32" not in insp[name]["weight_bytes_by_dtype"], name
    assert (insp["int8_full"]["input_dtype"], insp["int8_full"]["output_dtype"]) == (
        "int8", "int8")
    assert "QUANTIZE" not in insp["int8_full"]["ops_by_type"]
    assert insp["int8"]["ops_by_type"]["QUANTIZE"] == 1  # float input quantized once
    assert insp["uint8_full"]["input_dtype"] == "uint8"
    assert insp["int16x8"]["tensors_by_dtype"]["int16"] > 0
    # Weight bytes add up to what the dtype breakdown says.
    for name, i in insp.items():
        assert i["weight_bytes"] == sum(i["weight_bytes_by_dtype"].values()), name


def test_integer_only_promise_is_checked(variant_dirs: Path) -> None:
    float_model = record(variant_dirs, "float32")["inspection"]
    inspection.check_promise("float32", False, float_model)  # no promise made: fine
    with pytest.raises(ValueError, match=r"'int8_full' promises integer-only execution but "
                                         r"\d+ compute op\(s\) run in float: CONV_2D x"):
        inspection.check_promise("int8_full", True, float_model)


def test_per_layer_error_is_written_worst_first(variant_dirs: Path, tiny_cfg: Config) -> None:
    for name, spec in tiny_cfg.variants.items():
        path = variant_dirs / name / artifacts.LAYER_ERRORS
        assert path.exists() == spec.full_integer, name
    with (variant_dirs / "int8" / artifacts.LAYER_ERRORS).open() as f:
        rows = list(csv.DictReader(f))
    assert tuple(rows[0]) == layer_errors.COLUMNS
    assert {r["op_name"] for r in rows} >= {"CONV_2D", "FULLY_CONNECTED"}
    ratios = [float(r["rmse_over_scale"]) for r in rows]
    assert ratios == sorted(ratios, reverse=True) and all(r >= 0 for r in ratios)
    for r in rows:
        expected = float(r["mean_squared_error"]) ** 0.5 / float(r["scale"])
        assert float(r["rmse_over_scale"]) == pytest.approx(expected)
    worst = record(variant_dirs, "int8")["worst_layers"]
    assert [w["tensor_name"] for w in worst] == [r["tensor_name"] for r in rows[:3]]


def test_selective_variant_keeps_the_worst_layer_in_float(variant_dirs: Path) -> None:
    selective, plain = record(variant_dirs, "int8_selective"), record(variant_dirs, "int8")
    assert selective["denylisted_nodes"] == [plain["worst_layers"][0]["tensor_name"]]
    s, p = selective["inspection"], plain["inspection"]
    assert s["weight_bytes_by_dtype"].get("float32", 0) > 0  # the kept layer's float weights
    assert s["weight_bytes_by_dtype"]["int8"] < p["weight_bytes_by_dtype"]["int8"]
    assert s["float_compute_ops"] >= 1 and p["float_compute_ops"] == 0


def test_choose_denylist_by_count_and_threshold() -> None:
    rows = [{"tensor_name": n, "rmse_over_scale": r} for n, r in
            (("a", 2.0), ("b", 0.9), ("c", 0.5), ("d", 0.3))]
    assert layer_errors.choose_denylist(rows, top_k=1, threshold=None) == ["a"]
    assert layer_errors.choose_denylist(rows, top_k=0, threshold=0.6) == ["a", "b"]
    assert layer_errors.choose_denylist(rows, top_k=1, threshold=0.4) == ["a", "b", "c"]
    assert layer_errors.choose_denylist(rows, top_k=0, threshold=None) == []


def test_a_failing_conversion_is_recorded_not_raised(tiny_models: dict, tmp_path: Path,
                                                     small_dataset: data.Dataset) -> None:
    # A real converter refusal: integer-only ops cannot give int16 input/output.
    spec = parse_variant("broken", {
        "source": "float", "optimizations": ["DEFAULT"], "representative_data": True,
        "supported_ops": ["TFLITE_BUILTINS_INT8"], "inference_input_type": "int16",
        "inference_output_type": "int16"})
    calibration = data.calibration_samples(small_dataset, 8, seed=0)
    result = quantize.variant(spec, Inputs(Source.given(keras=tiny_models["float"]),
                                           calibration=calibration), tmp_path / "b")
    assert result["status"] == "failed"
    assert "inference_input_type" in result["error"]
    assert artifacts.read_record(tmp_path / "b") == result
    assert not artifacts.tflite_path(tmp_path / "b", "broken").exists()


def test_a_model_litert_cannot_run_is_a_failed_variant(tmp_path: Path) -> None:
    """A 16x8 LayerNormalization that LiteRT aborts the process on, given zeros (an int16
    RSQRT of zero): the variant fails when it is made, with the reason, instead of killing
    the stage (the check runs in a child process); evaluate and benchmark then skip it. On
    ConvNeXt the same check catches `SquaredDifference only supports FLOAT32 and INT32`."""
    from pipeline.tfcompat import import_tf

    _, keras = import_tf(seed=0)
    inputs = keras.Input(shape=(8, 8, 1))
    x = keras.layers.Conv2D(4, 3)(inputs)
    x = keras.layers.LayerNormalization()(x)
    model = keras.Model(inputs, keras.layers.Dense(3)(keras.layers.Flatten()(x)))
    calibration = np.random.default_rng(0).random((8, 8, 8, 1), np.float32)
    zeros = np.zeros((1, 8, 8, 1), np.float32)
    int16x8 = parse_variant("int16x8", {
        "source": "float", "optimizations": ["DEFAULT"], "representative_data": True,
        "supported_ops": ["EXPERIMENTAL_TFLITE_BUILTINS_ACTIVATIONS_INT16_WEIGHTS_INT8"]})
    result = quantize.variant(int16x8, Inputs(Source.given(keras=model),
                                              calibration=calibration, comparison=zeros),
                              tmp_path / "v")
    assert result["status"] == "failed", result
    assert result["error"].startswith("CannotRun: LiteRT aborted the process (exit -6) "
                                      "running it on the xnnpack kernels"), result["error"]
    assert not artifacts.tflite_path(tmp_path / "v", "int16x8").exists()
    float32 = parse_variant("float32", {"source": "float"})
    assert quantize.variant(float32, Inputs(Source.given(keras=model), comparison=zeros),
                            tmp_path / "f")["status"] == "ok"


def test_qat_can_annotate_chosen_layers(tiny_models: dict, small_dataset: data.Dataset) -> None:
    float_model = tiny_models["float"]
    whole, whole_cover = qat.annotate(float_model, [])
    dense_only, cover = qat.annotate(float_model, ["Dense"])
    assert whole_cover["mode"] == "whole" and whole_cover["coverage"] == 1.0
    assert cover["mode"] == "layers" and cover["skipped"]["Conv2D"]["layers"] == 2
    assert 0 < cover["coverage"] < 1  # the convs' weights are left out
    wrapped = lambda m: [l for l in m.layers if type(l).__name__ == "QuantizeWrapperV2"]
    conv = lambda m: [l for l in m.layers if type(l).__name__ == "Conv2D"]
    assert conv(whole) == [] and len(conv(dense_only)) == 2  # convs left unannotated
    assert 0 < len(wrapped(dense_only)) < len(wrapped(whole))
    x = small_dataset.x_test[:16]
    # Annotation keeps the trained weights: outputs stay close to the float model's.
    diff = np.abs(dense_only.predict(x, verbose=0) - float_model.predict(x, verbose=0)).max()
    assert diff < 0.1
    with pytest.raises(ValueError, match="qat.layers: Dense2 match no layer"):
        qat.annotate(float_model, ["Dense2"])


def op_layer_model() -> object:
    """A Functional model with an op layer (`x + 3.0`, a TFOpLambda, as MobileNetV3's
    hard-swish is built) and a Rescaling layer tfmot has no config for."""
    from pipeline.tfcompat import import_tf

    _, keras = import_tf(seed=0)
    inputs = keras.Input((8, 8, 1))
    x = keras.layers.Rescaling(2.0)(inputs)
    x = keras.layers.Conv2D(4, 3, activation="relu")(x)
    x = keras.layers.ReLU()(x + 3.0)
    x = keras.layers.Flatten()(x)
    return keras.Model(inputs, keras.layers.Dense(10, activation="softmax")(x))


def test_qat_falls_back_to_the_layers_tfmot_supports(small_dataset: data.Dataset,
                                                     tiny_cfg: Config) -> None:
    model = op_layer_model()
    qat_model, history, accuracy, cover = qat.fine_tune(model, small_dataset, tiny_cfg.qat,
                                                        tiny_cfg.seed)
    assert cover["mode"] == "partial" and "whole_model_error" in cover
    assert set(cover["skipped"]) == {"Rescaling", "TFOpLambda"}
    assert "op layer" in cover["skipped"]["TFOpLambda"]["reason"]
    assert cover["annotated_layers"] == cover["layers"] - 2 and cover["coverage"] == 1.0
    wrapped = [l for l in qat_model.layers if type(l).__name__ == "QuantizeWrapperV2"]
    assert len(wrapped) >= 2 and 0 <= accuracy <= 1 and len(history["loss"]) == 1


def test_whatever_tfmot_raises_is_a_reason_not_a_crash(monkeypatch: pytest.MonkeyPatch,
                                                      tiny_models: dict) -> None:
    import tensorflow_model_optimization as tfmot

    def broken(*args: object, **kwargs: object) -> None:
        raise AttributeError("'list' object has no attribute 'dtype'")  # as on MobileNetV3

    monkeypatch.setattr(tfmot.quantization.keras, "quantize_model", broken)
    monkeypatch.setattr(tfmot.quantization.keras, "quantize_apply", broken)
    with pytest.raises(qat.QatUnsupported, match="cannot annotate the whole model: "
                                                 "AttributeError: 'list' object"):
        qat.annotate(tiny_models["float"], [])
