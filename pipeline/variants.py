"""Quantization variants as data: one typed `VariantSpec` per variant, declared in
`conf/quantization/*.yaml` and validated here. TensorFlow is not imported here: the converter
set-up lives in `pipeline.build.convert`, the LiteRT Quantizer's in
`pipeline.build.litert_quantizer`.

Two backends make variants:
- `converter` (the default): `tf.lite.TFLiteConverter`, set up by the converter fields
  (`optimizations`, `supported_ops`, ...);
- `litert_quantizer`: Google's LiteRT Quantizer (`ai-edge-quantizer`), which quantizes the
  float model's float32 `.tflite` without TensorFlow, by a named `recipe` and per-layer
  `rules` (int4, blockwise scales, weight-only, a different scheme per layer).
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
BACKENDS = ("converter", "litert_quantizer", "search")
# LiteRT Quantizer: its named recipes (`ai_edge_quantizer.recipe`), what a rule does to the
# layers it matches, and how it stores their weights.
RECIPES = ("dynamic_wi8_afp32", "weight_only_wi8_afp32", "weight_only_wi4_afp32",
           "dynamic_wi4_afp32", "dynamic_wi4b32_afp32", "static_wi8_ai8", "static_wi8_ai16")
RULE_MODES = ("float", "weight_only", "dynamic", "static")
GRANULARITIES = ("channelwise", "tensorwise", "blockwise_32", "blockwise_64",
                 "blockwise_128", "blockwise_256")
SELECTORS = ("first", "last")  # the first or last layer with weights, whatever its name
IO_MODES = ("float", "integer")  # a static recipe's model I/O: float (the default) or as it is
CONVERTER_FIELDS = ("optimizations", "supported_ops", "supported_types", "inference_input_type",
                    "inference_output_type", "representative_data", "per_channel",
                    "denylist_top_k", "denylist_threshold", "equalize", "bias_correction")
QUANTIZER_FIELDS = ("recipe", "rules", "io", "algorithm")
ROUNDINGS = ("nearest", "adaround")  # converter and LiteRT Quantizer variants
# Recipes AdaRound can round for: one bit width, per-channel scales, on every weight op.
ADAROUND_RECIPES = ("weight_only_wi8_afp32", "weight_only_wi4_afp32", "dynamic_wi8_afp32",
                    "dynamic_wi4_afp32", "static_wi8_ai8", "static_wi8_ai16")
# LiteRT Quantizer: how weight ranges are chosen (`ai_edge_quantizer`'s algorithm keys). Plain
# min/max; OCTAV and MSE search the clipping range; GPTQ and OSCAR round and clip with the
# calibration samples' second moments (fully connected layers only: other ops keep min/max);
# hadamard rotates weights first.
ALGORITHMS = {"min_max": "min_max_uniform_quantize", "octav": "OCTAV", "mse": "MSE",
              "gptq": "GPTQ", "oscar": "OSCAR", "hadamard": "DECOMPOSED_HADAMARD_ROTATION"}
CALIBRATING_ALGORITHMS = ("gptq", "oscar")  # they read the calibration samples
SEARCH_FIELDS = ("objective", "precisions", "max_trials", "time_limit", "rank", "budget")
# The search: what a layer may be (cheapest first), what it minimizes, how it ranks layers.
PRECISIONS = ("int4", "int4_octav", "int4_mse", "int4_gptq", "int8", "int8_mse", "dynamic8",
              "int16", "float")
OBJECTIVES = ("size", "latency")
RANKINGS = ("error", "impact")
_NAME = re.compile(r"^[a-z][a-z0-9_]*$")


@dataclasses.dataclass
class LayerRule:
    """One per-layer rule of a LiteRT Quantizer variant; a later rule overrides an earlier
    one on the layers both match.

    Attributes:
        regex: Matched (`re.search`) against each op's output tensor names, which contain the
            Keras layer names (`small_cnn/dense_1/`); or use `select`.
        select: `first` or `last`: the first or last layer with weights, by graph order.
        op: The op it applies to (`CONV_2D`, `FULLY_CONNECTED`, ...), or `*` for every op the
            quantizer supports.
        mode: `float` (keep the layer in float), `weight_only` (int weights, float compute),
            `dynamic` (int weights, activations quantized on the fly) or `static`
            (calibrated int activations).
        bits: Weight bits (4 or 8; 2 for dynamic).
        activation_bits: `static` only: 8 or 16.
        granularity: How weights are scaled: per channel, per tensor, or per block of 32 to
            256 values.
        algorithm: How the weight ranges are chosen (`ALGORITHMS`); default: the variant's.
    """

    regex: str | None = None
    select: str | None = None
    op: str = "*"
    mode: str = "weight_only"
    bits: int = 8
    activation_bits: int = 8
    granularity: str = "channelwise"
    algorithm: str | None = None

    def __post_init__(self) -> None:
        if (self.regex is None) == (self.select is None):
            raise ValueError("rules: each rule needs exactly one of regex or select (first, "
                             "last)")
        if self.regex is not None:
            try:
                re.compile(self.regex)
            except re.error as exc:
                raise ValueError(f"rules: regex {self.regex!r} is not valid: {exc}") from None
        if self.select is not None:
            one_of("rules: select", self.select, SELECTORS)
        one_of("rules: mode", self.mode, RULE_MODES)
        one_of("rules: bits", self.bits, (2, 4, 8))
        one_of("rules: activation_bits", self.activation_bits, (8, 16))
        one_of("rules: granularity", self.granularity, GRANULARITIES)
        if self.algorithm is not None:
            one_of("rules: algorithm", self.algorithm, tuple(ALGORITHMS))


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
        equalize: converter: before converting, fold batch norms and equalize the channel
            ranges of consecutive layers (cross-layer equalization, `pipeline.build.equalize`;
            ReLU6 between equalized layers become ReLU).
        bias_correction: converter: before converting, move each layer's bias back by the
            mean shift its int8 weights cause, measured on the calibration samples.
        rounding: converter or LiteRT Quantizer: `nearest` (the default) or `adaround`:
            each weight rounded up or down to reconstruct its layer's output on the
            calibration samples (`pipeline.build.equalize.adaround`), stored on the grid
            the quantizer then keeps.
        backend: `converter` or `litert_quantizer` (`BACKENDS`).
        recipe: LiteRT Quantizer: a named recipe (`RECIPES`), or None to start from nothing
            but the rules.
        rules: LiteRT Quantizer: per-layer rules applied on top of the recipe, in order.
        io: LiteRT Quantizer: `float` model input and output (the default), or `integer` as
            a static recipe makes them.
        algorithm: LiteRT Quantizer: how the recipe's and rules' weight ranges are chosen
            (`ALGORITHMS`): `min_max` (the default), `octav`, `mse`, `gptq`, `oscar`,
            `hadamard`.
        objective: search: `size` (the smallest model) or `latency` (the lowest p50).
        precisions: search: what a layer may be, cheapest first (`int4`: weight-only;
            `int8`, `int16`: static, calibrated activations; `dynamic8`: int8 weights,
            activations quantized on the fly; `float`; and methods as moves at no cost in
            size: `int4_octav`, `int4_mse`, `int4_gptq`, `int8_mse`, the same with the
            LiteRT Quantizer's OCTAV, MSE or GPTQ ranges). It starts with every layer at the
            first, and checks every layer at each of the others too.
        max_trials: search: at most this many candidate models.
        time_limit: search: at most this many seconds.
        rank: search: `error` (the layers' error against the float model, lowest SNR first)
            or `impact` (raise each layer alone and measure the validation accuracy: costlier,
            more exact).
        budget: search: the accuracy drop it may cost, on the validation split; conf/ sets
            it to `${report.max_accuracy_drop}`, so params.yaml holds the value and DVC
            reruns only the search when the budget changes.
    """

    name: str = "?"
    description: str = ""
    source: str = "???"  # required: dvc.yaml picks the Keras model to convert by it
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
    recipe: str | None = None
    rules: list[LayerRule] = dataclasses.field(default_factory=list)
    io: str = "float"
    algorithm: str = "min_max"
    objective: str = "size"
    precisions: list[str] = dataclasses.field(
        default_factory=lambda: ["int4", "int8", "dynamic8", "float"])
    max_trials: int = 30
    time_limit: float = 600.0
    rank: str = "error"
    budget: float | None = None

    def __post_init__(self) -> None:
        key = f"quantization.variants.{self.name}"
        if not _NAME.match(self.name):
            raise ValueError(f"{key}: variant names must match {_NAME.pattern} (they become "
                             "file, stage and run names)")
        one_of(f"{key}.source", self.source, SOURCES)
        one_of(f"{key}.backend", self.backend, BACKENDS)
        one_of(f"{key}.rounding", self.rounding, ROUNDINGS)
        if (self.equalize or self.bias_correction) and (
                self.backend != "converter" or self.source != "float" or
                "DEFAULT" not in self.optimizations):
            raise ValueError(f"{key}: equalize and bias_correction prepare the float Keras "
                             "model for the converter (backend: converter, source: float, "
                             "optimizations: [DEFAULT])")
        if self.rounding == "adaround":
            if self.source != "float" or self.backend == "search":
                raise ValueError(f"{key}: rounding: adaround rounds the float model's "
                                 "weights (source: float, backend: converter or "
                                 "litert_quantizer)")
            if self.backend == "converter" and ("DEFAULT" not in self.optimizations or
                                                self.supported_types == ["float16"]):
                raise ValueError(f"{key}: rounding: adaround needs int8 weights "
                                 "(optimizations: [DEFAULT], not float16)")
            if self.backend == "litert_quantizer" and (
                    self.recipe not in ADAROUND_RECIPES or self.rules or
                    self.algorithm != "min_max"):
                raise ValueError(f"{key}: rounding: adaround needs one of the recipes "
                                 f"{', '.join(ADAROUND_RECIPES)}, without rules, with "
                                 "algorithm: min_max")
        one_of(f"{key}.algorithm", self.algorithm, tuple(ALGORITHMS))
        if self.algorithm != "min_max" and self.backend != "litert_quantizer":
            raise ValueError(f"{key}.algorithm: {self.algorithm} is a LiteRT Quantizer "
                             "algorithm (backend: litert_quantizer)")
        if self.backend == "search":
            if self.source != "float":
                raise ValueError(f"{key}: the search quantizes the float model (source: float)")
            one_of(f"{key}.objective", self.objective, OBJECTIVES)
            one_of(f"{key}.rank", self.rank, RANKINGS)
            for p in self.precisions:
                one_of(f"{key}.precisions", p, PRECISIONS)
            if len(self.precisions) < 2 or len(set(self.precisions)) != len(self.precisions):
                raise ValueError(f"{key}.precisions must list at least two different "
                                 f"precisions, cheapest first, got {self.precisions}")
            positive(f"{key}.max_trials", self.max_trials)
            positive(f"{key}.time_limit", self.time_limit)
            if self.budget is not None:
                positive(f"{key}.budget", self.budget, allow_zero=True)
            return
        if self.backend == "litert_quantizer":
            if self.source != "float":
                raise ValueError(f"{key}: the LiteRT Quantizer quantizes the float model "
                                 "(source: float)")
            if self.recipe is not None:
                one_of(f"{key}.recipe", self.recipe, RECIPES)
            if self.recipe is None and not self.rules:
                raise ValueError(f"{key}: a litert_quantizer variant needs a recipe, rules, "
                                 f"or both; recipes: {', '.join(RECIPES)}")
            one_of(f"{key}.io", self.io, IO_MODES)
            return
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
    def prepared(self) -> bool:
        """True if the float Keras model is changed before conversion (equalization, bias
        correction): its per-layer table is then its own, not the shared one."""
        return self.equalize or self.bias_correction or self.rounding == "adaround"

    @property
    def quantizer(self) -> bool:
        """True if the LiteRT Quantizer makes this variant."""
        return self.backend == "litert_quantizer"

    def algorithms(self) -> set[str]:
        """Every algorithm the variant's recipe and rules use."""
        return {self.algorithm, *(r.algorithm for r in self.rules if r.algorithm)}

    @property
    def search(self) -> bool:
        """True if this variant is found by the accuracy-aware search (`pipeline.build.search`)."""
        return self.backend == "search"

    @property
    def calibrated(self) -> bool:
        """True if the variant needs calibration samples (representative data)."""
        if self.search:
            return any(p.startswith(("int8", "int16")) or p.endswith(CALIBRATING_ALGORITHMS)
                       for p in self.precisions)
        if self.quantizer:
            return bool(self.recipe and self.recipe.startswith("static_")) or any(
                r.mode == "static" for r in self.rules) or \
                bool(self.algorithms() & set(CALIBRATING_ALGORITHMS)) or \
                self.rounding == "adaround"
        return self.representative_data or self.bias_correction or self.rounding == "adaround"

    @property
    def full_integer(self) -> bool:
        """True for int8-activation, calibrated conversions of the float model: the ones
        TFLite's QuantizationDebugger can measure per layer."""
        return (not self.quantizer and self.source == "float" and self.representative_data
                and "DEFAULT" in self.optimizations and OPS_SETS[2] not in self.supported_ops)

    @property
    def integer_only(self) -> bool:
        """True if no float fallback is allowed (only integer op sets)."""
        return not self.quantizer and "TFLITE_BUILTINS" not in self.supported_ops

    def as_params(self) -> dict[str, str]:
        """Flat string params, the same keys for every variant (for MLflow)."""
        def text(value: Any) -> str:
            if isinstance(value, list):
                return ",".join(text(v) if not dataclasses.is_dataclass(v) else
                                " ".join(f"{k}={x}" for k, x in dataclasses.asdict(v).items()
                                         if x is not None) for v in value)
            return str(value)

        return {f"variant.{f.name}": text(getattr(self, f.name))
                for f in dataclasses.fields(self)}


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
    backend = raw.get("backend", "converter")
    owner = {**{f: "converter" for f in CONVERTER_FIELDS},
             **{f: "litert_quantizer" for f in QUANTIZER_FIELDS},
             **{f: "search" for f in SEARCH_FIELDS}}
    foreign = [f for f in raw if owner.get(f, backend) != backend]
    if foreign:
        raise ValueError(f"{key}: {', '.join(foreign)} belong to the "
                         f"{owner[foreign[0]]} backend, not to backend: {backend}")
    try:
        return typed(VariantSpec, {**raw, "name": name}, key)
    except ValueError as exc:  # a rule checks itself without knowing where it is
        if str(exc).startswith("rules: "):
            raise ValueError(f"{key}.{exc}") from None
        raise


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
