"""Step quantize@VARIANT: convert, inspect and measure one variant."""

from __future__ import annotations

import logging
from typing import Any

from pipeline import artifacts, data
from pipeline.build import model_store
from pipeline.build import quantize as quantize_mod
from pipeline.config import Config
from pipeline.layout import Layout
from pipeline.variants import select

log = logging.getLogger(__name__)


def run(cfg: Config, layout: Layout, variant: str) -> dict[str, Any]:
    """Write the variant's folder (`pipeline.artifacts`); returns its record."""
    spec = select(cfg.variants, variant)
    out_dir = layout.variant(variant)
    calibration = selection = None
    if spec.representative_data:
        ds = data.load(layout.dataset)
        calibration = data.calibration_samples(ds, cfg.quantization.calibration_samples,
                                               cfg.seed)
        # Per-layer choices are decisions: made on the validation split, never on test.
        selection = ds.x_val[:cfg.quantization.calibration_samples]
    try:
        source = model_store.load(layout.keras(spec.source), qat=spec.source == "qat")
    except model_store.ModelUnavailable as exc:  # no QAT model: this variant fails, alone
        log.error("variant %s failed: %s", variant, exc)
        record = artifacts.record_failure(variant, out_dir, str(exc))
    else:
        record = quantize_mod.quantize_variant(source, spec, calibration, out_dir, selection)
    log.info("%s: %s in %.1f s -> %s", variant, record["status"], record["seconds"], out_dir)
    return record
