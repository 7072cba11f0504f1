"""The LiteRT Quantizer kind (`backend: litert_quantizer`): Google's `litert-quantizer`
(formerly `ai-edge-quantizer`) quantizes the float model's float32 `.tflite` without
TensorFlow, by a named `recipe` and per-layer `rules` (int4, blockwise scales, weight-only,
float16 weights, a different scheme per layer), with the weight-range `algorithm` it names
(`pipeline.produce.litert_quantizer`).
Made by `pipeline.produce.by_quantizer`."""

from __future__ import annotations

import dataclasses
import re
from typing import ClassVar

from pipeline.schema import one_of
from pipeline.variants.base import FLOAT_TFLITE, KERAS, VariantSpec
from pipeline.variants.converter import ROUNDINGS

# Its named recipes (`litert_quantizer.recipe`), what a rule does to the layers it matches,
# and how it stores their weights.
RECIPES = ("dynamic_wi8_afp32", "weight_only_wi8_afp32", "weight_only_wi4_afp32",
           "dynamic_wi4_afp32", "dynamic_wi4b32_afp32", "static_wi8_ai8", "static_wi8_ai16")
RULE_MODES = ("float", "float16", "weight_only", "dynamic", "static")
GRANULARITIES = ("channelwise", "tensorwise", "blockwise_32", "blockwise_64",
                 "blockwise_128", "blockwise_256")
SELECTORS = ("first", "last")  # the first or last layer with weights, whatever its name
IO_MODES = ("float", "integer")  # a static recipe's model I/O: float (the default) or as it is
# Recipes AdaRound can round for: one bit width, per-channel scales, on every weight op.
ADAROUND_RECIPES = ("weight_only_wi8_afp32", "weight_only_wi4_afp32", "dynamic_wi8_afp32",
                    "dynamic_wi4_afp32", "static_wi8_ai8", "static_wi8_ai16")
# How weight ranges are chosen (`litert_quantizer`'s algorithm keys). Plain min/max; OCTAV
# and MSE search the clipping range; GPTQ and OSCAR round and clip with the calibration
# samples' second moments (fully connected layers only: other ops keep min/max); hadamard
# rotates weights first.
ALGORITHMS = {"min_max": "min_max_uniform_quantize", "octav": "OCTAV", "mse": "MSE",
              "gptq": "GPTQ", "oscar": "OSCAR", "hadamard": "DECOMPOSED_HADAMARD_ROTATION"}
CALIBRATING_ALGORITHMS = ("gptq", "oscar")  # they read the calibration samples


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
        mode: `float` (keep the layer in float), `float16` (float16 weights and a DEQUANTIZE
            op to float32: half the size, float compute; the quantizer casts only fully
            connected, conv, depthwise conv, transpose conv and embedding lookup weights),
            `weight_only` (int weights, float compute), `dynamic` (int weights, activations
            quantized on the fly) or `static` (calibrated int activations).
        bits: Weight bits (4 or 8; 2 for dynamic); not for `float16`.
        activation_bits: `static` only: 8 or 16.
        granularity: How weights are scaled: per channel, per tensor, or per block of 32 to
            256 values; not for `float16`.
        algorithm: How the weight ranges are chosen (`ALGORITHMS`); default: the variant's;
            not for `float16`, which has no range to choose.
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
        # float16 casts each weight as it is: a scale or a range method would be ignored
        # silently, so a rule that sets one is refused rather than read as something else.
        if self.mode == "float16" and (self.algorithm is not None
                                       or self.granularity != "channelwise"):
            raise ValueError("rules: mode float16 takes no algorithm or granularity (they "
                             "apply to the integer modes: weight_only, dynamic, static), got "
                             f"algorithm {self.algorithm!r}, granularity "
                             f"{self.granularity!r}")


@dataclasses.dataclass
class QuantizerVariant(VariantSpec):
    """A variant the LiteRT Quantizer makes from the float model's `.tflite`.

    Attributes:
        recipe: A named recipe (`RECIPES`), or None to start from nothing but the rules.
        rules: Per-layer rules applied on top of the recipe, in order.
        io: `float` model input and output (the default), or `integer` as a static recipe
            makes them.
        algorithm: How the recipe's and rules' weight ranges are chosen (`ALGORITHMS`):
            `min_max` (the default), `octav`, `mse`, `gptq`, `oscar`, `hadamard`.
        rounding: `nearest` (the default) or `adaround` (the float Keras model's weights
            rounded first, `pipeline.produce.adaround`, then converted to the
            `.tflite` the quantizer starts from).
    """

    BACKEND: ClassVar[str] = "litert_quantizer"

    backend: str = "litert_quantizer"
    recipe: str | None = None
    rules: list[LayerRule] = dataclasses.field(default_factory=list)
    io: str = "float"
    algorithm: str = "min_max"
    rounding: str = "nearest"

    def __post_init__(self) -> None:
        super().__post_init__()
        key = self.key
        self.require_float_source("the LiteRT Quantizer")
        one_of(f"{key}.rounding", self.rounding, ROUNDINGS)
        one_of(f"{key}.algorithm", self.algorithm, tuple(ALGORITHMS))
        if self.rounding == "adaround" and (self.recipe not in ADAROUND_RECIPES or self.rules
                                            or self.algorithm != "min_max"):
            raise ValueError(f"{key}: rounding: adaround needs one of the recipes "
                             f"{', '.join(ADAROUND_RECIPES)}, without rules, with "
                             "algorithm: min_max")
        if self.recipe is not None:
            one_of(f"{key}.recipe", self.recipe, RECIPES)
        if self.recipe is None and not self.rules:
            raise ValueError(f"{key}: a litert_quantizer variant needs a recipe, rules, "
                             f"or both; recipes: {', '.join(RECIPES)}")
        one_of(f"{key}.io", self.io, IO_MODES)

    @property
    def source_form(self) -> str:
        return KERAS if self.adjusts_weights else FLOAT_TFLITE

    @property
    def adjusts_weights(self) -> bool:
        return self.rounding == "adaround"

    def algorithms(self) -> set[str]:
        """Every algorithm the variant's recipe and rules use."""
        return {self.algorithm, *(r.algorithm for r in self.rules if r.algorithm)}

    @property
    def calibrated(self) -> bool:
        return bool(self.recipe and self.recipe.startswith("static_")) or any(
            r.mode == "static" for r in self.rules) or \
            bool(self.algorithms() & set(CALIBRATING_ALGORITHMS)) or self.adjusts_weights
