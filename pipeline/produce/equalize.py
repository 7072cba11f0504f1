"""Adjust a Keras model's weights for quantization before it is converted (imports
TensorFlow): batch-norm folding, cross-layer equalization and bias correction, after Nagel
et al., "Data-Free Quantization through Weight Equalization and Bias Correction" (ICCV 2019).

- Folding: a batch norm right after a conv or dense layer is merged into its weights; the
  batch norm is left as a per-channel shift (its `beta`), which the converter folds again.
- Equalization: for two weight layers in a chain with nothing but positively homogeneous
  layers between them (ReLU, max/average pooling, padding, flatten, dropout), output channel
  `c` of the first is divided by `s_c` and input channel `c` of the second multiplied by it,
  with `s_c = sqrt(r1_c * r2_c) / r2_c` (`r`: the channel's largest absolute weight), so both
  end with the range `sqrt(r1_c * r2_c)`. The function is unchanged (up to float rounding);
  per-tensor int8, which one scale must fit every channel, loses much less.
- ReLU6 is not homogeneous (`min(x / s, 6) != min(x, 6) / s`): like the paper and AIMET, an
  equalized model's ReLU6 become ReLU. That changes the float function; the record counts
  them and the variant's accuracy is measured as always.
- Bias correction (empirical): quantizing weights shifts each output's mean by
  `(W_q - W) E[x]`; with `E[x]` measured per input channel on the calibration samples, the
  layer's bias (or its batch norm's shift) is moved back by that much, with `W_q` simulated
  as the converter will quantize (symmetric int8, per tensor or per channel).

AdaRound, the other change to the weights before conversion, is `pipeline.produce.adaround`;
`pipeline.produce.adjust` applies what a variant asks for. The model is changed in place:
pass a copy (`load` gives a fresh one per call).
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Any

import numpy as np

from pipeline.tfcompat import import_tf

log = logging.getLogger(__name__)

PASSES = 4  # equalization sweeps over all pairs; ranges settle within a few
# Layers a channel scale passes through unchanged: f(x / s) = f(x) / s per channel, s > 0.
HOMOGENEOUS = ("MaxPooling2D", "AveragePooling2D", "GlobalAveragePooling2D",
               "GlobalMaxPooling2D", "ZeroPadding2D", "Dropout", "Flatten", "ReLU",
               "LeakyReLU", "Activation")
WEIGHTED = ("Conv2D", "DepthwiseConv2D", "Dense")


@dataclasses.dataclass
class Report:
    """What adjusting the weights changed, for the variant's record and `equalization.csv`."""

    folded: int = 0                      # batch norms folded into the layer before them
    relu6_replaced: int = 0              # ReLU6 made ReLU so that scales pass through
    pairs: list[tuple[str, str]] = dataclasses.field(default_factory=list)
    corrected: int = 0                   # layers whose bias was corrected
    rows: list[dict[str, Any]] = dataclasses.field(default_factory=list)  # per layer
    # Each folded layer's name -> its batch norm, which now holds the layer's shift.
    norms: dict[str, Any] = dataclasses.field(default_factory=dict, repr=False)

    def summary(self) -> dict[str, Any]:
        return {"batch_norms_folded": self.folded, "relu6_replaced": self.relu6_replaced,
                "pairs_equalized": len(self.pairs), "biases_corrected": self.corrected}


def _class(layer: Any) -> str:
    return type(layer).__name__


def _consumers(model: Any) -> dict[str, list[Any]]:
    """Each layer's name -> the layers of `model` that take its output."""
    out: dict[str, list[Any]] = {layer.name: [] for layer in model.layers}
    for layer in model.layers:
        for node in layer._inbound_nodes:  # tf_keras' graph; public configs lose objects
            inbound = node.inbound_layers
            for parent in inbound if isinstance(inbound, (list, tuple)) else [inbound]:
                if parent.name in out and layer not in out[parent.name]:
                    out[parent.name].append(layer)
    return out


def _kernel(layer: Any) -> np.ndarray:
    return layer.get_weights()[0]


def channels_out(layer: Any) -> int | None:
    """Output channels of a weight layer, or None if channel scales cannot map onto it
    (AdaRound rounds only the layers that have them)."""
    k = _kernel(layer)
    if _class(layer) == "DepthwiseConv2D":
        return k.shape[2] if k.shape[3] == 1 else None
    return k.shape[-1]


