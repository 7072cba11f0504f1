"""Every step in order, in one process, with outputs under one root (the Hydra app,
`python -m pipeline`)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pipeline.config import Config
from pipeline.layout import Layout
from pipeline.steps import (ORDER, PER_VARIANT, benchmark, evaluate, footprint, layer_errors,
                            prepare, qat, quantize, reference, report, track, train)

# Each step module by stage name; the order they run in is `ORDER`'s.
STEPS = {m.__name__.rsplit(".", 1)[1]: m for m in (benchmark, evaluate, footprint, layer_errors,
                                                   prepare, qat, quantize, reference, report,
                                                   track, train)}


def run(cfg: Config, raw: Mapping[str, Any], root: Path, params_file: Path,
        parent_run_id: str | None = None, extra_params: Mapping[str, str] | None = None,
        run_name: str | None = None) -> dict[str, Any]:
    """Run every step in `pipeline.steps.ORDER` (a per-variant one for each variant).

    Returns:
        The track step's result (run ids).
    """
    layout = Layout(Path(root))
    for name in ORDER:
        step = STEPS[name]
        if name == "track":
            return track.run(cfg, layout, raw, params_file, parent_run_id, extra_params,
                             run_name)
        if name not in PER_VARIANT:
            step.run(cfg, layout)
            continue
        for variant in cfg.variants:
            step.run(cfg, layout, variant, **({"progress": False} if step is benchmark else {}))
    raise AssertionError("track is the last step")
