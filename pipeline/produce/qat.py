"""Quantization-aware fine-tuning with tensorflow-model-optimization (Keras 2 only), on the
models people actually ship: QAT wherever tfmot can give it, even on part of the model.

tfmot's `quantize_model` annotates every layer and refuses the whole model when one layer
is not in its registry (EfficientNet's `Rescaling`, a BatchNormalization after a pooling
layer) or breaks on op layers (MobileNetV3's hard-swish is built from `TFOpLambda` layers,
and cloning an annotated one fails). So when the whole model cannot be annotated, the lab
does what the field does by hand: it annotates only the layers tfmot supports, leaves the
rest in float, and records which layers were skipped and why, and what share of the weights
the annotated layers hold (the QAT coverage).

Every call into tfmot or Keras here is a boundary: whatever they raise on the user's model
becomes `QatUnsupported` with a one-line reason, never the pipeline's crash.
"""

from __future__ import annotations

import collections
import contextlib
import logging
import re
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from pipeline.tfcompat import import_tf
from pipeline.produce.train import compile_model, fit, test_accuracy
from pipeline.config import QatConfig
from pipeline.data import Dataset

log = logging.getLogger(__name__)

MAX_RETRIES = 50  # layers quantize_apply may still refuse after the registry said yes
# Activations tfmot's QuantizeAwareActivation accepts inside a layer, and the ones its
# Activation-layer config accepts (quantize_aware_activation.py, default_8bit registry).
LAYER_ACTIVATIONS = {"softmax", "sigmoid", "tanh", "gelu", "linear", "relu", "swish"}
ACTIVATION_LAYERS = {"relu", "swish", "gelu", "relu6", "linear", "softmax", "sigmoid", "tanh"}


class QatUnsupported(Exception):
    """QAT is not possible for this model (the message says why, in one line)."""


def one_line(exc: BaseException, limit: int = 300) -> str:
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text[:limit]}{'...' if len(text) > limit else ''}"


@contextlib.contextmanager
def third_party(what: str) -> Iterator[None]:
    """Whatever tfmot or Keras raises on the user's model inside the block becomes
    `QatUnsupported(what: reason)`: any exception type (MobileNetV3 gives an AttributeError,
    EfficientNet a RuntimeError, ConvNeXt a ValueError)."""
    try:
        yield
    except QatUnsupported:
        raise
    except Exception as exc:  # the boundary: their failure, not the lab's
        raise QatUnsupported(f"{what}: {one_line(exc)}") from exc


def _activation(layer: Any) -> str:
    act = getattr(layer, "activation", None)
    return getattr(act, "__name__", type(act).__name__)


def _inbound(layer: Any) -> list[Any] | None:
    import tensorflow as tf

    if len(layer._inbound_nodes) != 1:  # noqa: SLF001 (no public API for a layer's inputs)
        return None
    return tf.nest.flatten(layer._inbound_nodes[0].inbound_layers)  # noqa: SLF001


def why_not(layer: Any) -> str | None:
    """Why tfmot's default 8-bit scheme cannot annotate `layer`, or None if it can (counting
    what `quantize_apply`'s transforms handle: SeparableConv2D is split, a BatchNormalization
    right after a linear conv or dense layer is folded into it)."""
    _, keras = import_tf()
    from tensorflow_model_optimization.python.core.quantization.keras.default_8bit import (
        default_8bit_quantize_registry as registry_module)

    L = keras.layers
    name = type(layer).__name__
    if isinstance(layer, keras.Model):
        return "a nested model (its layers are annotated instead)"
    if name == "TFOpLambda":
        return "an op layer (tf.* call): tfmot cannot clone it once annotated"
    supported = registry_module.Default8BitQuantizeRegistry().supports(layer)
    if not supported and isinstance(layer, L.SeparableConv2D):
        supported = True  # quantize_apply splits it into a depthwise and a pointwise conv
    if not supported and isinstance(layer, L.BatchNormalization):
        inbound = _inbound(layer)
        linear = (L.Conv2D, L.DepthwiseConv2D, L.SeparableConv2D, L.Dense)
        if inbound and len(inbound) == 1 and isinstance(inbound[0], linear) \
                and _activation(inbound[0]) == "linear":
            supported = True  # folded into the layer before it
        else:
            return "BatchNormalization that does not follow a linear conv or dense layer"
    if not supported:
        return f"not in tfmot's 8-bit registry ({name})"
    if isinstance(layer, L.Activation) and _activation(layer) not in ACTIVATION_LAYERS:
        return (f"activation {_activation(layer)} (tfmot quantizes "
                f"{', '.join(sorted(ACTIVATION_LAYERS))})")
    if hasattr(layer, "activation") and not isinstance(layer, (L.Activation,
                                                                L.BatchNormalization)) \
            and _activation(layer) not in LAYER_ACTIVATIONS:
        return f"activation {_activation(layer)} inside the layer"
    return None


