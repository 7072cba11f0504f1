"""Evaluate one `.tflite` variant on the whole test split (no TensorFlow).

Relative metrics (accuracy_drop, agreement, compression_ratio) need the reference variant's
results too; `pipeline.report` computes them from the per-variant files written here.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.litert import Runner, io_dtypes

log = logging.getLogger(__name__)


def evaluate(tflite_path: str | Path, x_test: np.ndarray, y_test: np.ndarray) -> dict[str, Any]:
    """Run the model on every test sample.

    Args:
        tflite_path: The variant's `.tflite` file.
        x_test: `(n, *input_shape)` float32 images.
        y_test: `(n,)` integer labels.

    Returns:
        `accuracy`, `size_bytes`, `num_samples`, `input_dtype`, `output_dtype` and
        `predictions` (top-1 label per test sample, for agreement with the reference).
    """
    path = Path(tflite_path)
    runner = Runner(path)
    scores = runner.predict(x_test)  # (n, num_classes)
    predictions = scores.argmax(axis=1)
    accuracy = float((predictions == y_test).mean())
    input_dtype, output_dtype = io_dtypes(runner.interpreter)
    log.info("%s: accuracy %.4f on %d test samples", path.stem, accuracy, len(y_test))
    return {
        "accuracy": accuracy,
        "size_bytes": path.stat().st_size,
        "num_samples": int(len(y_test)),
        "input_dtype": input_dtype,
        "output_dtype": output_dtype,
        "predictions": [int(p) for p in predictions],
    }
