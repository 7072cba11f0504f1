"""The second backend: Google's LiteRT Quantizer (`litert-quantizer`, formerly
`ai-edge-quantizer`), which quantizes the float model's float32 `.tflite` by a recipe and
per-layer rules: int4 weights, blockwise scales, weight-only, float16 weights, a different
scheme per layer. It does not import TensorFlow and takes a fraction of a second on the
default model.

Its traps, handled here:
- a rule on `*` (every op) that the quantizer's policy does not allow for an op (int4 on a
  depthwise conv, blockwise on a conv) leaves that op in float SILENTLY: `precision` reads
  what each op really got from the exported flatbuffer, and `asked` what the recipe asked
  for, so the report can say "asked int4, got float";
- static recipes make the model's input and output integer: float I/O is the default here,
  as for the converter's `int8`;
- calibration ranges merge per batch with a moving average: samples are fed in batches.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.variants import LayerRule, QuantizerVariant

log = logging.getLogger(__name__)

CALIBRATION_BATCH = 32  # samples per calibration batch
WEIGHT_OPS = ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED", "BATCH_MATMUL",
              "EMBEDDING_LOOKUP", "TRANSPOSE_CONV")
SIGNATURE = "serving_default"


def _signature_input(path: Path | bytes) -> tuple[str, int]:
    """The name of the model's (single) signature input, as calibration data is keyed, and
    the samples per batch it takes: `CALIBRATION_BATCH`, or 1 for a model whose batch size
    is fixed at 1 (litert-torch's conversions)."""
    from ai_edge_litert.interpreter import Interpreter

    kw = {"model_content": path} if isinstance(path, (bytes, bytearray)) else \
        {"model_path": str(path)}
    interpreter = Interpreter(**kw)
    name = interpreter.get_signature_list()[SIGNATURE]["inputs"][0]
    shape = interpreter.get_signature_runner(SIGNATURE).get_input_details()[name][
        "shape_signature"]
    return name, 1 if len(shape) and shape[0] == 1 else CALIBRATION_BATCH


def _batches(samples: np.ndarray, model: Path | bytes
             ) -> dict[str, list[dict[str, np.ndarray]]]:
    name, batch = _signature_input(model)
    return {SIGNATURE: [{name: np.asarray(samples[i:i + batch], np.float32)}
                        for i in range(0, len(samples), batch)]}


def weight_ops(path: Path | bytes) -> list[dict[str, Any]]:
    """Every op with weights, in graph order: its index, type and scope (its output tensor
    names joined by `;`, the string the quantizer's regexes are matched against)."""
    from litert_quantizer.utils import tfl_flatbuffer_utils as fbu

    model = fbu.read_model(path)
    graph = model.subgraphs[0]
    out = []
    for index, op in enumerate(graph.operators):
        code = fbu.TFL_OP_CODE_TO_NAME.get(model.operatorCodes[op.opcodeIndex].builtinCode)
        name = getattr(code, "value", None)
        if name in WEIGHT_OPS:
            out.append({"index": index, "op": name,
                        "scope": fbu.get_op_scope(op, graph.tensors)})
    return out


def _rule_regex(rule: LayerRule, ops: list[dict[str, Any]]) -> str:
    if rule.regex is not None:
        return rule.regex
    op = ops[0] if rule.select == "first" else ops[-1]
    return "^" + re.escape(op["scope"]) + "$"


def quantizer_for(float_tflite: Path, spec: QuantizerVariant) -> Any:
    """A `Quantizer` set up with the variant's recipe, rules and I/O.

    Raises:
        ValueError: the quantizer's own refusal of a rule ("... was not found in the policy").
    """
    from litert_quantizer import qtyping, quantizer
    from litert_quantizer.utils import recipe_utils

    from pipeline.variants import ALGORITHMS

    op_names = qtyping.TFLOperationName
    algorithm = ALGORITHMS[spec.algorithm]
    qt = quantizer.Quantizer(str(float_tflite))
    if spec.recipe:
        recipe = recipe_utils.resolve_recipe(spec.recipe)
        for entry in recipe:  # the recipe's min/max entries, with the variant's algorithm
            if entry.get("algorithm_key") == ALGORITHMS["min_max"]:
                entry["algorithm_key"] = algorithm
        qt.load_quantization_recipe(recipe)
    ops = weight_ops(float_tflite)
    for rule in spec.rules:
        regex = _rule_regex(rule, ops)
        rule_algorithm = ALGORITHMS[rule.algorithm] if rule.algorithm else algorithm
        op_name = rule.op
        if rule.select is not None and op_name == "*":  # the selected layer's own op type
            op_name = (ops[0] if rule.select == "first" else ops[-1])["op"]
        op = op_names(op_name) if op_name != "*" else op_names.ALL_SUPPORTED
        granularity = qtyping.QuantGranularity(rule.granularity.upper())
        if rule.mode == "float":
            qt.update_quantization_recipe(regex, op,
                                          algorithm_key=quantizer.AlgorithmName.NO_QUANTIZE)
        elif rule.mode == "float16":  # the quantizer's float casting: 16-bit float weights
            qt.add_weight_only_config(regex, op, 16,
                                      algorithm_key=quantizer.AlgorithmName.FLOAT_CASTING)
        elif rule.mode == "weight_only":
            qt.add_weight_only_config(regex, op, rule.bits, granularity, rule_algorithm)
        elif rule.mode == "dynamic":
            qt.add_dynamic_config(regex, op, rule.bits, granularity, rule_algorithm)
        else:
            qt.add_static_config(regex, op, rule.activation_bits, rule.bits, granularity,
                                 rule_algorithm)
    if spec.io == "float" and qt.need_calibration:  # static: keep the model's I/O float
        for io_op in (op_names.INPUT, op_names.OUTPUT):
            qt.update_quantization_recipe(".*", io_op,
                                          algorithm_key=quantizer.AlgorithmName.NO_QUANTIZE)
    return qt


def quantize(float_tflite: Path, spec: QuantizerVariant, calibration: np.ndarray | None
             ) -> tuple[bytes, list[dict[str, Any]]]:
    """Quantize the float `.tflite` as the variant says.

    Returns:
        `(flatbuffer, recipe)`: the model's bytes and the recipe the quantizer applied (a
        JSON-ready list).

    Raises:
        ValueError: if a static recipe has no calibration samples, or the quantizer refuses.
    """
    import json

    qt = quantizer_for(float_tflite, spec)
    results = None
    if qt.need_calibration:
        if calibration is None or not len(calibration):
            raise ValueError(f"variant {spec.name!r} calibrates: it needs calibration samples")
        results = qt.calibrate(_batches(calibration, float_tflite))
    flatbuffer = inline_buffers(bytes(qt.quantize(results).quantized_model))
    recipe = json.loads(json.dumps(qt.get_quantization_recipe(), default=_plain))
    return flatbuffer, recipe


def inline_buffers(flatbuffer: bytes) -> bytes:
    """The model with every buffer's data inside the flatbuffer.

    Past 256 KiB of weights, the LiteRT Quantizer writes the weights after the flatbuffer
    and points at them by offset (the format for models over 2 GB). LiteRT reads that;
    TensorFlow Lite for Microcontrollers does not: it takes such weights for empty tensors,
    places them in the arena and computes garbage (found by the footprint stage's TFLM check
    on the default MNIST model: agreement 0.08 with LiteRT's kernels, a 3.3 MB arena). The
    same model with its data inline, as the converter writes it, runs everywhere.
    """
    from ai_edge_litert import schema_py_generated as schema

    root = schema.Model.GetRootAsModel(flatbuffer, 0)
    if not any(root.Buffers(i).Offset() > 1 for i in range(root.BuffersLength())):
        return flatbuffer
    import flatbuffers

    model = schema.ModelT.InitFromPackedBuf(flatbuffer, 0)
    for buffer in model.buffers:
        if buffer.offset > 1:
            buffer.data = np.frombuffer(flatbuffer, np.uint8, count=buffer.size,
                                        offset=buffer.offset)
            buffer.offset = buffer.size = 0
    builder = flatbuffers.Builder(len(flatbuffer) + 4096)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())