def leaf_layers(model: Any) -> list[Any]:
    """Every layer, nested models opened, input layers left out."""
    _, keras = import_tf()
    out: list[Any] = []
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            out += leaf_layers(layer)
        elif not isinstance(layer, keras.layers.InputLayer):
            out.append(layer)
    return out


def retrace(model: Any, wrap: Callable[[Any], Any]) -> Any:
    """The same Functional model rebuilt by calling its own layers again on new inputs,
    nested models inlined, with `wrap(layer)` called in each layer's place (an annotation
    wrapper, or the layer itself). Unlike `clone_model` there is no config round trip, so op
    layers (`TFOpLambda`) keep their inputs as they were."""
    import tensorflow as tf

    _, keras = import_tf()

    def run(m: Any, inputs: Any) -> Any:
        tensors: dict[int, Any] = {}
        for old, new in zip(tf.nest.flatten(m.inputs), tf.nest.flatten(inputs)):
            tensors[id(old)] = new
        for depth in sorted(m._nodes_by_depth, reverse=True):  # noqa: SLF001
            for node in m._nodes_by_depth[depth]:  # noqa: SLF001
                layer = node.layer
                if node.is_input or isinstance(layer, keras.layers.InputLayer):
                    continue
                swap = lambda t: tensors.get(id(t), t)  # noqa: E731
                args = tf.nest.map_structure(swap, node.call_args)
                kwargs = tf.nest.map_structure(swap, node.call_kwargs)
                out = run(layer, args[0]) if isinstance(layer, keras.Model) \
                    else wrap(layer)(*args, **kwargs)
                for old, new in zip(tf.nest.flatten(node.outputs), tf.nest.flatten(out)):
                    tensors[id(old)] = new
        return tf.nest.pack_sequence_as(m.outputs,
                                        [tensors[id(t)] for t in tf.nest.flatten(m.outputs)])

    inputs = [keras.Input(batch_shape=t.shape, dtype=t.dtype, name=t.name.split(":")[0])
              for t in tf.nest.flatten(model.inputs)]
    outputs = run(model, inputs if len(inputs) > 1 else inputs[0])
    return keras.Model(inputs if len(inputs) > 1 else inputs[0], outputs, name=model.name)


def _apply(model: Any, names: set[str]) -> Any:
    """Annotate the layers named `names` (retraced) and let tfmot apply QAT to them."""
    import tensorflow_model_optimization as tfmot

    qk = tfmot.quantization.keras
    wrappers: dict[str, Any] = {}

    def wrap(layer: Any) -> Any:
        if layer.name not in names:
            return layer
        if layer.name not in wrappers:
            wrappers[layer.name] = qk.quantize_annotate_layer(layer)
        return wrappers[layer.name]

    annotated = retrace(model, wrap)
    with qk.quantize_scope():
        return qk.quantize_apply(annotated)


def coverage(layers: list[Any], annotated: set[str], reasons: dict[str, str],
             mode: str) -> dict[str, Any]:
    """What QAT covers: the share of the weights in annotated layers, and the skipped layer
    classes with how many, their weights and why."""
    total = sum(layer.count_params() for layer in layers) or 1
    skipped: dict[str, dict[str, Any]] = collections.defaultdict(
        lambda: {"layers": 0, "params": 0, "reason": ""})
    for layer in layers:
        if layer.name not in annotated:
            entry = skipped[type(layer).__name__]
            entry["layers"] += 1
            entry["params"] += layer.count_params()
            entry["reason"] = entry["reason"] or reasons.get(layer.name, "not selected")
    return {"mode": mode, "coverage": round(sum(layer.count_params() for layer in layers
                                                if layer.name in annotated) / total, 4),
            "annotated_layers": len(annotated), "layers": len(layers),
            "skipped": dict(sorted(skipped.items()))}


