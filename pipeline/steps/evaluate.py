"""Step evaluate@VARIANT: accuracy, top-k, per-class accuracy, confusion matrix and output
error against the reference, on the whole test split (no TensorFlow)."""

from __future__ import annotations

from typing import Any

import numpy as np

from pipeline import artifacts, data
from pipeline.config import Config
from pipeline.io import atomic_dir, write_json
from pipeline.layout import EVALUATION_FILE, Layout
from pipeline.measure import evaluate
from pipeline import plots
from pipeline.labels import label_free, test_labels
from pipeline.variants import select


def run(cfg: Config, layout: Layout, variant: str) -> dict[str, Any]:
    """Write the variant's evaluation folder: `metrics.json` and the confusion matrix (JSON,
    PNG); returns the metrics. The variant runs on every path of `evaluate.kernel_paths`:
    the first gives its figures, the others their accuracy and their agreement with it,
    sample by sample, and `kernel_paths_disagree` says whether the accuracies differ by more
    than `evaluate.kernel_path_tolerance`."""
    select(cfg.variants, variant)
    variant_dir = layout.variant(variant)
    if artifacts.read_record(variant_dir)["status"] != "ok":
        result = artifacts.skipped("evaluate")
        with atomic_dir(layout.evaluation(variant)) as out:
            write_json(out / EVALUATION_FILE, result)
        return result
    ds = data.load(layout.dataset)
    ref = np.load(layout.reference_outputs, mmap_mode="r")  # read batch by batch
    result = evaluate.on_kernel_paths(
        artifacts.tflite_path(variant_dir, variant), ds.x_test, test_labels(cfg, layout, ds),
        ref,
        cfg.evaluate.kernel_paths, cfg.evaluate.kernel_path_tolerance,
        batch_size=cfg.evaluate.batch_size, top_k=cfg.evaluate.top_k,
        num_classes=ds.num_classes, workers=cfg.evaluate.worker_count)
    matrix = result.pop("confusion_matrix")
    result = {"status": "ok", "labels": cfg.evaluate.labels, **result}
    if label_free(cfg):
        result["note"] = ("agreement with the reference (evaluate.labels=model): no accuracy "
                          "was measured")
    with atomic_dir(layout.evaluation(variant)) as out:
        write_json(out / "confusion_matrix.json", matrix)
        plots.confusion_matrix(matrix, f"{variant}: accuracy {result['accuracy']:.4f}",
                               out / "confusion_matrix.png")
        write_json(out / EVALUATION_FILE, result)
    return result
