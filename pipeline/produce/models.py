"""Float Keras architectures, built with `tf_keras` (Keras 2) so that QAT can annotate them."""

from __future__ import annotations

from typing import Any

from pipeline.config import MobileNetV2Config, ModelConfig, ResnetSmallConfig, SmallCnnConfig
from pipeline.tfcompat import import_tf


def small_cnn(cfg: SmallCnnConfig, input_shape: tuple[int, ...], num_classes: int) -> Any:
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


def resnet_small(cfg: ResnetSmallConfig, input_shape: tuple[int, ...], num_classes: int) -> Any:
    """A small residual network: conv-BN-ReLU stem, then per entry of `cfg.filters` a
    residual block (two conv-BN, identity or 1x1 projection shortcut, Add, ReLU), global
    average pooling and a softmax classifier. Functional, so QAT can annotate it."""
    _, keras = import_tf()
    L = keras.layers
    inputs = keras.Input(shape=input_shape)
    x = L.Conv2D(cfg.filters[0], 3, padding="same", use_bias=False)(inputs)
    x = L.ReLU()(L.BatchNormalization()(x))
    for filters in cfg.filters:
        shortcut = x
        if shortcut.shape[-1] != filters:
            shortcut = L.BatchNormalization()(L.Conv2D(filters, 1, use_bias=False)(shortcut))
        y = L.ReLU()(L.BatchNormalization()(L.Conv2D(filters, 3, padding="same",
                                                      use_bias=False)(x)))
        y = L.BatchNormalization()(L.Conv2D(filters, 3, padding="same", use_bias=False)(y))
        x = L.ReLU()(L.Add()([shortcut, y]))
    x = L.GlobalAveragePooling2D()(x)
    if cfg.dropout > 0:
        x = L.Dropout(cfg.dropout)(x)
    outputs = L.Dense(num_classes, activation="softmax")(x)
    return keras.Model(inputs, outputs, name=cfg.name)


def mobilenet_v2(cfg: MobileNetV2Config, input_shape: tuple[int, ...], num_classes: int) -> Any:
    """Keras' MobileNetV2 (`cfg.alpha`, `cfg.weights`), built flat on the input so that QAT
    can annotate it; inputs smaller than `cfg.input_size` are upsampled by an integer factor
    (MobileNetV2 needs at least 32x32).

    Raises:
        ValueError: if `cfg.weights` is "imagenet" but the input does not have 3 channels.
    """
    import math

    _, keras = import_tf()
    L = keras.layers
    inputs = keras.Input(shape=input_shape)
    factor = max(1, math.ceil(cfg.input_size / min(input_shape[:2])))
    x = L.UpSampling2D(factor)(inputs) if factor > 1 else inputs
    if cfg.weights is not None and input_shape[-1] != 3:
        raise ValueError(f"model.weights={cfg.weights} needs 3-channel inputs, the data has "
                         f"{input_shape[-1]}; use model.weights=null")
    base = keras.applications.MobileNetV2(input_tensor=x, alpha=cfg.alpha,
                                          include_top=False, weights=cfg.weights,
                                          pooling="avg")
    outputs = L.Dense(num_classes, activation="softmax")(base.output)
    return keras.Model(inputs, outputs, name=cfg.name)


# model.arch -> builder; each has its schema in pipeline.config.MODEL_SCHEMAS (as does
# `file`, which pipeline.produce.model_store loads instead of building).
BUILDERS = {"small_cnn": small_cnn, "resnet_small": resnet_small,
            "mobilenet_v2": mobilenet_v2}


def build(cfg: ModelConfig, input_shape: tuple[int, ...], num_classes: int) -> Any:
    """Build the configured architecture.

    Raises:
        ValueError: if `cfg.arch` has no builder.
    """
    if cfg.arch not in BUILDERS:
        raise ValueError(f"model.arch: no builder for {cfg.arch!r}; valid: "
                         f"{', '.join(BUILDERS)}")
    return BUILDERS[cfg.arch](cfg, input_shape, num_classes)
