"""Every step in order, in one process, with outputs under one root (the Hydra app,
`python -m pipeline`)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pipeline import reads
from pipeline.config import Config
from pipeline.layout import Layout
from pipeline.steps import (ORDER, PER_VARIANT, benchmark, calibration, evaluate, export,
                            footprint, intake, layer_errors, prepare, qat, quantize,
                            reference_outputs, report, track, train)

DVC_YAML = Path(__file__).resolve().parents[2] / "dvc.yaml"  # the project this code is in
# Each step module by stage name; the order they run in is `ORDER`'s.
STEPS = {m.__name__.rsplit(".", 1)[1]: m
         for m in (benchmark, calibration, evaluate, export, footprint, intake, layer_errors,
                   prepare, qat, quantize, reference_outputs, report, track, train)}


def run(cfg: Config, raw: Mapping[str, Any], root: Path, params_file: Path,
        parent_run_id: str | None = None, extra_params: Mapping[str, str] | None = None,
        run_name: str | None = None) -> dict[str, Any]:
    """Run every step in `pipeline.steps.ORDER` (a per-variant one for each variant).

    Returns:
        The track step's result (run ids).
    """
    layout = Layout(Path(root))

    def checked(name: str, variant: str | None = None, **kwargs: Any) -> Any:
        """The step on a recording view of `cfg`, held to its stage's params in dvc.yaml
        (`pipeline.reads`), as `dvc repro` runs it."""
        view, read = reads.recording(cfg)
        args = (variant,) if variant is not None else ()
        result = STEPS[name].run(view, layout, *args, **kwargs)
        reads.enforce(read, DVC_YAML, name, variant)
        return result

    for name in ORDER:
        if name == "track":
            return checked(name, raw=raw, params_file=params_file,
                           parent_run_id=parent_run_id, extra_params=extra_params,
                           run_name=run_name)
        if name not in PER_VARIANT:
            checked(name)
            continue
        for variant in cfg.variants:
            checked(name, variant, **({"progress": False} if name == "benchmark" else {}))
    raise AssertionError("track is the last step")
