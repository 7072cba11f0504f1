"""Train the float Keras model and save it with its training history."""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

from pipeline.produce import models
from pipeline.tfcompat import import_tf
from pipeline.config import ModelConfig, TrainConfig
from pipeline.data import Dataset

log = logging.getLogger(__name__)

EVAL_BATCH = 256  # samples per batch when Keras evaluates (validation, test accuracy)
RECALIBRATE = 1000  # training samples batch-norm statistics are re-estimated on
RECALIBRATE_BATCH = 100  # of them at a time


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


def reestimate_batch_norms(model: Any, x: Any, count: int = RECALIBRATE) -> int:
    """Set every batch norm's moving statistics to the trained weights' own, from one pass
    over `count` training samples in training mode, batch by batch, with each batch's
    momentum set so that the result is the average over the batches; returns how many.

    Keras' own architectures use momentum 0.999: after two epochs on MNIST, MobileNetV2's
    moving statistics still lag so far behind the weights that it scored 0.97 on its
    training batches and 0.11 on the validation split with them. The saved layers keep their
    momentum. A model without batch norms is untouched.
    """
    norms = [layer for layer in model._flatten_layers(include_self=False)
             if type(layer).__name__ == "BatchNormalization"]
    if not norms:
        return 0
    momenta = [layer.momentum for layer in norms]
    try:
        for i, start in enumerate(range(0, min(count, len(x)), RECALIBRATE_BATCH)):
            for layer in norms:  # new = m * old + (1 - m) * batch: a running mean
                layer.momentum = i / (i + 1)
            model(np.asarray(x[start:min(start + RECALIBRATE_BATCH, count)], np.float32),
                  training=True)
    finally:
        for layer, momentum in zip(norms, momenta):
            layer.momentum = momentum
    return len(norms)


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
    norms = reestimate_batch_norms(model, ds.x_train)
    if norms:
        _, val = model.evaluate(batches(ds.x_val, ds.y_val, EVAL_BATCH), verbose=0)
        log.info("batch-norm statistics of %d layers re-estimated on %d training samples: "
                 "validation accuracy %.4f (%.4f with the moving statistics)", norms,
                 min(RECALIBRATE, len(ds.x_train)), val, history["val_accuracy"][-1])
    acc = test_accuracy(model, ds)
    log.info("float Keras model: test accuracy %.4f", acc)
    return model, history, acc
