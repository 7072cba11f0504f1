"""Train the float Keras model and save it with its training history."""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

from pipeline.build import models
from pipeline.build.tfcompat import import_tf
from pipeline.config import ModelConfig, TrainConfig
from pipeline.data import Dataset

log = logging.getLogger(__name__)

EVAL_BATCH = 256  # samples per batch when Keras evaluates (validation, test accuracy)


def compile_model(model: Any, learning_rate: float) -> None:
    """Compile for integer labels with Adam."""
    _, keras = import_tf()
    model.compile(optimizer=keras.optimizers.Adam(learning_rate),
                  loss="sparse_categorical_crossentropy", metrics=["accuracy"])


def batches(x: Any, y: np.ndarray, batch_size: int, shuffle: bool = False,
            seed: int = 0) -> Any:
    """A `tf_keras.utils.Sequence` over `(x, y)`: each batch is read when Keras asks for it
    (`x` may be a stored split, `pipeline.data.Images`), so the split never has to fit in
    memory. With `shuffle`, the order is a seeded permutation, new every epoch."""
    _, keras = import_tf()

    class Batches(keras.utils.Sequence):
        def __init__(self) -> None:
            super().__init__()
            self.rng = np.random.default_rng(seed)
            self.order = np.arange(len(y))
            if shuffle:
                self.rng.shuffle(self.order)

        def __len__(self) -> int:
            return -(-len(y) // batch_size)

        def __getitem__(self, i: int) -> tuple[np.ndarray, np.ndarray]:
            idx = np.sort(self.order[i * batch_size:(i + 1) * batch_size])  # reads in order
            return np.asarray(x[idx], np.float32), np.asarray(y[idx])

        def on_epoch_end(self) -> None:
            if shuffle:
                self.rng.shuffle(self.order)

    return Batches()


def fit(model: Any, ds: Dataset, epochs: int, batch_size: int, seed: int = 0
        ) -> dict[str, list[float]]:
    """Fit on the training split in shuffled batches, validate on the validation split.

    Returns:
        Per-epoch history: `loss`, `accuracy`, `val_loss`, `val_accuracy`.
    """
    history = model.fit(batches(ds.x_train, ds.y_train, batch_size, shuffle=True, seed=seed),
                        validation_data=batches(ds.x_val, ds.y_val, EVAL_BATCH),
                        epochs=epochs, shuffle=False, verbose=2)
    return {k: [float(v) for v in vs] for k, vs in history.history.items()}


def test_accuracy(model: Any, ds: Dataset) -> float:
    """Top-1 accuracy of a Keras model on the test split, batch by batch."""
    _, acc = model.evaluate(batches(ds.x_test, ds.y_test, EVAL_BATCH), verbose=0)
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
    history = fit(model, ds, cfg.epochs, cfg.batch_size, seed)
    acc = test_accuracy(model, ds)
    log.info("float Keras model: test accuracy %.4f", acc)
    return model, history, acc
