"""Step reference_outputs: the reference variant's outputs on the test split, written once, so that
every variant's output error is measured against the same numbers (no TensorFlow)."""

from __future__ import annotations

from pathlib import Path

from pipeline import artifacts, data
from pipeline.config import Config
from pipeline.layout import Layout
from pipeline.measure import evaluate


def run(cfg: Config, layout: Layout) -> Path:
    """Write `layout.reference_outputs`.

    Raises:
        ValueError: if the reference variant failed to convert.
    """
    name = cfg.report.reference
    record = artifacts.read_record(layout.variant(name))
    if record["status"] != "ok":
        raise ValueError(f"the reference variant {name!r} failed, so nothing can be "
                         f"compared: {record['error']}")
    ds = data.load(layout.dataset)
    return evaluate.reference_outputs(artifacts.tflite_path(layout.variant(name), name),
                                      ds.x_test, layout.reference_outputs,
                                      cfg.evaluate.batch_size, cfg.evaluate.worker_count)
