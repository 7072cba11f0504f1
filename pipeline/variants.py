"""Quantization variants as data: one typed `VariantSpec` per variant, declared in
`conf/quantization/*.yaml` and validated here. TensorFlow is not imported here: the converter
set-up lives in `pipeline.convert`.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping
from typing import Any

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
    """How one TFLite variant is converted.

    Attributes:
        name: Variant name, used in file names, DVC stage names, MLflow runs and the report.
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
            rmse/scale (per-layer error, `pipeline.debug`) in float.
        denylist_threshold: selective quantization: keep every layer whose rmse/scale is
            above this in float (a well-quantized layer is near 1/sqrt(12) ~ 0.289).
    """

    name: str
    description: str = ""
    source: str = "float"
    optimizations: tuple[str, ...] = ()
    supported_ops: tuple[str, ...] = ("TFLITE_BUILTINS",)
    supported_types: tuple[str, ...] = ()
    inference_input_type: str = "float32"
    inference_output_type: str = "float32"
    representative_data: bool = False
    per_channel: bool = True
    denylist_top_k: int = 0
    denylist_threshold: float | None = None

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
            f"variant.{f.name}": ",".join(v) if isinstance(v, tuple) else str(v)
            for f in dataclasses.fields(self)
            for v in [getattr(self, f.name)]
        }


def _choices(key: str, values: Any, allowed: tuple[str, ...]) -> tuple[str, ...]:
    if isinstance(values, str) or not isinstance(values, (list, tuple)):
        raise ValueError(f"{key} must be a list, got {values!r}")
    for v in values:
        if v not in allowed:
            raise ValueError(f"{key}: unknown value {v!r}; valid: {', '.join(allowed)}")
    return tuple(values)


def _choice(key: str, value: Any, allowed: tuple[str, ...]) -> str:
    if value not in allowed:
        raise ValueError(f"{key}: unknown value {value!r}; valid: {', '.join(allowed)}")
    return str(value)


def parse_variant(name: str, raw: Mapping[str, Any], where: str = "quantization.variants"
                  ) -> VariantSpec:
    """Validate one variant's config mapping and build its spec.

    Args:
        name: The variant's name (its key in the config).
        raw: Its fields.
        where: Config path used in error messages.

    Returns:
        The validated spec.

    Raises:
        ValueError: naming the key and the valid values when a field is unknown or invalid.
    """
    key = f"{where}.{name}"
    if not _NAME.match(name):
        raise ValueError(f"{key}: variant names must match {_NAME.pattern} (they become "
                         "file, stage and run names)")
    if not isinstance(raw, Mapping):
        raise ValueError(f"{key} must be a mapping of fields, got {raw!r}")
    fields = {f.name for f in dataclasses.fields(VariantSpec)} - {"name"}
    unknown = sorted(set(raw) - fields)
    if unknown:
        raise ValueError(f"{key}: unknown field(s) {', '.join(unknown)}; valid: "
                         f"{', '.join(sorted(fields))}")
    kw: dict[str, Any] = {"name": name, "description": str(raw.get("description", ""))}
    if "source" not in raw:  # dvc.yaml reads it to choose the model file: no default
        raise ValueError(f"{key}.source is required; valid: {', '.join(SOURCES)}")
    kw["source"] = _choice(f"{key}.source", raw["source"], SOURCES)
    kw["optimizations"] = _choices(f"{key}.optimizations", raw.get("optimizations", []),
                                   OPTIMIZATIONS)
    kw["supported_ops"] = _choices(f"{key}.supported_ops",
                                   raw.get("supported_ops", ["TFLITE_BUILTINS"]), OPS_SETS)
    if not kw["supported_ops"]:
        raise ValueError(f"{key}.supported_ops must name at least one of {', '.join(OPS_SETS)}")
    kw["supported_types"] = _choices(f"{key}.supported_types", raw.get("supported_types", []),
                                     SUPPORTED_TYPES)
    for io in ("inference_input_type", "inference_output_type"):
        kw[io] = _choice(f"{key}.{io}", raw.get(io, "float32"), IO_TYPES)
    for flag, default in (("representative_data", False), ("per_channel", True)):
        value = raw.get(flag, default)
        if not isinstance(value, bool):
            raise ValueError(f"{key}.{flag} must be true or false, got {value!r}")
        kw[flag] = value
    top_k = raw.get("denylist_top_k", 0)
    if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 0:
        raise ValueError(f"{key}.denylist_top_k must be a whole number >= 0, got {top_k!r}")
    kw["denylist_top_k"] = top_k
    threshold = raw.get("denylist_threshold")
    if threshold is not None and (isinstance(threshold, bool) or
                                  not isinstance(threshold, (int, float)) or threshold <= 0):
        raise ValueError(f"{key}.denylist_threshold must be a number > 0 or null, "
                         f"got {threshold!r}")
    kw["denylist_threshold"] = None if threshold is None else float(threshold)
    spec = VariantSpec(**kw)
    integer_io = {spec.inference_input_type, spec.inference_output_type} - {"float32"}
    if integer_io and not spec.representative_data and spec.source == "float":
        raise ValueError(f"{key}: integer input/output ({', '.join(sorted(integer_io))}) needs "
                         "representative_data: true")
    if spec.selective and not spec.full_integer:
        raise ValueError(f"{key}: denylist_top_k/denylist_threshold need a full-integer "
                         "variant (source: float, optimizations: [DEFAULT], "
                         "representative_data: true, int8 activations)")
    if spec.selective and (spec.integer_only or integer_io):
        raise ValueError(f"{key}: a selective variant keeps layers in float, so it needs "
                         "float32 input/output and TFLITE_BUILTINS in supported_ops")
    return spec


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