def annotate(float_model: Any, layers: Sequence[str] = ()) -> tuple[Any, dict[str, Any]]:
    """Wrap the float model for QAT: the whole model, only the layers named in `layers`, or,
    when tfmot refuses the whole model, every layer it supports.

    Args:
        float_model: A Sequential or Functional `tf_keras` model.
        layers: Layer names or class names (e.g. `Dense`); empty for the whole model.

    Returns:
        `(qat_model, coverage)`: the model with fake quantization inserted (sharing the float
        model's weights) and what it covers (`coverage()`; `mode` is `whole`, `layers` or
        `partial`, with `whole_model_error` when it fell back).

    Raises:
        ValueError: if an entry of `layers` matches no layer of the model (a config error).
        QatUnsupported: if tfmot can annotate none of it.
    """
    import tensorflow_model_optimization as tfmot

    all_layers = leaf_layers(float_model)
    if layers:
        known = {l.name for l in all_layers} | {type(l).__name__ for l in all_layers}
        unknown = sorted(set(layers) - known)
        if unknown:
            raise ValueError(f"qat.layers: {', '.join(unknown)} match no layer of the model; "
                             f"valid: {', '.join(sorted(known))}")
        names = {l.name for l in all_layers if l.name in layers or type(l).__name__ in layers}
        with third_party("tfmot cannot annotate the chosen layers"):
            return _apply(float_model, names), coverage(all_layers, names, {}, "layers")
    try:
        with third_party("tfmot cannot annotate the whole model"):
            model = tfmot.quantization.keras.quantize_model(float_model)
        return model, coverage(all_layers, {l.name for l in all_layers}, {}, "whole")
    except QatUnsupported as exc:
        whole_error = str(exc)
    log.warning("%s; annotating only the layers tfmot supports", whole_error)
    reasons = {l.name: r for l in all_layers if (r := why_not(l))}
    names = {l.name for l in all_layers} - set(reasons)
    for _ in range(MAX_RETRIES):
        if not names:
            raise QatUnsupported(f"{whole_error}; and no layer of it is one tfmot supports")
        try:
            with third_party("tfmot cannot annotate the supported layers"):
                model = _apply(float_model, names)
            break
        except QatUnsupported as exc:  # a layer the registry accepted, refused when applied
            refused = re.search(r"Layer (\S+?):<class", str(exc))
            if not refused or refused.group(1) not in names:
                raise QatUnsupported(f"{whole_error}; partial QAT failed too: {exc}") from exc
            names.discard(refused.group(1))
            reasons[refused.group(1)] = str(exc).split(": ", 1)[-1][:200]
    else:
        raise QatUnsupported(f"{whole_error}; partial QAT still refused after "
                             f"{MAX_RETRIES} layers were left out")
    info = coverage(all_layers, names, reasons, "partial")
    info["whole_model_error"] = whole_error
    log.info("partial QAT: %d of %d layers annotated, %.1f%% of the weights", len(names),
             len(all_layers), 100 * info["coverage"])
    return model, info


def fine_tune(float_model: Any, ds: Dataset, cfg: QatConfig, seed: int
              ) -> tuple[Any, dict[str, list[float]], float, dict[str, Any]]:
    """Annotate the float model for QAT (all of it, `cfg.layers`, or what tfmot supports)
    and fine-tune it.

    Returns:
        `(qat_model, history, test_accuracy, coverage)`; the history is empty when
        `cfg.epochs` is 0.

    Raises:
        QatUnsupported: with the reason, if tfmot or Keras fail on the model.
    """
    import_tf(seed)
    qat_model, info = annotate(float_model, cfg.layers)
    history: dict[str, list[float]] = {}
    with third_party("the QAT model failed in Keras"):
        compile_model(qat_model, cfg.learning_rate)
        if cfg.epochs > 0:
            log.info("QAT fine-tuning for %d epochs", cfg.epochs)
            history = fit(qat_model, ds, cfg.epochs, cfg.batch_size, seed)
        acc = test_accuracy(qat_model, ds)
    log.info("QAT Keras model: test accuracy %.4f (coverage %.1f%% of the weights, %s)", acc,
             100 * info["coverage"], info["mode"])
    return qat_model, history, acc, info