def _passes(layer: Any, relu6: bool) -> tuple[bool, bool]:
    """Whether the layer's activation lets a positive channel scale through, and whether it
    must become a plain ReLU for that (a ReLU6, allowed when `relu6`)."""
    cls = _class(layer)
    if cls == "ReLU":
        if float(layer.threshold) != 0.0:
            return False, False
        if layer.max_value is not None:
            return relu6, True
        return True, False
    if cls == "LeakyReLU":
        return True, False
    activation = getattr(layer, "activation", None)
    if activation is None:
        return True, False
    name = getattr(activation, "__name__", "")
    if name in ("linear", "relu"):
        return True, False
    if name == "relu6":
        return relu6, True
    return False, False


def _make_relu(layer: Any) -> None:
    """A ReLU6 (layer or a layer's activation) made a plain ReLU."""
    if _class(layer) == "ReLU":
        layer.max_value = None
        return
    _, keras = import_tf()
    layer.activation = keras.activations.relu


def fold_batch_norms(model: Any, report: Report) -> dict[str, Any]:
    """Fold each batch norm that is the only consumer of a conv or dense layer into its
    weights. Returns each folded layer's name -> its batch norm (which now holds the shift),
    also kept in `report.norms`."""
    consumers = _consumers(model)
    folded = {}
    for layer in model.layers:
        if _class(layer) not in WEIGHTED or channels_out(layer) is None:
            continue
        after = consumers[layer.name]
        if len(after) != 1 or _class(after[0]) != "BatchNormalization":
            continue
        bn = after[0]
        if getattr(layer, "activation", None) is not None and \
                getattr(layer.activation, "__name__", "linear") != "linear":
            continue
        axis = bn.axis if isinstance(bn.axis, int) else bn.axis[0]
        if axis not in (-1, len(bn.input_shape) - 1):
            continue
        gamma, beta, mean, var = _bn_params(bn)
        scale = gamma / np.sqrt(var + bn.epsilon)
        weights = layer.get_weights()
        kernel = weights[0]
        kernel = kernel * (scale[:, None] if _class(layer) == "DepthwiseConv2D" else scale)
        bias = weights[1] if layer.use_bias else np.zeros_like(beta)
        shift = beta + (bias - mean) * scale
        layer.set_weights([kernel, np.zeros_like(bias)] if layer.use_bias else [kernel])
        _set_shift(bn, shift)
        folded[layer.name] = bn
        report.folded += 1
    report.norms.update(folded)
    return folded


def _bn_params(bn: Any) -> tuple[np.ndarray, ...]:
    values = {w.name.split("/")[-1].split(":")[0]: w.numpy() for w in bn.weights}
    n = values["moving_mean"].shape[0]
    gamma = values.get("gamma", np.ones(n, np.float32))
    beta = values.get("beta", np.zeros(n, np.float32))
    return gamma, beta, values["moving_mean"], values["moving_variance"]


def _set_shift(bn: Any, shift: np.ndarray) -> None:
    """Make `bn` compute `x + shift` exactly: mean 0, and gamma / sqrt(var + eps) = 1."""
    for w in bn.weights:
        key = w.name.split("/")[-1].split(":")[0]
        n = w.shape[0]
        value = {"gamma": np.full(n, np.sqrt(1.0 + bn.epsilon)), "beta": shift,
                 "moving_mean": np.zeros(n), "moving_variance": np.ones(n)}[key]
        w.assign(np.asarray(value, w.dtype.as_numpy_dtype))


def _bias(layer: Any, folded: dict[str, Any]) -> tuple[np.ndarray | None, Any]:
    """The layer's effective bias and where it lives (the layer, or its folded batch norm)."""
    if layer.name in folded:
        return _bn_params(folded[layer.name])[1], folded[layer.name]
    if getattr(layer, "use_bias", False):
        return layer.get_weights()[1], layer
    return None, None


def _set_bias(holder: Any, value: np.ndarray) -> None:
    if _class(holder) == "BatchNormalization":
        _set_shift(holder, value)
    else:
        weights = holder.get_weights()
        holder.set_weights([weights[0], value.astype(weights[1].dtype)])


