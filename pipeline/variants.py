"""Quantization variants as data: one typed `VariantSpec` per variant, declared in
`conf/quantization/*.yaml` and validated here. TensorFlow is not imported here: the converter
set-up lives in `pipeline.build.convert`.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping
from typing import Any

from pipeline.schema import all_of, one_of, positive, typed

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
SOURCES = ("float", "qat")  # which Keras model is converted
_NAME = re.compile(r"^[a-z][a-z0-9_]*$")


@dataclasses.dataclass
class VariantSpec:
    """How one TFLite variant is converted; checks its own fields when built.

    Attributes:
        name: Variant name, used in file names, DVC stage names, MLflow runs and the report
            (its key in `quantization.variants`).
        description: One line for the report.
        source: `float` converts the trained float model, `qat` the QAT fine-tuned one.
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
            rmse/scale (per-layer error, `pipeline.build.debug`) in float.
        denylist_threshold: selective quantization: keep every layer whose rmse/scale is
            above this in float (a well-quantized layer is near 1/sqrt(12) ~ 0.289).
    """

    name: str = "?"
    description: str = ""
    source: str = "???"  # required: dvc.yaml picks the Keras model to convert by it
    optimizations: list[str] = dataclasses.field(default_factory=list)
    supported_ops: list[str] = dataclasses.field(default_factory=lambda: ["TFLITE_BUILTINS"])
    supported_types: list[str] = dataclasses.field(default_factory=list)
    inference_input_type: str = "float32"
    inference_output_type: str = "float32"
    representative_data: bool = False
    per_channel: bool = True
    denylist_top_k: int = 0
    denylist_threshold: float | None = None

    def __post_init__(self) -> None:
        key = f"quantization.variants.{self.name}"
        if not _NAME.match(self.name):
            raise ValueError(f"{key}: variant names must match {_NAME.pattern} (they become "
                             "file, stage and run names)")
        one_of(f"{key}.source", self.source, SOURCES)
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
    def selective(self) -> bool:
        """True if some layers are chosen by their per-layer error to stay in float."""
        return self.denylist_top_k > 0 or self.denylist_threshold is not None

    @property
    def full_integer(self) -> bool:
        """True for int8-activation, calibrated conversions of the float model: the ones
        TFLite's QuantizationDebugger can measure per layer."""
        return (self.source == "float" and self.representative_data and "DEFAULT" in
                self.optimizations and OPS_SETS[2] not in self.supported_ops)

    @property
    def integer_only(self) -> bool:
        """True if no float fallback is allowed (only integer op sets)."""
        return "TFLITE_BUILTINS" not in self.supported_ops

    def as_params(self) -> dict[str, str]:
        """Flat string params, the same keys for every variant (for MLflow)."""
        return {
            f"variant.{f.name}": ",".join(v) if isinstance(v, list) else str(v)
            for f in dataclasses.fields(self)
            for v in [getattr(self, f.name)]
        }


def parse_variant(name: str, raw: Mapping[str, Any], where: str = "quantization.variants"
                  ) -> VariantSpec:
    """Validate one variant's config mapping and build its spec.

    Args:
        name: The variant's name (its key in the config).
        raw: Its fields.
        where: Config path used in error messages.

    Raises:
        ValueError: naming the key and the valid values when a field is unknown or invalid.
    """
    key = f"{where}.{name}"
    if not isinstance(raw, Mapping):
        raise ValueError(f"{key} must be a mapping of fields, got {raw!r}")
    if "name" in raw:
        raise ValueError(f"{key}: a variant's name is its key; remove the field `name`")
    if "source" not in raw:
        raise ValueError(f"{key}.source is required; valid: {', '.join(SOURCES)}")
    return typed(VariantSpec, {**raw, "name": name}, key)


def parse_variants(raw: Mapping[str, Any], reference: str,
                   where: str = "quantization.variants") -> dict[str, VariantSpec]:
    """Validate all variants; the reference variant must be among them.

    Raises:
        ValueError: on an invalid variant, an empty set, or a missing reference.
    """
    if not isinstance(raw, Mapping) or not raw:
        raise ValueError(f"{where} must be a non-empty mapping of variant name to fields")
    specs = {name: parse_variant(name, fields, where) for name, fields in raw.items()}
    if reference not in specs:
        raise ValueError(f"report.reference: {reference!r} is not a configured variant; "
                         f"valid: {', '.join(specs)}")
    return specs


def select(specs: Mapping[str, VariantSpec], name: str) -> VariantSpec:
    """Return the spec named `name`.

    Raises:
        ValueError: listing the valid names if `name` is unknown.
    """
    if name not in specs:
        raise ValueError(f"unknown variant {name!r}; valid: {', '.join(specs)}")
    return specs[name]
