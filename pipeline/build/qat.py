"""Quantization-aware fine-tuning with tensorflow-model-optimization (Keras 2 only)."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator, Sequence
from typing import Any

from pipeline.config import QatConfig
from pipeline.data import Dataset
from pipeline.build.tfcompat import import_tf
from pipeline.build.train import compile_model, fit, test_accuracy

log = logging.getLogger(__name__)


class QatUnsupported(Exception):
    """tensorflow-model-optimization cannot annotate this model (the message says why)."""


@contextlib.contextmanager
def _refusals_as_unsupported() -> Iterator[None]:
    """tfmot refuses a model it cannot annotate with ValueError, RuntimeError or TypeError."""
    try:
        yield
    except (ValueError, RuntimeError, TypeError) as exc:
        raise QatUnsupported(f"tfmot cannot annotate the model: {exc}") from exc


def annotate(float_model: Any, layers: Sequence[str]) -> Any:
    """Wrap the float model for QAT: every layer, or only those named in `layers`.

    Args:
        float_model: A Sequential or Functional `tf_keras` model.
        layers: Layer names or class names (e.g. `Dense`); empty for the whole model.

    Returns:
        The QAT model (fake-quantization inserted), sharing the float model's weights.

    Raises:
        ValueError: if an entry of `layers` matches no layer of the model.
        QatUnsupported: if tfmot cannot annotate the model (a layer it does not support, a
            nested model).
    """
    _, keras = import_tf()
    import tensorflow_model_optimization as tfmot

    qk = tfmot.quantization.keras
    if not layers:
        with _refusals_as_unsupported():
            return qk.quantize_model(float_model)
    known = {l.name for l in float_model.layers} | {type(l).__name__ for l in float_model.layers}
    unknown = sorted(set(layers) - known)
    if unknown:
        raise ValueError(f"qat.layers: {', '.join(unknown)} match no layer of the model; "
                         f"valid: {', '.join(sorted(known))}")

    def wrap(layer: Any) -> Any:
        if layer.name in layers or type(layer).__name__ in layers:
            return qk.quantize_annotate_layer(layer)
        return layer

    with _refusals_as_unsupported():
        annotated = keras.models.clone_model(float_model, clone_function=wrap)
        annotated.set_weights(float_model.get_weights())
        with qk.quantize_scope():
            return qk.quantize_apply(annotated)


def fine_tune(float_model: Any, ds: Dataset, cfg: QatConfig, seed: int
              ) -> tuple[Any, dict[str, list[float]], float]:
    """Annotate the float model for QAT (all of it, or `cfg.layers`) and fine-tune it.

    Returns:
        `(qat_model, history, test_accuracy)`; the history is empty when `cfg.epochs` is 0.
    """
    import_tf(seed)
    qat_model = annotate(float_model, cfg.layers)
    compile_model(qat_model, cfg.learning_rate)
    history: dict[str, list[float]] = {}
    if cfg.epochs > 0:
        log.info("QAT fine-tuning for %d epochs", cfg.epochs)
        history = fit(qat_model, ds, cfg.epochs, cfg.batch_size, seed)
    acc = test_accuracy(qat_model, ds)
    log.info("QAT Keras model: test accuracy %.4f", acc)
    return qat_model, history, acc
