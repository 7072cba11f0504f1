"""A variant of the lab's last run as a package (`pipeline.ship.package`), from its stage
outputs (`pipeline.layout`): the export stage's, and `make export VARIANT=...`'s (no
TensorFlow).

    python -m pipeline.ship int8_full              # -> exports/int8_full/
    python -m pipeline.ship int8_full --out DIR
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np

from pipeline import artifacts, data
from pipeline.config import Config
from pipeline.io import read_json
from pipeline.labels import test_labels
from pipeline.layout import FOOTPRINT_FILE, SUMMARY_JSON, Layout
from pipeline.ship import package


@dataclasses.dataclass(frozen=True)
class Run:
    """What every package of one run shares: the golden samples (the test split's first
    `deploy.golden_samples`, in the model's input range) and their labels, the data's meta,
    the class names, the summary rows and the options."""

    x: np.ndarray
    y: np.ndarray
    meta: dict[str, Any]
    classes: list[str]
    rows: dict[str, Any]
    options: package.Options


def shared(cfg: Config, layout: Layout) -> Run:
    deploy = cfg.deploy
    ds = data.load(layout.dataset)
    meta = data.meta(layout.dataset)
    n = min(deploy.golden_samples, len(ds.y_test))
    return Run(np.asarray(ds.x_test[:n], np.float32),
               np.asarray(test_labels(cfg, layout, ds)[:n]), meta,
               meta.get("class_names") or [str(c) for c in range(ds.num_classes)],
               read_json(layout.report(SUMMARY_JSON)),
               package.Options(deploy.c_name, deploy.arena_margin, deploy.golden_samples,
                               deploy.float_tolerance))


def package_variant(cfg: Config, layout: Layout, name: str, out_dir: Path,
                    run: Run) -> dict[str, Any]:
    """Write `name`'s package into `out_dir`; returns its record (`package.build`).

    Raises:
        ValueError: if the variant failed (it has no model to package).
    """
    record = artifacts.read_record(layout.variant(name))
    if record["status"] != "ok":
        raise ValueError(f"variant {name} failed, there is nothing to package: "
                         f"{record['error']}")
    target = cfg.report.target
    measured = package.Measured(
        name, run.rows.get(name), read_json(layout.footprint(name) / FOOTPRINT_FILE),
        layout.vela_model(name, target) if target in cfg.footprint.npu else None,
        cfg.evaluate.labels)
    return package.build(artifacts.tflite_path(layout.variant(name), name), out_dir,
                         run.x, run.y, run.meta, run.classes, measured, run.options)