def _plain(value: Any) -> Any:
    return getattr(value, "value", str(value))


# --- what each op was asked for, and what it got ---------------------------------------------

def asked(recipe: Sequence[dict[str, Any]], ops: list[dict[str, Any]]) -> list[str]:
    """What the recipe asks of each weight op (`ops`, `weight_ops`): the last entry whose regex
    matches the op's scope and whose operation is the op or `*`, as the quantizer reads it."""
    out = []
    for op in ops:
        wanted = "float"
        for entry in recipe:
            if entry["operation"] not in ("*", op["op"]) or not re.search(entry["regex"],
                                                                          op["scope"]):
                continue
            wanted = describe(entry)
        out.append(wanted)
    return out


def describe(entry: dict[str, Any]) -> str:
    """A recipe entry in a few words: `int4 weight-only channelwise`, `float16 weight-only`,
    `float`."""
    if entry.get("algorithm_key") == "no_quantize":
        return "float"
    if entry.get("algorithm_key") == "float_casting":  # 16 bits, but float, not int16
        return "float16 weight-only"
    config = entry.get("op_config") or {}
    weight = config.get("weight_tensor_config") or {}
    if not weight:
        return "float"
    activation = config.get("activation_tensor_config")
    if activation:
        mode = f"static a{activation['num_bits']}"
    elif config.get("explicit_dequantize"):
        mode = "weight-only"
    else:
        mode = "dynamic"
    return f"int{weight['num_bits']} {mode} {str(weight.get('granularity', '')).lower()}"


