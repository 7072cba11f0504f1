"""Step prepare: load the dataset and write its seeded, stratified splits."""

from __future__ import annotations

import logging
from pathlib import Path

from pipeline import sources
from pipeline.config import Config
from pipeline.layout import Layout

log = logging.getLogger(__name__)


def run(cfg: Config, layout: Layout) -> Path:
    """Write the store `layout.dataset` (`pipeline.data`); returns its path."""
    ds = sources.prepare(cfg.data, cfg.seed, layout.dataset)
    log.info("wrote %s: train %d, val %d, test %d samples of shape %s", layout.dataset,
             len(ds.x_train), len(ds.x_val), len(ds.x_test), ds.input_shape)
    return layout.dataset
