"""Step benchmark@VARIANT: single-sample latency per thread count and XNNPACK setting,
speed-up against the reference (interleaved) and peak memory (no TensorFlow)."""

from __future__ import annotations

from typing import Any

from pipeline import artifacts, data
from pipeline.config import Config
from pipeline.io import write_json, write_text
from pipeline.layout import Layout
from pipeline.measure import benchmark, profile
from pipeline.variants import select


def run(cfg: Config, layout: Layout, variant: str, progress: bool = True) -> dict[str, Any]:
    """Write the variant's benchmark JSON and its per-operator table (CSV: a header only
    where nothing was profiled); returns the JSON. The input is one validation sample
    (latency does not depend on which; the test split is kept for evaluation)."""
    select(cfg.variants, variant)
    out = layout.benchmark(variant)
    variant_dir = layout.variant(variant)
    if artifacts.read_record(variant_dir)["status"] != "ok":
        result = artifacts.skipped("benchmark")
        write_text(layout.profile(variant), profile.table({}))
        write_json(out, result)
        return result
    ref = cfg.report.reference
    ds = data.load(layout.dataset)
    result = {"status": "ok", **benchmark.benchmark(
        artifacts.tflite_path(variant_dir, variant), ds.x_val[:1], cfg.benchmark,
        None if variant == ref else artifacts.tflite_path(layout.variant(ref), ref),
        progress=progress)}
    write_text(layout.profile(variant), profile.table(result.get("profiles", {})))
    write_json(out, result)
    return result
