"""The search kind (`backend: search`): the accuracy-aware search over per-layer precisions
(`pipeline.produce.search`), which makes LiteRT Quantizer trial models from the float model's
`.tflite` and measures them on the validation split. Made by `pipeline.produce.by_search`."""

from __future__ import annotations

import dataclasses
from typing import ClassVar

from pipeline.schema import one_of, positive
from pipeline.variants.base import FLOAT_TFLITE, LABELS, VariantSpec
from pipeline.variants.quantizer import CALIBRATING_ALGORITHMS

# What a layer may be (cheapest first), what the search minimizes, how it ranks layers.
PRECISIONS = ("int4", "int4_octav", "int4_mse", "int4_gptq", "int8", "int8_mse", "dynamic8",
              "int16", "float16", "float")
OBJECTIVES = ("size", "latency")
RANKINGS = ("error", "impact")


@dataclasses.dataclass
class SearchVariant(VariantSpec):
    """A variant found by the search.

    Attributes:
        objective: `size` (the smallest model) or `latency` (the lowest p50).
        precisions: what a layer may be, cheapest first (`int4`: weight-only; `int8`,
            `int16`: static, calibrated activations; `dynamic8`: int8 weights, activations
            quantized on the fly; `float16`: float16 weights, float compute, on the ops the
            quantizer casts (others stay float); `float`; and methods as moves at no cost
            in size: `int4_octav`, `int4_mse`, `int4_gptq`, `int8_mse`, the same with the
            LiteRT Quantizer's OCTAV, MSE or GPTQ ranges). It starts with every layer at the
            first, and checks every layer at each of the others too.
        max_trials: at most this many trial models.
        time_limit: at most this many seconds.
        rank: `error` (the layers' error against the float model, lowest SNR first) or
            `impact` (raise each layer alone and measure the validation accuracy: costlier,
            more exact).
        budget: the accuracy drop it may cost, on the validation split (required).
        labels: what the trial models are scored against on the validation split: `data`
            (the labels) or `model` (the float model's own answers; required).

    conf/ sets `budget: ${report.max_accuracy_drop}` and `labels: ${evaluate.labels}`: the
    composed params.yaml then holds the values in the variant's own keys, so DVC reruns
    this variant's stage, not every variant's, when the report's budget or the labels
    change (a per-variant stage can only list keys that every variant has).
    """

    BACKEND: ClassVar[str] = "search"

    backend: str = "search"
    objective: str = "size"
    precisions: list[str] = dataclasses.field(
        default_factory=lambda: ["int4", "int8", "dynamic8", "float16", "float"])
    max_trials: int = 30
    time_limit: float = 600.0
    rank: str = "error"
    budget: float | None = None
    labels: str | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        key = self.key
        self.require_float_source("the search")
        one_of(f"{key}.objective", self.objective, OBJECTIVES)
        one_of(f"{key}.rank", self.rank, RANKINGS)
        for p in self.precisions:
            one_of(f"{key}.precisions", p, PRECISIONS)
        if len(self.precisions) < 2 or len(set(self.precisions)) != len(self.precisions):
            raise ValueError(f"{key}.precisions must list at least two different "
                             f"precisions, cheapest first, got {self.precisions}")
        positive(f"{key}.max_trials", self.max_trials)
        positive(f"{key}.time_limit", self.time_limit)
        for field, usual in (("budget", "${report.max_accuracy_drop}"),
                             ("labels", "${evaluate.labels}")):
            if getattr(self, field) is None:
                raise ValueError(f"{key}.{field} is required; `{field}: {usual}` takes the "
                                 "value the rest of the lab uses")
        positive(f"{key}.budget", self.budget, allow_zero=True)
        one_of(f"{key}.labels", self.labels, LABELS)

    @property
    def source_form(self) -> str:
        return FLOAT_TFLITE

    @property
    def calibrated(self) -> bool:
        return any(p.startswith(("int8", "int16")) or p.endswith(CALIBRATING_ALGORITHMS)
                   for p in self.precisions)

    def validation_target(self) -> tuple[float, str]:
        return float(self.budget), str(self.labels)
