"""The converter kind (`backend: converter`, the default): `tf.lite.TFLiteConverter`, set up
by its fields (`pipeline.produce.convert`), optionally on a float Keras model whose weights
are adjusted first (equalization, bias correction: `pipeline.produce.equalize`; AdaRound:
`pipeline.produce.adaround`). Made by `pipeline.produce.by_converter`."""

from __future__ import annotations

import dataclasses
from typing import ClassVar

from pipeline.schema import all_of, one_of, positive
from pipeline.variants.base import KERAS, SAVED_MODEL, VariantSpec

# Names of `tf.lite.OpsSet` members a variant may ask for.
OPS_SETS = (
    "TFLITE_BUILTINS",
    "TFLITE_BUILTINS_INT8",
    "EXPERIMENTAL_TFLITE_BUILTINS_ACTIVATIONS_INT16_WEIGHTS_INT8",
)
# Values of `target_spec.supported_types` (weight storage types).
SUPPORTED_TYPES = ("float16", "int8")
# Interpreter-facing input/output dtypes.
IO_TYPES = ("float32", "int8", "uint8", "int16")
OPTIMIZATIONS = ("DEFAULT",)
ROUNDINGS = ("nearest", "adaround")  # converter and LiteRT Quantizer variants


@dataclasses.dataclass
class ConverterVariant(VariantSpec):
    """A variant the TFLite converter makes.

    Attributes:
        optimizations: `["DEFAULT"]` to quantize, `[]` for a plain conversion.
        supported_ops: `tf.lite.OpsSet` member names; `TFLITE_BUILTINS_INT8` alone means
            integer-only (no float fallback).
        supported_types: weight types, e.g. `["float16"]`.
        inference_input_type: dtype the interpreter's input tensor takes.
        inference_output_type: dtype of the interpreter's output tensor.
        representative_data: whether calibration samples are fed to the converter.
        per_channel: per-channel weight quantization (TFLite's default) or per-tensor.
            Per-tensor applies to conv weights; TF 2.21's quantizer keeps dense weights
            per-channel even when asked not to.
        denylist_top_k: selective quantization: keep this many layers with the highest
            rmse/scale (per-layer error, `pipeline.produce.layer_errors`) in float.
        denylist_threshold: selective quantization: keep every layer whose rmse/scale is
            above this in float (a well-quantized layer is near 1/sqrt(12) ~ 0.289).
        equalize: before converting, fold batch norms and equalize the channel ranges of
            consecutive layers (cross-layer equalization, `pipeline.produce.equalize`;
            ReLU6 between equalized layers become ReLU).
        bias_correction: before converting, move each layer's bias back by the mean shift
            its int8 weights cause, measured on the calibration samples.
        rounding: `nearest` (the default) or `adaround`: each weight rounded up or down to
            reconstruct its layer's output on the calibration samples
            (`pipeline.produce.adaround`), stored on the grid the converter keeps.
    """

    BACKEND: ClassVar[str] = "converter"

    backend: str = "converter"
    optimizations: list[str] = dataclasses.field(default_factory=list)
    supported_ops: list[str] = dataclasses.field(default_factory=lambda: ["TFLITE_BUILTINS"])
    supported_types: list[str] = dataclasses.field(default_factory=list)
    inference_input_type: str = "float32"
    inference_output_type: str = "float32"
    representative_data: bool = False
    per_channel: bool = True
    denylist_top_k: int = 0
    denylist_threshold: float | None = None
    equalize: bool = False
    bias_correction: bool = False
    rounding: str = "nearest"

    def __post_init__(self) -> None:
        super().__post_init__()
        key = self.key
        one_of(f"{key}.rounding", self.rounding, ROUNDINGS)
        if (self.equalize or self.bias_correction) and (
                self.source != "float" or "DEFAULT" not in self.optimizations):
            raise ValueError(f"{key}: equalize and bias_correction adjust the float Keras "
                             "model's weights for the converter (backend: converter, source: "
                             "float, optimizations: [DEFAULT])")
        if self.rounding == "adaround":
            self.require_float_source("rounding: adaround")
            if "DEFAULT" not in self.optimizations or self.supported_types == ["float16"]:
                raise ValueError(f"{key}: rounding: adaround needs int8 weights "
                                 "(optimizations: [DEFAULT], not float16)")
        all_of(f"{key}.optimizations", self.optimizations, OPTIMIZATIONS)
        all_of(f"{key}.supported_ops", self.supported_ops, OPS_SETS)
        if not self.supported_ops:
            raise ValueError(f"{key}.supported_ops must name at least one of "
                             f"{', '.join(OPS_SETS)}")
        all_of(f"{key}.supported_types", self.supported_types, SUPPORTED_TYPES)
        one_of(f"{key}.inference_input_type", self.inference_input_type, IO_TYPES)
        one_of(f"{key}.inference_output_type", self.inference_output_type, IO_TYPES)
        positive(f"{key}.denylist_top_k", self.denylist_top_k, allow_zero=True)
        if self.denylist_threshold is not None:
            positive(f"{key}.denylist_threshold", self.denylist_threshold)
        integer_io = {self.inference_input_type, self.inference_output_type} - {"float32"}
        if integer_io and not self.representative_data and self.source == "float":
            raise ValueError(f"{key}: integer input/output ({', '.join(sorted(integer_io))}) "
                             "needs representative_data: true")
        if self.selective and not self.full_integer:
            raise ValueError(f"{key}: denylist_top_k/denylist_threshold need a full-integer "
                             "variant (source: float, optimizations: [DEFAULT], "
                             "representative_data: true, int8 activations)")
        if self.selective and (self.integer_only or integer_io):
            raise ValueError(f"{key}: a selective variant keeps layers in float, so it needs "
                             "float32 input/output and TFLITE_BUILTINS in supported_ops")

    @property
    def source_form(self) -> str:
        return KERAS if self.adjusts_weights else SAVED_MODEL

    @property
    def plain(self) -> bool:
        return (self.source == "float" and not self.optimizations and not self.supported_types
                and self.supported_ops == ["TFLITE_BUILTINS"] and not self.adjusts_weights
                and self.inference_input_type == self.inference_output_type == "float32")

    @property
    def selective(self) -> bool:
        return self.denylist_top_k > 0 or self.denylist_threshold is not None

    @property
    def adjusts_weights(self) -> bool:
        return self.equalize or self.bias_correction or self.rounding == "adaround"

    @property
    def calibrated(self) -> bool:
        return self.representative_data or self.bias_correction or self.rounding == "adaround"

    @property
    def full_integer(self) -> bool:
        return (self.source == "float" and self.representative_data
                and "DEFAULT" in self.optimizations and OPS_SETS[2] not in self.supported_ops)

    @property
    def integer_only(self) -> bool:
        return "TFLITE_BUILTINS" not in self.supported_ops
