"""Step intake: convert a model from another framework (`model=onnx`, `model=torch`) once
into the float model every variant starts from, and check it against its own runtime on the
test split (`pipeline.produce.intake`). A Keras model needs none: only `intake.json`."""

from __future__ import annotations

from typing import Any

from pipeline import data
from pipeline.config import ONNX, TORCH, Config
from pipeline.layout import Layout
from pipeline.produce import intake


def run(cfg: Config, layout: Layout) -> dict[str, Any]:
    """Write `models/intake/` (`pipeline.layout.Layout.intake`); returns its `intake.json`.

    Raises:
        FileNotFoundError, ValueError: bad input or fidelity beyond `model.max_abs_diff` /
            `model.min_agreement` (nothing is written).
    """
    if cfg.model.arch not in (ONNX, TORCH):
        return intake.run(None, None, "", layout.intake)  # type: ignore[arg-type]
    ds = data.load(layout.dataset)
    described = data.meta(layout.dataset)["input_range"]["describe"]
    return intake.run(cfg.model, ds, described, layout.intake)  # type: ignore[arg-type]
