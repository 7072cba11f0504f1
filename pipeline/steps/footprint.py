"""Step footprint: what each variant costs on a device (no TensorFlow): MACs, GPU delegate
compatibility, TensorFlow Lite for Microcontrollers' arena and its kernels' outputs on a
seeded subset of the test split, and Arm Vela's figures for each configured Ethos-U.

One stage for every variant, in one process: the tools take 1-3 s a variant, and a DVC
stage per variant would add more than that in DVC's own overhead (measured: 89 s for 15
variants as 15 stages, over 10% of the default `make repro`)."""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

from pipeline import artifacts, data
from pipeline.config import Config
from pipeline.io import atomic_dir, write_json
from pipeline.layout import FOOTPRINT_FILE, Layout
from pipeline.measure import footprint, vela
from pipeline.labels import test_labels
from pipeline.variants import select

log = logging.getLogger(__name__)


def subset(n: int, size: int, seed: int) -> np.ndarray:
    """Sorted indices of `size` of `n` test samples, the same for every variant."""
    size = min(size, n)
    return np.sort(np.random.default_rng(seed).choice(n, size=size, replace=False))


def run(cfg: Config, layout: Layout) -> dict[str, dict[str, Any]]:
    """Write every variant's footprint folder (`run_variant`); returns `{variant: figures}`."""
    ds = data.load(layout.dataset)  # once: the test labels (maybe the reference's) too
    labels = test_labels(cfg, layout, ds) if cfg.footprint.micro else ds.y_test
    return {v: run_variant(cfg, layout, v, ds, labels) for v in cfg.variants}


def run_variant(cfg: Config, layout: Layout, variant: str, ds: data.Dataset | None = None,
                labels: np.ndarray | None = None) -> dict[str, Any]:
    """Write the variant's footprint folder (`footprint.json`, Vela's reports and compiled
    models); returns the figures (`pipeline.measure.footprint.measure`). `ds` and `labels`
    (the test split's, `test_labels`) are read here when not given."""
    select(cfg.variants, variant)
    variant_dir = layout.variant(variant)
    record = artifacts.read_record(variant_dir)
    with atomic_dir(layout.footprint(variant)) as out:
        if record["status"] != "ok":
            result = artifacts.skipped("footprint")
        else:
            fp = cfg.footprint
            ds = ds or data.load(layout.dataset)
            if labels is None:
                labels = test_labels(cfg, layout, ds) if fp.micro else ds.y_test
            idx = subset(len(ds.y_test), fp.micro_samples if fp.micro else 0, cfg.seed)
            try:
                result = footprint.measure(
                    artifacts.tflite_path(variant_dir, variant), ds.x_test, labels, out,
                    samples=idx, integer=record["inspection"]["float_compute_ops"] == 0,
                    micro_kernels=fp.micro, smallest_arena=fp.smallest_arena, gpu=fp.gpu,
                    npu={k: vela.Target(k, t.system_config, t.memory_mode)
                         for k, t in fp.npu.items()})
            except Exception as exc:  # a tool (or our graph reader) on a user's model: this
                # variant's footprint fails with the reason; the variant and the run go on
                log.error("footprint of %s failed: %s: %s", variant, type(exc).__name__, exc)
                result = {"status": "failed",
                          "error": f"footprint: {type(exc).__name__}: {exc}"}
            micro = result.get("micro", {})
            if "accuracy" in micro:  # TFLM's kernels as one more kernel path
                micro["disagree"] = bool(abs(micro["accuracy"] - micro["builtin_accuracy"])
                                         > cfg.evaluate.kernel_path_tolerance)
        write_json(out / FOOTPRINT_FILE, result)
    return result
