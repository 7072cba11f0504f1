"""Float Keras architectures, built with `tf_keras` (Keras 2) so that QAT can annotate them."""

from __future__ import annotations

from typing import Any

from pipeline.config import ModelConfig
from pipeline.tfcompat import import_tf


def small_cnn(cfg: ModelConfig, input_shape: tuple[int, ...], num_classes: int) -> Any:
    """Conv(3x3, relu) per entry of `cfg.filters`, max-pool after the first, then
    dense(relu) and a softmax classifier.

    Args:
        cfg: Model config (filters, dense_units, dropout).
        input_shape: One sample's shape, `(height, width, channels)`.
        num_classes: Output width.

    Returns:
        An uncompiled `tf_keras.Sequential`.
    """
    _, keras = import_tf()
    layers: list[Any] = [keras.Input(shape=input_shape)]
    for i, filters in enumerate(cfg.filters):
        layers.append(keras.layers.Conv2D(filters, 3, padding="same", activation="relu"))
        if i == 0:
            layers.append(keras.layers.MaxPooling2D(2))
    layers.append(keras.layers.Flatten())
    layers.append(keras.layers.Dense(cfg.dense_units, activation="relu"))
    if cfg.dropout > 0:
        layers.append(keras.layers.Dropout(cfg.dropout))
    layers.append(keras.layers.Dense(num_classes, activation="softmax"))
    return keras.Sequential(layers, name=cfg.name)


BUILDERS = {"small_cnn": small_cnn}


def build(cfg: ModelConfig, input_shape: tuple[int, ...], num_classes: int) -> Any:
    """Build the configured architecture.

    Raises:
        ValueError: if `cfg.name` is not a known architecture.
    """
    if cfg.name not in BUILDERS:
        raise ValueError(f"model.name: unknown model {cfg.name!r}; valid: {', '.join(BUILDERS)}")
    return BUILDERS[cfg.name](cfg, input_shape, num_classes)
