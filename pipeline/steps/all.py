"""Every step in order, in one process, with outputs under one root (the Hydra app,
`python -m pipeline`)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pipeline.config import Config
from pipeline.layout import Layout
from pipeline.steps import (benchmark, evaluate, footprint, layer_errors, prepare, qat,
                            quantize, reference, report, track, train)


def run(cfg: Config, raw: Mapping[str, Any], root: Path, params_file: Path,
        parent_run_id: str | None = None, extra_params: Mapping[str, str] | None = None,
        run_name: str | None = None) -> dict[str, Any]:
    """Run prepare, train, qat, layer_errors, quantize (each variant), reference, evaluate
    benchmark (each variant), footprint, report and track.

    Returns:
        The track step's result (run ids).
    """
    layout = Layout(Path(root))
    prepare.run(cfg, layout)
    train.run(cfg, layout)
    qat.run(cfg, layout)
    layer_errors.run(cfg, layout)
    for name in cfg.variants:
        quantize.run(cfg, layout, name)
    reference.run(cfg, layout)
    for name in cfg.variants:
        evaluate.run(cfg, layout, name)
        benchmark.run(cfg, layout, name, progress=False)
    footprint.run(cfg, layout)
    report.run(cfg, layout)
    return track.run(cfg, layout, raw, params_file, parent_run_id, extra_params, run_name)
