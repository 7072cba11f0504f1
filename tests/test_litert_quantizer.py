"""The second backend, the LiteRT Quantizer, on the tiny model for real: named recipes,
per-layer rules chosen in config, what each op asked for and got, a refused recipe failing
alone, every tensor compared with the float model, and accuracy on every kernel path.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

from pipeline import artifacts, data
from pipeline.produce import litert_quantizer, quantize
from pipeline.produce.producer import Inputs, Source
from pipeline.config import Config
from pipeline.measure import evaluate, litert
from pipeline.variants import parse_variant


def rows(path: Path) -> list[dict[str, str]]:
    with path.open() as f:
        return list(csv.DictReader(f))


def test_default_recipes_make_what_they_promise(variant_dirs: Path, models: dict[str, Path],
                                                small_dataset: data.Dataset) -> None:
    got = {name: [r["got"] for r in rows(variant_dirs / name / artifacts.PRECISION)]
           for name in ("int4_weight_only", "aeq_int8_static", "aeq_mixed")}
    assert all(g.startswith("int4 weight-only") for g in got["int4_weight_only"])
    assert all(g.startswith("int8 static a8") for g in got["aeq_int8_static"])
    # The mixed recipe: first and last layer int8 static, the rest int4 weight-only.
    mixed = got["aeq_mixed"]
    assert mixed[0].startswith("int8 static") and mixed[-1].startswith("int8 static")
    assert all(g.startswith("int4 weight-only") for g in mixed[1:-1]) and len(mixed) > 2
    # Float I/O by default, even for static recipes; the saved recipe is the applied one.
    for name in ("aeq_int8_static", "aeq_int16x8", "aeq_mixed"):
        assert litert.io_dtypes(litert.load_interpreter(models[name])) == ("float32",
                                                                           "float32")
    recipe = json.loads((variant_dirs / "aeq_mixed" / artifacts.RECIPE).read_text())
    assert {e["regex"] for e in recipe} >= {".*"} and len(recipe) >= 3
    sizes = {n: models[n].stat().st_size for n in ("float32", "int8", "int4_weight_only")}
    assert sizes["int4_weight_only"] < sizes["int8"] < sizes["float32"]
    x, y = small_dataset.x_test, small_dataset.y_test
    float_acc = evaluate.evaluate(models["float32"], x, y)["accuracy"]
    assert evaluate.evaluate(models["aeq_int8_static"], x, y)["accuracy"] > float_acc - 0.1


def test_a_rule_the_policy_ignores_is_named_asked_and_got(tiny_models: dict, tmp_path: Path,
                                                         variant_dirs: Path) -> None:
    """Int4 blockwise weight-only on every op: the quantizer's policy allows it on none, and
    leaves them float without a word. The lab reads the model and says so."""
    spec = parse_variant("blockwise_everywhere", {
        "source": "float", "backend": "litert_quantizer",
        "rules": [{"regex": ".*", "mode": "weight_only", "bits": 4,
                   "granularity": "blockwise_32"}]})
    float_tflite = artifacts.tflite_path(variant_dirs / "float32", "float32")
    record = quantize.variant(spec, Inputs(Source.given(float_tflite=float_tflite)),
                              tmp_path / "b")
    assert record["status"] == "ok"
    assert record["asked_vs_got"] and {m["got"] for m in record["asked_vs_got"]} == {"float"}
    assert all(m["asked"].startswith("int4 weight-only blockwise_32")
               for m in record["asked_vs_got"])


def test_a_refused_recipe_fails_that_variant_alone(variant_dirs: Path, tmp_path: Path) -> None:
    spec = parse_variant("refused", {
        "source": "float", "backend": "litert_quantizer", "recipe": "weight_only_wi8_afp32",
        "rules": [{"regex": ".*", "op": "FULLY_CONNECTED", "mode": "weight_only", "bits": 4,
                   "granularity": "blockwise_32"}]})
    float_tflite = artifacts.tflite_path(variant_dirs / "float32", "float32")
    record = quantize.variant(spec, Inputs(Source.given(float_tflite=float_tflite)),
                              tmp_path / "r")
    assert record["status"] == "failed" and "was not found in the policy" in record["error"]
    assert not artifacts.tflite_path(tmp_path / "r", "refused").exists()
    assert (variant_dirs / "int4_weight_only" / "int4_weight_only.tflite").exists()


def test_every_tensor_is_compared_with_the_float_model(variant_dirs: Path) -> None:
    for name in ("int8", "int8_full", "dynamic_range", "aeq_mixed"):  # converter and quantizer
        table = rows(variant_dirs / name / artifacts.TENSOR_ERRORS)
        kinds = {r["kind"] for r in table}
        assert {"output", "intermediate"} <= kinds, name
        snr = [float(r["snr_db"]) for r in table]
        assert snr == sorted(snr) and all(s > 5 for s in snr if np.isfinite(s)), name
        overlays = list((variant_dirs / name / artifacts.OVERLAYS).glob("*_me_input_snr.json"))
        node_data = json.loads(overlays[0].read_text())
        assert set(node_data) == {"results", "thresholds"}
        assert {r["tensor"] for r in table} <= set(node_data["results"])
        record = artifacts.read_record(variant_dirs / name)
        assert len(record["worst_tensors"]) == 3, name


def test_kernel_path_disagreement_is_flagged(models: dict[str, Path],
                                             small_dataset: data.Dataset) -> None:
    """Blockwise int4 weights run on the reference kernels compute something else entirely
    (0.10 accuracy on the digits, against 0.98 with XNNPACK): flagged. Float32: not."""
    x, y = small_dataset.x_test, small_dataset.y_test
    ref = litert.Runner(models["float32"]).predict(x)
    paths = ["xnnpack", "reference"]
    blockwise = evaluate.on_kernel_paths(models["int4_dynamic_blockwise"], x, y, ref, paths,
                                         0.01, batch_size=16)
    steady = evaluate.on_kernel_paths(models["float32"], x, y, ref, paths, 0.01, batch_size=16)
    assert blockwise["kernel_paths_disagree"], blockwise["kernel_paths"]
    assert blockwise["kernel_paths"]["reference"]["agreement"] < 0.9
    assert not steady["kernel_paths_disagree"]
    assert steady["kernel_paths"]["reference"]["agreement"] == 1.0


@pytest.mark.parametrize("field", ["optimizations", "representative_data"])
def test_converter_fields_are_refused_on_the_quantizer(field: str, tiny_cfg: Config) -> None:
    raw = {"source": "float", "backend": "litert_quantizer", "recipe": "static_wi8_ai8",
           field: ["DEFAULT"] if field == "optimizations" else True}
    with pytest.raises(ValueError, match=f"{field} belong to the converter backend"):
        parse_variant("x", raw)
    assert litert_quantizer.describe({"algorithm_key": "no_quantize"}) == "float"


def test_a_model_past_256_kib_of_weights_runs_on_tflite_micro_too(tmp_path: Path) -> None:
    """Past 256 KiB of weights the LiteRT Quantizer writes them outside the flatbuffer, by
    offset, which TFLite Micro does not read (it computed garbage in a 3.3 MB arena on the
    default MNIST model). The lab's files carry their weights inline: TFLM agrees with
    LiteRT's built-in kernels bit for bit, in an arena that holds no weights."""
    from ai_edge_litert import schema_py_generated as schema

    from pipeline.tfcompat import import_tf
    from pipeline.measure import footprint

    tf, keras = import_tf(seed=0)
    model = keras.Sequential([keras.Input((28, 28, 1)), keras.layers.Flatten(),
                              keras.layers.Dense(512, activation="relu"),
                              keras.layers.Dense(10, activation="softmax")])
    float_tflite = tmp_path / "float.tflite"
    float_tflite.write_bytes(tf.lite.TFLiteConverter.from_keras_model(model).convert())
    x = np.random.default_rng(0).random((40, 28, 28, 1), dtype=np.float32)
    spec = parse_variant("aeq_big", {"source": "float", "backend": "litert_quantizer",
                                     "recipe": "static_wi8_ai8"})
    flatbuffer, _ = litert_quantizer.quantize(float_tflite, spec, x[:20])
    root = schema.Model.GetRootAsModel(flatbuffer, 0)
    assert sum(root.Buffers(i).DataLength() for i in range(root.BuffersLength())) > 400_000
    assert all(root.Buffers(i).Offset() <= 1 for i in range(root.BuffersLength()))
    path = tmp_path / "aeq_big.tflite"
    path.write_bytes(flatbuffer)
    micro = footprint.measure(path, x, np.zeros(40, np.int64), tmp_path / "fp", integer=True,
                              smallest_arena=False, gpu=False, npu={})["micro"]
    assert micro["status"] == "ok" and micro["bit_identical"], micro
    assert micro["arena_bytes"] < 100_000  # activations only: the weights stay in flash