def precision(path: Path | bytes) -> list[str]:
    """What each weight op of an exported model really got, read from the flatbuffer (the
    interpreter reports int4 weights as int8): `int4 weight-only channelwise`,
    `float16 weight-only` (float16 weights through a DEQUANTIZE op), `float`."""
    from ai_edge_litert import schema_py_generated as schema
    from litert_quantizer.utils import tfl_flatbuffer_utils as fbu

    types = {v: k for k, v in vars(schema.TensorType).items() if not k.startswith("_")}
    builtins = {v: k for k, v in vars(schema.BuiltinOperator).items() if not k.startswith("_")}
    model = fbu.read_model(path)
    graph = model.subgraphs[0]
    producer = {o: op for op in graph.operators for o in op.outputs}
    out = []
    for op in weight_ops(path):
        operator = graph.operators[op["index"]]
        weight_index = operator.inputs[1] if len(operator.inputs) > 1 else -1
        if weight_index < 0:
            out.append("float")
            continue
        weight = graph.tensors[weight_index]
        explicit = False
        buffer = model.buffers[weight.buffer].data
        source = producer.get(weight_index)
        if (buffer is None or not len(buffer)) and source is not None and builtins.get(
                model.operatorCodes[source.opcodeIndex].builtinCode) == "DEQUANTIZE":
            weight, explicit = graph.tensors[source.inputs[0]], True  # weight-only
        dtype = types.get(weight.type, "?")
        if dtype == "FLOAT16":
            out.append("float16 weight-only" if explicit else "float16")
            continue
        if dtype.startswith("FLOAT"):
            out.append("float")
            continue
        q = weight.quantization
        if q is not None and q.detailsType == schema.QuantizationDetails.BlockwiseQuantization:
            granularity = f"blockwise_{q.details.blockSize}"
        elif q is not None and q.scale is not None and len(q.scale) > 1:
            granularity = "channelwise"
        else:
            granularity = "tensorwise"
        activation = types.get(graph.tensors[operator.outputs[0]].type, "?")
        mode = ("weight-only" if explicit else
                f"static a{activation[3:]}" if activation in ("INT8", "INT16") else "dynamic")
        out.append(f"{dtype.lower()} {mode} {granularity}")
    return out


def asked_and_got(float_tflite: Path, recipe: Sequence[dict[str, Any]],
                  quantized: Path) -> list[dict[str, str]]:
    """Per weight op: its op type, scope, what the recipe asked and what it got."""
    ops = weight_ops(float_tflite)
    return [{"op": op["op"], "layer": op["scope"].split(";")[0], "asked": a, "got": g}
            for op, a, g in zip(ops, asked(recipe, ops), precision(quantized))]


def mismatches(rows: Sequence[dict[str, str]]) -> list[dict[str, str]]:
    """Ops whose precision differs from what was asked ("asked int4, got float"). Only bits
    and float-or-not are compared: the quantizer may pick its own mode names."""
    def bits(text: str) -> str:
        return text.split(" ", 1)[0]

    return [r for r in rows if bits(r["asked"]) != bits(r["got"])]


# --- every tensor against the float model ------------------------------------------------------

METRICS = ("mse", "snr", "cosine_similarity")


def tensor_errors(reference: Path, variant: Path, samples: np.ndarray,
                  overlays: Path | None = None, name: str = "variant"
                  ) -> list[dict[str, Any]]:
    """Compare every tensor the two models share by name (inputs, outputs, constants, every
    layer's output) on `samples`, with the LiteRT Quantizer's validator: mean squared error,
    SNR (in dB) and cosine similarity, worst SNR first. Works for any pair of models, the
    converter's variants included. With `overlays`, also writes the Model Explorer node-data
    files there (one per metric, keyed by tensor name).

    Raises:
        Whatever the validator raises on a pair it cannot compare (the caller records it).
    """
    import math

    from litert_quantizer import model_validator
    from litert_quantizer.utils import validation_utils

    metric = validation_utils.ValidationErrorMetric
    data = _batches(samples, reference)
    data[SIGNATURE] = [{k: v[i:i + 1] for k, v in batch.items()}
                       for batch in data[SIGNATURE] for i in range(len(next(iter(
                           batch.values()))))]  # the validator averages over single samples
    result = model_validator.compare_model(reference.read_bytes(), variant.read_bytes(), data,
                                           [metric.MSE, metric.SNR, metric.COSINE_SIMILARITY])
    if overlays is not None:
        overlays.mkdir(parents=True, exist_ok=True)
        result.save(str(overlays), name)
    signature = result.get_signature_comparison_result(SIGNATURE)
    rows = []
    for kind in ("input", "output", "constant", "intermediate"):
        for tensor, values in getattr(signature, f"{kind}_tensors").items():
            snr = float(values["snr"])
            rows.append({"tensor": tensor, "kind": kind, "mse": float(values["mse"]),
                         "snr_db": 10 * math.log10(snr) if snr > 0 else float("-inf"),
                         "cosine_similarity": float(values["cosine_similarity"])})
    rows.sort(key=lambda r: r["snr_db"])
    return rows