def find_pairs(model: Any, folded: dict[str, Any], replace_relu6: bool,
               report: Report) -> list[tuple[Any, Any, int]]:
    """Chains `first -> [homogeneous layers] -> second` where a channel scale passes from
    the first weight layer to the second; each with how many times the first's channels
    repeat along the second's input (flatten: the spatial positions)."""
    consumers = _consumers(model)
    pairs: list[tuple[Any, Any, int]] = []
    relus: set[str] = set()
    for layer in model.layers:
        if _class(layer) not in WEIGHTED or channels_out(layer) is None or \
                len(layer._inbound_nodes) != 1:
            continue
        ok, replace = _passes(layer, replace_relu6)
        if not ok:
            continue
        to_replace = [layer] if replace else []
        node = folded.get(layer.name, layer)
        flatten = False
        while True:
            after = consumers[node.name]
            if len(after) != 1:
                break
            node = after[0]
            cls = _class(node)
            if cls in WEIGHTED:
                channels, inputs = channels_out(layer), _in_channels(node)
                if inputs is None or channels_out(node) is None or \
                        len(node._inbound_nodes) != 1:
                    break
                repeat = inputs // channels if cls == "Dense" and flatten else 1
                if inputs == channels * repeat:
                    pairs.append((layer, node, repeat))
                    for x in to_replace:
                        _make_relu(x)
                    relus.update(x.name for x in to_replace)
                break
            ok, replace = _passes(node, replace_relu6) if cls in HOMOGENEOUS else (False, False)
            if not ok:
                break
            if replace:
                to_replace.append(node)
            flatten = flatten or cls == "Flatten"
    report.relu6_replaced = len(relus)
    return pairs


def _in_channels(layer: Any) -> int | None:
    k = _kernel(layer)
    return k.shape[0] if _class(layer) == "Dense" else k.shape[2]


def out_view(layer: Any, kernel: np.ndarray) -> np.ndarray:
    """The kernel as (..., out channel) for per-output-channel ranges and scales."""
    if _class(layer) == "DepthwiseConv2D":
        return kernel[..., 0]
    return kernel


