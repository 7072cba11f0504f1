"""AdaRound (imports TensorFlow): each weight rounded up or down, whichever reconstructs its
layer's output better on the calibration samples, instead of to nearest. After Nagel et al.,
"Up or Down? Adaptive Rounding for Post-Training Quantization" (ICML 2020).

Per layer, first to last, on the float model's inputs to it: a soft rounding variable per
weight (a rectified sigmoid) is trained to reconstruct the layer's output, with a
regularizer that pushes each towards 0 or 1, then made hard. The rounded kernel is stored on
the integer grid the converter or the LiteRT Quantizer will use (`Grid`), so it keeps it
exactly; a layer's result is never worse than rounding to nearest.

The model is changed in place: pass a copy (`pipeline.produce.adjust` does).
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Any

import numpy as np

from pipeline.produce.equalize import WEIGHTED, channels_out, out_view
from pipeline.tfcompat import import_tf

log = logging.getLogger(__name__)

ITERATIONS = 500            # optimizer steps per layer
SAMPLES = 128               # calibration samples whose layer inputs are reconstructed
REGULARIZATION = 0.1        # weight of the push to 0 or 1, against the output error
_ZETA, _GAMMA = 1.1, -0.1   # the rectified sigmoid's stretch (Nagel et al. 2020)


@dataclasses.dataclass(frozen=True)
class Grid:
    """The integer grid the weights will be stored on, and which layers are rounded.

    Attributes:
        bits: Weight bits (8: the converter's int8; 4 or 8: the LiteRT Quantizer's).
        per_channel: One scale per output channel, or one per tensor.
        kinds: The layer classes rounded (int4 leaves depthwise convs float: not those).
    """

    bits: int
    per_channel: bool = True
    kinds: tuple[str, ...] = WEIGHTED


def _class(layer: Any) -> str:
    return type(layer).__name__


def grid_scale(layer: Any, kernel: np.ndarray, bits: int, per_channel: bool) -> np.ndarray:
    """The step of the symmetric integer grid the weights will be stored on, broadcastable
    to the kernel: `max |W| / (2^(bits-1) - 1)` per output channel or per tensor, as both
    TFLite's converter (int8) and the LiteRT Quantizer (int4, int8) compute it."""
    view = out_view(layer, kernel)
    top = 2 ** (bits - 1) - 1
    if per_channel or _class(layer) == "Dense":
        peak = np.abs(view).reshape(-1, view.shape[-1]).max(axis=0)
    else:
        peak = np.full(view.shape[-1], np.abs(view).max())
    scale = np.where(peak > 0, peak / top, 1.0).astype(np.float32)
    return scale[:, None] if _class(layer) == "DepthwiseConv2D" else scale


def _layer_op(layer: Any) -> Any:
    """`f(x, kernel)`: the layer's linear part (no bias, no activation), in TensorFlow."""
    tf, _ = import_tf()
    cls = _class(layer)
    if cls == "Dense":
        return lambda x, k: tf.tensordot(x, k, 1)
    padding = layer.padding.upper()
    if cls == "DepthwiseConv2D":
        return lambda x, k: tf.nn.depthwise_conv2d(
            x, k, (1, *layer.strides, 1), padding, dilations=layer.dilation_rate)
    return lambda x, k: tf.nn.convolution(x, k, layer.strides, padding,
                                          dilations=layer.dilation_rate)


