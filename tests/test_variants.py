"""Every configured variant converts a tiny model for real and runs in the LiteRT interpreter."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from pipeline import data
from pipeline.produce import convert
from pipeline.measure import litert
from pipeline.config import Config
from pipeline.variants import parse_variant

VARIANTS = ["float32", "dynamic_range", "float16", "int8", "int8_full", "int8_selective",
            "uint8_full", "int16x8", "qat_int8"]


def tensor_dtypes(path: Path) -> set[str]:
    interpreter = litert.load_interpreter(path)
    return {np.dtype(t["dtype"]).name for t in interpreter.get_tensor_details()}


@pytest.mark.parametrize("name", VARIANTS)
def test_variant_io_dtypes_match_its_spec(name: str, models: dict[str, Path], tiny_cfg: Config) -> None:
    spec = tiny_cfg.variants[name]
    interpreter = litert.load_interpreter(models[name])
    assert litert.io_dtypes(interpreter) == (spec.inference_input_type,
                                             spec.inference_output_type)


@pytest.mark.parametrize("name", VARIANTS)
def test_variant_runs_and_agrees_with_float(name: str, models: dict[str, Path],
                                            small_dataset: data.Dataset) -> None:
    x = small_dataset.x_test[:40]
    reference = litert.Runner(models["float32"]).predict(x)
    scores = litert.Runner(models[name]).predict(x)
    assert scores.shape == (40, small_dataset.num_classes)
    assert scores.dtype == np.float32
    # Dequantized softmax outputs stay probabilities, close to the float model's.
    np.testing.assert_allclose(scores.sum(axis=1), 1.0, atol=0.05)
    assert np.abs(scores - reference).max() < 0.25


def test_quantized_variants_are_smaller_and_store_their_types(models: dict[str, Path]) -> None:
    size = {name: path.stat().st_size for name, path in models.items()}
    # The tiny model's file is mostly fixed overhead, so compare order, not ratios.
    assert size["float16"] < size["float32"]
    for name in ("dynamic_range", "int8", "int8_full", "uint8_full", "int16x8", "qat_int8"):
        assert size[name] < size["float16"], name
    assert "float16" in tensor_dtypes(models["float16"])
    assert tensor_dtypes(models["float32"]) <= {"float32", "int32"}
    assert "int8" in tensor_dtypes(models["int8"])
    assert "int16" in tensor_dtypes(models["int16x8"])
    int8_full = tensor_dtypes(models["int8_full"])
    assert "int8" in int8_full and "float16" not in int8_full


def test_quantize_dequantize_use_the_tensor_parameters(models: dict[str, Path]) -> None:
    interpreter = litert.load_interpreter(models["int8_full"])
    detail = interpreter.get_input_details()[0]
    scale, zero_point = detail["quantization"]
    x = np.array([0.0, 0.5, 1.0, 100.0], dtype=np.float32)
    q = litert.quantize_input(x, detail)
    assert q.dtype == np.int8
    assert q[-1] == 127  # clipped, not wrapped around
    np.testing.assert_allclose((q[:3].astype(np.float32) - zero_point) * scale, x[:3],
                               atol=scale)
    out = interpreter.get_output_details()[0]
    y = np.array([-128, 0, 127], dtype=np.int8)
    o_scale, o_zero = out["quantization"]
    np.testing.assert_allclose(litert.dequantize_output(y, out), (y.astype(np.float32) - o_zero) * o_scale)


def test_representative_variant_without_data_is_refused(tiny_models: dict) -> None:
    spec = parse_variant("int8", {"source": "float", "optimizations": ["DEFAULT"],
                                  "representative_data": True})
    with pytest.raises(ValueError, match="needs representative"):
        convert.convert(tiny_models["float"], spec, calibration=None)


def test_per_tensor_variant_converts(tiny_models: dict, small_dataset: data.Dataset,
                                     tmp_path: Path) -> None:
    calibration = data.calibration_samples(small_dataset, 8, seed=0)
    per_channel = parse_variant("a", {"source": "float", "optimizations": ["DEFAULT"],
                                      "representative_data": True})
    per_tensor = parse_variant("b", {"source": "float", "optimizations": ["DEFAULT"],
                                     "representative_data": True, "per_channel": False})
    paths = {}
    for spec in (per_channel, per_tensor):
        paths[spec.name] = tmp_path / f"{spec.name}.tflite"
        paths[spec.name].write_bytes(convert.convert(tiny_models["float"], spec, calibration))

    def conv_scales(path: Path) -> int:
        # Conv weights only: TF 2.21's quantizer keeps dense weights per-channel regardless.
        details = litert.load_interpreter(path).get_tensor_details()
        return max(len(t["quantization_parameters"]["scales"]) for t in details
                   if t["name"].endswith("Conv2D") and t["dtype"] == np.int8)

    assert conv_scales(paths["a"]) > 1  # one scale per output channel
    assert conv_scales(paths["b"]) == 1


def test_loading_a_file_that_is_not_a_model_is_refused(tmp_path: Path) -> None:
    bad = tmp_path / "bad.tflite"
    bad.write_bytes(b"not a flatbuffer")
    with pytest.raises(ValueError, match="not a valid TFLite model"):
        litert.load_interpreter(bad)
    with pytest.raises(FileNotFoundError):
        litert.load_interpreter(tmp_path / "missing.tflite")


def test_every_kind_is_made_by_its_own_producer_found_through_a_recording_view(
        tiny_cfg: Config) -> None:
    """Each kind (`KINDS`) has one producer, a class of its own module in pipeline/produce/
    registered for it; the quantize step's config is a recording view whose sections are
    subclasses of the config's classes (`pipeline.reads`), and the lookup sees through it."""
    from pipeline import reads
    from pipeline.produce.producer import Producer, producer_for
    from pipeline.produce.quantize import PRODUCERS
    from pipeline.variants import KINDS

    assert set(PRODUCERS) == set(KINDS.values())
    for kind, producer in PRODUCERS.items():
        assert issubclass(producer, Producer) and producer.KIND is kind
        assert producer.__module__.startswith("pipeline.produce.by_"), producer
    assert len({p.__module__ for p in PRODUCERS.values()}) == len(PRODUCERS)
    view, _ = reads.recording(tiny_cfg)
    for name in tiny_cfg.variants:
        spec = view.variants[name]
        kind = KINDS[spec.backend]
        assert type(spec) is not kind and isinstance(spec, kind)  # the view's subclass
        assert type(producer_for(spec)) is PRODUCERS[kind]


