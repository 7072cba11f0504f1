"""Quantization-aware fine-tuning with tensorflow-model-optimization (Keras 2 only)."""

from __future__ import annotations

import logging
from typing import Any

from pipeline.config import QatConfig
from pipeline.data import Dataset
from pipeline.tfcompat import import_tf
from pipeline.train import compile_model, fit, test_accuracy

log = logging.getLogger(__name__)


def fine_tune(float_model: Any, ds: Dataset, cfg: QatConfig, seed: int
              ) -> tuple[Any, dict[str, list[float]], float]:
    """Annotate the whole float model for QAT and fine-tune it.

    Returns:
        `(qat_model, history, test_accuracy)`; the history is empty when `cfg.epochs` is 0.
    """
    import_tf(seed)
    import tensorflow_model_optimization as tfmot

    qat_model = tfmot.quantization.keras.quantize_model(float_model)
    compile_model(qat_model, cfg.learning_rate)
    history: dict[str, list[float]] = {}
    if cfg.epochs > 0:
        log.info("QAT fine-tuning for %d epochs", cfg.epochs)
        history = fit(qat_model, ds, cfg.epochs, cfg.batch_size)
    acc = test_accuracy(qat_model, ds)
    log.info("QAT Keras model: test accuracy %.4f", acc)
    return qat_model, history, acc