def adaround_layer(layer: Any, inputs: np.ndarray, bits: int, per_channel: bool,
                   iterations: int = ITERATIONS, seed: int = 0) -> dict[str, float]:
    """Round the layer's kernel up or down per weight, chosen to reconstruct its output on
    `inputs` (AdaRound: Nagel et al., "Up or Down? Adaptive Rounding for Post-Training
    Quantization", ICML 2020), and store the result on the integer grid, so the quantizer
    keeps it exactly. Returns the reconstruction error before (nearest) and after."""
    tf, keras = import_tf()
    weights = layer.get_weights()
    kernel = weights[0].astype(np.float32)
    scale = grid_scale(layer, kernel, bits, per_channel)
    top = 2 ** (bits - 1) - 1
    floor = np.floor(kernel / scale)
    rest = np.clip(kernel / scale - floor, 0.01, 0.99)
    v = tf.Variable(-np.log((_ZETA - _GAMMA) / (rest - _GAMMA) - 1).astype(np.float32))
    op = _layer_op(layer)
    x_all = tf.constant(inputs.astype(np.float32))
    k_float, k_floor, k_scale = (tf.constant(a.astype(np.float32)) for a in
                                 (kernel, floor, np.broadcast_to(scale, kernel.shape)))
    target_all = op(x_all, k_float)
    optimizer = keras.optimizers.Adam(1e-2)
    optimizer.build([v])

    def quantized(h: Any) -> Any:
        return k_scale * tf.clip_by_value(k_floor + h, -top - 1, top)

    def soft() -> Any:
        return tf.clip_by_value(tf.sigmoid(v) * (_ZETA - _GAMMA) + _GAMMA, 0.0, 1.0)

    @tf.function
    def step(x: Any, target: Any, beta: Any, weight: Any) -> Any:
        with tf.GradientTape() as tape:
            h = soft()
            rec = tf.reduce_mean(tf.square(op(x, quantized(h)) - target)) / norm
            reg = tf.reduce_mean(1.0 - tf.pow(tf.abs(2.0 * h - 1.0), beta))
            loss = rec + weight * reg
        optimizer.apply_gradients([(tape.gradient(loss, v), v)])
        return rec

    def error(k: Any) -> float:
        return float(tf.reduce_mean(tf.square(op(x_all, k) - target_all)))

    nearest = error(quantized(tf.constant(np.clip(np.round(kernel / scale) - floor, 0, 1)
                                          .astype(np.float32))))
    rng = np.random.default_rng(seed)
    batch = min(32, len(inputs))
    warmup = iterations // 5
    norm = tf.constant(max(nearest, 1e-12), tf.float32)  # the loss in units of nearest's
    weight = tf.constant(REGULARIZATION, tf.float32)
    for i in range(iterations):
        pick = rng.choice(len(inputs), batch, replace=False)
        frac = max(0.0, (i - warmup) / max(1, iterations - warmup))
        beta = tf.constant(20.0 - 18.0 * frac, tf.float32)
        step(tf.gather(x_all, pick), tf.gather(target_all, pick), beta,
             weight if i >= warmup else tf.constant(0.0))
    hard = tf.cast(v >= 0, tf.float32)
    rounded = quantized(hard).numpy()
    after = error(tf.constant(rounded))
    if after > nearest:  # never worse than rounding to nearest
        rounded = quantized(tf.constant(np.clip(np.round(kernel / scale) - floor, 0, 1)
                                        .astype(np.float32))).numpy()
        after = nearest
    layer.set_weights([rounded.astype(weights[0].dtype), *weights[1:]])
    return {"nearest": nearest, "adaround": after}


def adaround(model: Any, samples: np.ndarray, grid: Grid,
             iterations: int = ITERATIONS) -> list[dict[str, Any]]:
    """AdaRound every conv and dense layer of `grid.kinds`, first to last, on the float
    model's inputs to each (`samples`: calibration samples); the weights end on the grid.

    Returns:
        Per layer rounded: `{"layer", "nearest", "adaround"}`, its output's reconstruction
        error rounded to nearest and AdaRounded.
    """
    _, keras = import_tf()
    samples = samples[:SAMPLES]
    targets = [layer for layer in model.layers
               if _class(layer) in grid.kinds and channels_out(layer) is not None
               and getattr(layer, "groups", 1) == 1]
    rows = []
    for index, layer in enumerate(targets):
        inputs = keras.Model(model.inputs, layer.input)(samples, training=False).numpy()
        errors = adaround_layer(layer, inputs, grid.bits, grid.per_channel, iterations,
                                seed=index)
        rows.append({"layer": layer.name, **errors})
        log.info("adaround %d/%d %s: output error %.3g -> %.3g", index + 1, len(targets),
                 layer.name, errors["nearest"], errors["adaround"])
    return rows