def test_each_kind_is_a_class_chosen_by_backend_with_its_own_fields(tiny_cfg: Config) -> None:
    """`backend` chooses the kind as `model.arch` chooses a model schema; each kind validates
    and logs only its own fields, and every configured variant has a producer."""
    import dataclasses

    from pipeline.produce.quantize import PRODUCERS
    from pipeline.variants import (KINDS, ConverterVariant, QuantizerVariant, SearchVariant,
                                   TorchVariant, VariantSpec)

    assert KINDS == {"converter": ConverterVariant, "litert_quantizer": QuantizerVariant,
                     "search": SearchVariant, "litert_torch": TorchVariant}
    assert set(PRODUCERS) == set(KINDS.values())
    kinds = {type(s) for s in tiny_cfg.variants.values()}
    # the tiny config has a variant of each kind but litert-torch's (quantization=torch)
    assert kinds == set(KINDS.values()) - {TorchVariant}, kinds
    common = {f.name for f in dataclasses.fields(VariantSpec)}
    own = {k: {f.name for f in dataclasses.fields(cls)} - common for k, cls in KINDS.items()}
    assert not own["converter"] & own["search"] and not own["litert_quantizer"] & own["search"]
    assert own["converter"] & own["litert_quantizer"] == {"rounding"}  # AdaRound: both
    for spec in tiny_cfg.variants.values():
        params = spec.as_params()
        assert {k.removeprefix("variant.") for k in params} == common | own[spec.backend]
    # A field of another kind is refused, naming the kind it belongs to.
    for backend, field, value in (("search", "recipe", "static_wi8_ai8"),
                                  ("litert_quantizer", "precisions", ["int4", "int8"]),
                                  ("converter", "objective", "size")):
        extra = {"recipe": "static_wi8_ai8"} if backend == "litert_quantizer" else {}
        owner = next(k for k, fields in own.items() if field in fields)
        with pytest.raises(ValueError, match=f"{field} belong to the {owner} backend, not to "
                                             f"backend: {backend}"):
            parse_variant("v", {"source": "float", "backend": backend, field: value, **extra})
    with pytest.raises(ValueError, match="backend: unknown value 'tflite'; valid: converter, "
                                         "litert_quantizer, search, litert_torch"):
        parse_variant("v", {"source": "float", "backend": "tflite"})


def test_a_search_names_its_budget_and_labels(tiny_raw: dict) -> None:
    """The search's budget and labels are its own keys (conf/ sets them from the report's
    budget and evaluate.labels), so DVC reruns only its stage when they change; left out,
    each is refused with the usual value to give."""
    raw = tiny_raw
    auto = raw["quantization"]["variants"]["auto"]
    assert auto["budget"] == raw["report"]["max_accuracy_drop"]
    assert auto["labels"] == raw["evaluate"]["labels"]
    for field, usual in (("budget", "report.max_accuracy_drop"), ("labels", "evaluate.labels")):
        fields = {k: v for k, v in auto.items() if k != field}
        with pytest.raises(ValueError, match=rf"auto\.{field} is required; `{field}: "
                                             rf"\$\{{{usual}\}}`"):
            parse_variant("auto", fields)
    with pytest.raises(ValueError, match="auto.labels: unknown value 'both'; valid: data, model"):
        parse_variant("auto", {**auto, "labels": "both"})