def _in_view(layer: Any, kernel: np.ndarray, repeat: int) -> np.ndarray:
    """The kernel as (..., in channel, out) with the in channel on axis -2."""
    if _class(layer) == "Dense":
        return kernel.reshape(repeat, kernel.shape[0] // repeat, kernel.shape[1])
    return kernel  # conv (kh, kw, in, out); depthwise (kh, kw, channel, 1)


def _ranges_out(layer: Any) -> np.ndarray:
    view = out_view(layer, _kernel(layer))
    return np.abs(view).reshape(-1, view.shape[-1]).max(axis=0)


def _ranges_in(layer: Any, repeat: int) -> np.ndarray:
    view = _in_view(layer, _kernel(layer), repeat)
    return np.abs(np.moveaxis(view, -2, 0)).reshape(view.shape[-2], -1).max(axis=1)


def _scale_out(layer: Any, s: np.ndarray, folded: dict[str, Any]) -> None:
    """Divide output channel c of `layer` (and its bias) by s[c]."""
    weights = layer.get_weights()
    if _class(layer) == "DepthwiseConv2D":
        weights[0] = weights[0] / s[:, None]
    else:
        weights[0] = weights[0] / s
    if getattr(layer, "use_bias", False):
        weights[1] = weights[1] / s
    layer.set_weights(weights)
    if layer.name in folded:
        bn = folded[layer.name]
        _set_shift(bn, _bn_params(bn)[1] / s)


def _scale_in(layer: Any, s: np.ndarray, repeat: int) -> None:
    """Multiply input channel c of `layer` by s[c]."""
    weights = layer.get_weights()
    k = weights[0]
    if _class(layer) == "Dense":
        weights[0] = (k.reshape(repeat, k.shape[0] // repeat, k.shape[1])
                      * s[None, :, None]).reshape(k.shape)
    else:  # conv (kh, kw, in, out), depthwise (kh, kw, channel, 1): in channel on axis -2
        weights[0] = k * s[:, None]
    layer.set_weights(weights)


def equalize(model: Any, replace_relu6: bool = True, passes: int = PASSES) -> Report:
    """Fold batch norms and equalize every pair of weight layers a scale passes between.

    Returns:
        What changed, with each equalized layer's channel ranges before and after
        (`Report.rows`: the spread max/min of its per-channel weight ranges).
    """
    report = Report()
    folded = fold_batch_norms(model, report)
    pairs = find_pairs(model, folded, replace_relu6, report)
    before = {layer.name: _ranges_out(layer) for pair in pairs for layer in pair[:2]}
    for _ in range(passes):
        for first, second, repeat in pairs:
            r1, r2 = _ranges_out(first), _ranges_in(second, repeat)
            s = np.ones_like(r1)
            ok = (r1 > 0) & (r2 > 0)
            s[ok] = np.sqrt(r1[ok] * r2[ok]) / r2[ok]
            _scale_out(first, s, folded)
            _scale_in(second, s, repeat)
    report.pairs = [(a.name, b.name) for a, b, _ in pairs]
    for name, ranges in before.items():
        after = _ranges_out(model.get_layer(name))
        report.rows.append({
            "layer": name, "channels": len(ranges),
            "range_max_before": float(ranges.max()), "range_min_before": float(ranges.min()),
            "range_max_after": float(after.max()), "range_min_after": float(after.min()),
            "spread_before": _spread(ranges), "spread_after": _spread(after)})
    log.info("equalization: %d batch norms folded, %d pairs equalized, %d ReLU6 made ReLU",
             report.folded, len(pairs), report.relu6_replaced)
    return report


def _spread(ranges: np.ndarray) -> float:
    """Largest channel range over the smallest non-zero one: what a per-tensor scale pays."""
    nonzero = ranges[ranges > 0]
    return float(nonzero.max() / nonzero.min()) if len(nonzero) else 1.0


def simulate_int8(layer: Any, kernel: np.ndarray, per_channel: bool) -> np.ndarray:
    """The kernel as the converter stores it: symmetric int8 in [-127, 127], one scale per
    tensor or per output channel (dense layers keep per-channel scales either way)."""
    view = out_view(layer, kernel)
    if per_channel or _class(layer) == "Dense":
        peak = np.abs(view).reshape(-1, view.shape[-1]).max(axis=0)
    else:
        peak = np.abs(view).max()
    scale = np.where(peak > 0, peak / 127.0, 1.0)
    quantized = np.clip(np.round(view / scale), -127, 127) * scale
    return quantized.reshape(kernel.shape)


def correct_biases(model: Any, samples: np.ndarray, per_channel: bool,
                   report: Report | None = None, batch: int = 64) -> Report:
    """Move each conv and dense layer's bias by minus the mean shift its weight quantization
    causes, `(W_q - W) E[x]`, with `E[x]` per input channel over `samples` (float model)."""
    _, keras = import_tf()
    report = report or Report()
    folded = report.norms
    targets = [layer for layer in model.layers
               if _class(layer) in WEIGHTED and channels_out(layer) is not None
               and _bias(layer, folded)[1] is not None]
    if not targets:
        return report
    probe = keras.Model(model.inputs, [layer.input for layer in targets])
    sums: list[np.ndarray] = [np.zeros(0)] * len(targets)
    count = 0
    for i in range(0, len(samples), batch):
        outs = probe(samples[i:i + batch], training=False)
        outs = outs if isinstance(outs, (list, tuple)) else [outs]
        for j, x in enumerate(outs):
            x = np.asarray(x, np.float64)
            total = x.reshape(-1, x.shape[-1]).sum(axis=0)
            per_sample = x.size // (x.shape[0] * x.shape[-1])
            sums[j] = total / per_sample if not sums[j].size else sums[j] + total / per_sample
        count += len(samples[i:i + batch])
    for layer, total in zip(targets, sums):
        mean_x = total / count
        kernel = _kernel(layer)
        error = simulate_int8(layer, kernel, per_channel) - kernel
        if _class(layer) == "Dense":
            shift = mean_x @ error
        elif _class(layer) == "DepthwiseConv2D":
            shift = error[..., 0].sum(axis=(0, 1)) * mean_x
        else:
            shift = np.einsum("hwio,i->o", error, mean_x)
        bias, holder = _bias(layer, folded)
        _set_bias(holder, (bias - shift).astype(np.float32))
        report.corrected += 1
    log.info("bias correction: %d layers corrected on %d samples", report.corrected, count)
    return report
