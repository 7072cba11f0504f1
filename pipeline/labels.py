"""What the variants are scored against (`evaluate.labels`): the data's labels, or, for a
model that came without its labelled test set, the reference's own predictions (no
TensorFlow). With `model`, "accuracy" is each variant's top-1 agreement with the reference,
the budget applies to it, and the report says that no accuracy was measured.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from pipeline.config import Config
from pipeline.data import Dataset
from pipeline.io import read_json
from pipeline.layout import Layout

UNLABELLED = ("has no labels (an image folder without class folders): bring a trained "
              "model (model=file) and score the variants against it (evaluate.labels=model)")


def label_free(cfg: Config) -> bool:
    return cfg.evaluate.labels == "model"


def check(cfg: Config, ds: Dataset, where: str = "data") -> None:
    """Refuse labels the config needs and the data does not have.

    Raises:
        ValueError: for unlabelled data without `evaluate.labels=model`.
    """
    if not ds.labelled and not label_free(cfg):
        raise ValueError(f"{where} {UNLABELLED}")


def predicted(scores: Any, chunk: int = 65536) -> np.ndarray:
    """Top-1 class of every row of `(n, classes)` scores (a memory map is read in chunks)."""
    return np.concatenate([np.asarray(scores[i:i + chunk]).argmax(axis=1)
                           for i in range(0, len(scores), chunk)] or [np.zeros(0, np.int64)])


def test_labels(cfg: Config, layout: Layout, ds: Dataset) -> np.ndarray:
    """The test split's labels the variants are scored against: the data's, or the
    reference variant's top-1 (`evaluation/reference_outputs.npy`)."""
    check(cfg, ds)
    if label_free(cfg):
        return predicted(np.load(layout.reference_outputs, mmap_mode="r"))
    return ds.y_test


def keras_accuracy(cfg: Config, layout: Layout) -> float | None:
    """The float Keras model's test accuracy, or None where no accuracy is measured
    (label-free, whatever labels the data carries)."""
    if label_free(cfg):
        return None
    return read_json(layout.keras_metrics("float"))["test_accuracy"]
