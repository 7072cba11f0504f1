"""Where the time goes (`pipeline.measure.profile`, `pipeline.report.latency`): each operator
cut out of the model computes what it computes inside it, its time agrees with the same op
made independently by TensorFlow's converter and timed by the benchmark, the per-op times add
up to the whole model's, and the report names the operators behind a slowdown.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from pipeline.config import BenchmarkConfig
from pipeline.measure import benchmark, graph, profile
from pipeline.measure.litert import quantize_input
from pipeline.report import latency

# The tiny variants whose operators cover the lab's storage forms: float, float16 weights
# dequantized once, int8, 16x8, dynamic range, int4 weight-only and blockwise int4 (whose
# scales are tensors of their own).
CUT_VARIANTS = ("float32", "float16", "int8_full", "uint8_full", "int16x8", "dynamic_range",
                "int4_weight_only", "int4_dynamic_blockwise")


def _interpreter(content: bytes, preserve: bool = False) -> Any:
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    interp = Interpreter(model_content=content, experimental_preserve_all_tensors=preserve,
                         experimental_op_resolver_type=(
                             OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES))
    interp.allocate_tensors()
    return interp


@pytest.mark.parametrize("variant", CUT_VARIANTS)
def test_each_operator_cut_out_computes_what_it_computes_in_the_whole_model(
        variant: str, models: dict[str, Path], small_dataset: Any) -> None:
    from ai_edge_litert.tools import flatbuffer_utils

    content = models[variant].read_bytes()
    whole = _interpreter(content, preserve=True)
    detail = whole.get_input_details()[0]
    whole.set_tensor(detail["index"], quantize_input(small_dataset.x_test[:1], detail))
    whole.invoke()
    model = flatbuffer_utils.convert_bytearray_to_object(content)
    statics = profile.static_ops(model)
    g = graph.read(models[variant])
    for i, op in enumerate(g.ops):
        one, inputs, included = profile.cut(model, i, statics)
        assert set(included) <= statics
        interp = _interpreter(one)
        assert [d["op_name"] for d in interp._get_ops_details()][-1] == op.type
        for d, t in zip(interp.get_input_details(), inputs):
            interp.set_tensor(d["index"], whole.get_tensor(t))
        interp.invoke()
        outputs = [t for t in op.outputs if t >= 0]
        for d, t in zip(interp.get_output_details(), outputs):
            np.testing.assert_array_equal(interp.get_tensor(d["index"]), whole.get_tensor(t),
                                          err_msg=f"{variant} op {i} {op.type}")


def _keras_cnn(keras: Any) -> Any:
    """A mid-size CNN whose second convolution is a good part of the time, so that one op's
    time stands well above an invoke's fixed cost. Latency does not depend on the weights'
    values, so these are not trained (the accuracy tests use trained models)."""
    keras.utils.set_random_seed(0)
    return keras.Sequential([
        keras.layers.Input((28, 28, 1)),
        keras.layers.Conv2D(16, 3, activation="relu"),
        keras.layers.MaxPooling2D(),
        keras.layers.Conv2D(64, 3, activation="relu", name="conv_b"),
        keras.layers.Flatten(),
        keras.layers.Dense(10),
    ])


def _convert(model: Any, int8: bool, shape: tuple[int, ...]) -> bytes:
    import tensorflow as tf

    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    if int8:
        rng = np.random.default_rng(0)
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = lambda: (
            [rng.random((1, *shape), np.float32)] for _ in range(16))
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    return converter.convert()


@pytest.fixture(scope="module")
def cnn_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The CNN as float32 and int8 `.tflite` files, and its second convolution alone, made by
    TensorFlow's converter from a Keras model of that one layer (same weights): the
    independent one-op model."""
    from pipeline.tfcompat import import_tf

    _, keras = import_tf(seed=0)
    d = tmp_path_factory.mktemp("cnn")
    cnn = _keras_cnn(keras)
    conv = cnn.get_layer("conv_b")
    alone = keras.Sequential([keras.layers.Input(tuple(conv.input.shape[1:])),
                              keras.layers.Conv2D(64, 3, activation="relu")])
    alone.layers[0].set_weights(conv.get_weights())
    files = {}
    for kind in ("float32", "int8"):
        for name, m, shape in (("cnn", cnn, (28, 28, 1)),
                               ("conv", alone, tuple(conv.input.shape[1:]))):
            files[f"{name}_{kind}"] = d / f"{name}_{kind}.tflite"
            files[f"{name}_{kind}"].write_bytes(_convert(m, kind == "int8", shape))
    return files


