"""Quantization variants as data: one typed spec per variant, declared in
`conf/quantization/*.yaml` and validated here, of the kind its `backend` names (no
TensorFlow here):

- `converter` (the default, `pipeline.variants.converter`): `tf.lite.TFLiteConverter`;
- `litert_quantizer` (`pipeline.variants.quantizer`): Google's LiteRT Quantizer
  (`litert-quantizer`, formerly `ai-edge-quantizer`), by a named recipe and per-layer rules;
- `search` (`pipeline.variants.search`): the accuracy-aware search over per-layer precisions.

Each kind validates and logs only its own fields; its producer in `pipeline/produce/`
(`by_converter`, `by_quantizer`, `by_search`: `pipeline.produce.producer.PRODUCERS`) makes
its `.tflite`. A new kind is a module here (a `VariantSpec` subclass with its `BACKEND`),
imported below, and its producer module there, imported in `pipeline.produce.quantize`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from pipeline.schema import one_of, typed
from pipeline.variants.base import (FLOAT_TFLITE, KERAS, KINDS, LABELS, SAVED_MODEL,
                                    SOURCES, TORCH_PROGRAM, VariantSpec)
from pipeline.variants.converter import (IO_TYPES, OPS_SETS, OPTIMIZATIONS, ROUNDINGS,
                                         SUPPORTED_TYPES, ConverterVariant)
from pipeline.variants.quantizer import (ADAROUND_RECIPES, ALGORITHMS, CALIBRATING_ALGORITHMS,
                                         GRANULARITIES, IO_MODES, RECIPES, RULE_MODES,
                                         SELECTORS, LayerRule, QuantizerVariant)
from pipeline.variants.search import OBJECTIVES, PRECISIONS, RANKINGS, SearchVariant
from pipeline.variants.torch import PT2E_MODES, TorchVariant

__all__ = ["ADAROUND_RECIPES", "ALGORITHMS", "CALIBRATING_ALGORITHMS", "FLOAT_TFLITE",
           "GRANULARITIES", "IO_MODES", "IO_TYPES", "KERAS", "KINDS", "LABELS", "OBJECTIVES",
           "OPS_SETS", "OPTIMIZATIONS", "PRECISIONS", "PT2E_MODES", "RANKINGS", "RECIPES",
           "ROUNDINGS", "RULE_MODES", "SAVED_MODEL", "SELECTORS", "SOURCES", "SUPPORTED_TYPES",
           "TORCH_PROGRAM", "ConverterVariant", "LayerRule", "QuantizerVariant",
           "SearchVariant", "TorchVariant", "VariantSpec",
           "parse_variant", "parse_variants", "select"]


def _fields(kind: type[VariantSpec]) -> set[str]:
    """A kind's own fields (not the ones every kind has)."""
    return {f.name for f in dataclasses.fields(kind)} - {
        f.name for f in dataclasses.fields(VariantSpec)}


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
    backend = raw.get("backend", ConverterVariant.BACKEND)
    one_of(f"{key}.backend", backend, tuple(KINDS))
    kind = KINDS[backend]
    own = {f.name for f in dataclasses.fields(kind)}
    foreign = [f for f in raw if f not in own and any(f in _fields(k) for k in KINDS.values())]
    if foreign:
        owner = next(b for b, k in KINDS.items() if foreign[0] in _fields(k))
        raise ValueError(f"{key}: {', '.join(foreign)} belong to the {owner} backend, not to "
                         f"backend: {backend}")
    try:
        return typed(kind, {**raw, "name": name}, key)
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
