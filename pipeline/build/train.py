"""Train the float Keras model and save it with its training history."""

from __future__ import annotations

import logging
from typing import Any

from pipeline.build import models
from pipeline.config import ModelConfig, TrainConfig
from pipeline.data import Dataset
from pipeline.build.tfcompat import import_tf

log = logging.getLogger(__name__)


def compile_model(model: Any, learning_rate: float) -> None:
    """Compile for integer labels with Adam."""
    _, keras = import_tf()
    model.compile(optimizer=keras.optimizers.Adam(learning_rate),
                  loss="sparse_categorical_crossentropy", metrics=["accuracy"])


def fit(model: Any, ds: Dataset, epochs: int, batch_size: int) -> dict[str, list[float]]:
    """Fit on the training split, validate on the validation split.

    Returns:
        Per-epoch history: `loss`, `accuracy`, `val_loss`, `val_accuracy`.
    """
    history = model.fit(ds.x_train, ds.y_train, validation_data=(ds.x_val, ds.y_val),
                        epochs=epochs, batch_size=batch_size, shuffle=True, verbose=2)
    return {k: [float(v) for v in vs] for k, vs in history.history.items()}


def test_accuracy(model: Any, ds: Dataset) -> float:
    """Top-1 accuracy of a Keras model on the test split."""
    _, acc = model.evaluate(ds.x_test, ds.y_test, verbose=0)
    return float(acc)


def train(ds: Dataset, model_cfg: ModelConfig, cfg: TrainConfig, seed: int
          ) -> tuple[Any, dict[str, list[float]], float]:
    """Build, compile and train the float model.

    Returns:
        `(model, history, test_accuracy)`.
    """
    import_tf(seed)
    model = models.build(model_cfg, ds.input_shape, ds.num_classes)
    compile_model(model, cfg.learning_rate)
    log.info("training %s for %d epochs on %d samples", model_cfg.name, cfg.epochs,
             len(ds.x_train))
    history = fit(model, ds, cfg.epochs, cfg.batch_size)
    acc = test_accuracy(model, ds)
    log.info("float Keras model: test accuracy %.4f", acc)
    return model, history, acc