@pytest.mark.parametrize("kind", ["float32", "int8"])
def test_an_operators_time_agrees_with_the_same_op_made_and_timed_independently(
        kind: str, cnn_files: dict[str, Path]) -> None:
    """The profile's row for the second convolution against TensorFlow's own one-layer model
    of it, timed by the benchmark's whole-model method (its p50 includes an invoke's fixed
    cost, added to the row here). Both on one thread with XNNPACK, in one process: the ratio
    of the two is what a shared machine's noise leaves alone."""
    sample = np.random.default_rng(1).random((1, 28, 28, 1), np.float32)
    result = profile.profile(cnn_files[f"cnn_{kind}"], sample, profile.Settings(rounds=40))
    convs = [r for r in result["ops"] if r["type"] == "CONV_2D"]
    assert len(convs) == 2 and all(r["kernel"] == "xnnpack" for r in convs)
    row = max(convs, key=lambda r: r["macs"])  # the second convolution: 64 filters
    assert row["macs"] == 11 * 11 * 64 * 3 * 3 * 16
    cfg = BenchmarkConfig(num_threads=[1], xnnpack=[True], warmup_runs=20, warmup_seconds=0.1,
                          min_runs=200, min_seconds=0.5, max_seconds=10.0, memory=False,
                          profile=False, profile_rounds=1)
    conv_input = np.random.default_rng(2).random((1, 13, 13, 16), np.float32)
    alone = benchmark.measure(cnn_files[f"conv_{kind}"], conv_input, cfg, 1, True)
    ratio = (row["ms"] + result["invoke_ms"]) / alone["latency_ms_p50"]
    assert 0.5 < ratio < 2.0, (row, alone["latency_ms_p50"])
    # ... and not the whole model's time: the other operators take a visible share.
    assert row["ms"] < 0.95 * result["whole_ms"]


@pytest.mark.parametrize("kind", ["float32", "int8"])
def test_the_per_operator_times_add_up_to_the_whole_model(kind: str,
                                                          cnn_files: dict[str, Path]) -> None:
    sample = np.random.default_rng(1).random((1, 28, 28, 1), np.float32)
    result = profile.profile(cnn_files[f"cnn_{kind}"], sample, profile.Settings(rounds=40))
    assert all(r["ms"] is not None and "error" not in r for r in result["ops"])
    assert result["ops_ms"] == pytest.approx(sum(r["ms"] for r in result["ops"]))
    assert 0.7 < result["explained"] < 1.4, result["explained"]
    assert result["overhead_ms"] == pytest.approx(
        result["whole_ms"] - result["invoke_ms"] - result["ops_ms"])
    by_type = result["by_type"]
    assert by_type["CONV_2D"]["count"] == 2
    assert sum(t["count"] for t in by_type.values()) == len(result["ops"])


def test_what_xnnpack_took_and_why_it_left_the_rest(models: dict[str, Path],
                                                    small_dataset: Any) -> None:
    """In a child process (as the benchmark runs it): the float model is XNNPACK's whole;
    16x8 has no XNNPACK kernels, and int4 weights are dequantized at run time, which leaves
    the convolutions non-constant weights XNNPACK does not take."""
    x = small_dataset.x_test[:1]
    settings = profile.Settings(rounds=3)
    float32 = profile.isolated(models["float32"], x, settings)
    n = len(graph.read(models["float32"]).ops)
    assert float32["delegate"] == {"name": "XNNPACK", "partitions": 1, "delegated": n,
                                   "nodes": n, "left": []}
    assert {r["kernel"] for r in float32["ops"]} == {"xnnpack"}
    int16 = profile.isolated(models["int16x8"], x, settings)
    assert int16["delegate"]["delegated"] == 0
    assert all("int16" in x["reason"] for x in int16["delegate"]["left"])
    assert {r["kernel"] for r in int16["ops"]} == {"builtin"}
    int4 = profile.isolated(models["int4_weight_only"], x, settings)
    left = {x["type"]: x["reason"] for x in int4["delegate"]["left"]}
    assert "int4" in left["DEQUANTIZE"] and "dequantized from int4" in left["CONV_2D"]
    builtin = profile.isolated(models["int16x8"], x, profile.Settings(rounds=3,
                                                                      kernels="builtin"))
    assert builtin["delegate"] is None and {r["kernel"] for r in builtin["ops"]} == {"builtin"}


def test_the_report_names_the_operators_behind_a_slowdown(models: dict[str, Path],
                                                          small_dataset: Any) -> None:
    """16x8 on the built-in kernels against float32 on XNNPACK: the sentence names the op
    types that take the extra time, how much slower they run, and why XNNPACK left them."""
    x = small_dataset.x_test[:1]
    ref = profile.isolated(models["float32"], x, profile.Settings(rounds=10))
    slow = profile.isolated(models["int16x8"], x, profile.Settings(rounds=10))
    found = latency.causes(slow, ref)
    assert found and all(c["extra_ms"] > 0 for c in found)
    assert [c["extra_ms"] for c in found] == sorted((c["extra_ms"] for c in found),
                                                    reverse=True)
    said = latency.sentence("int16x8", slow, ref, "float32")
    assert said.startswith("int16x8: ") and found[0]["type"] in said
    if found[0]["reference_count"]:  # an op both have: how much slower, and on which kernels
        assert "slower than in float32" in said and "built-in kernels" in said
        assert "no kernels for int16 activations" in said
    rows = {"float32": {"headline": "t1", "profiles": {"t1": ref}, "speedup_ci_high": 1.0},
            "int16x8": {"headline": "t1", "profiles": {"t1": slow}, "speedup_ci_high": 0.5}}
    section = latency.section(rows, "float32")
    assert section is not None
    plot = latency.plot_data(rows, "float32")
    assert set(next(iter(plot.values()))) == {"float32", "int16x8"}
    assert set(plot) >= {"CONV_2D", "FULLY_CONNECTED", "QUANTIZE"}


def test_the_machine_record_names_the_cpus_vector_extensions() -> None:
    simd = benchmark.machine()["simd"]
    assert simd == "unknown" or set(simd.split()) <= set(benchmark.SIMD)
    if Path("/proc/cpuinfo").is_file() and "avx2" in Path("/proc/cpuinfo").read_text():
        assert "avx2" in simd.split()


def test_the_metrics_of_a_profile_are_declared(models: dict[str, Path],
                                               small_dataset: Any) -> None:
    from pipeline import metrics

    result = profile.isolated(models["int8_full"], small_dataset.x_test[:1],
                              profile.Settings(rounds=2))
    figures = profile.metrics(result)
    assert figures and all(metrics.declared(k) for k in figures)
    assert figures["xnnpack_delegated_ops"] + figures["xnnpack_left_ops"] == len(result["ops"])
    assert profile.metrics({"error": "x"}) == {}
    csv = profile.table({"t1": result}).splitlines()
    assert csv[0] == ",".join(profile.COLUMNS) and len(csv) == 1 + len(result["ops"])


def test_without_the_profile_the_benchmark_and_the_report_carry_none(
        models: dict[str, Path], small_dataset: Any, tiny_cfg: Any) -> None:
    """`benchmark.profile: false`: no profile, no per-op metrics, an empty per-op table and
    no report section; the whole-model figures as before."""
    import dataclasses

    cfg = dataclasses.replace(tiny_cfg.benchmark, profile=False, num_threads=[1],
                              xnnpack=[True])
    result = benchmark.benchmark(models["int8"], small_dataset.x_test[:1], cfg,
                                 models["float32"], progress=False)
    assert "profiles" not in result and not any(k.startswith("op_ms.") for k in result)
    assert "profile_explained" not in result and result["latency_ms_p50"] > 0
    assert profile.table(result.get("profiles", {})).splitlines() == [",".join(profile.COLUMNS)]
    rows = {"float32": {"headline": "t1", "profiles": {}},
            "int8": {"headline": "t1", **result}}
    assert latency.section(rows, "float32") is None and latency.plot_data(rows, "float32") == {}
