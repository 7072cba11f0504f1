"""Shared fixtures: the real default config shrunk to tiny sizes, and a tiny trained model.

Everything is real (Hydra composition, TFLite conversion, LiteRT interpreter, MLflow store);
only the sizes are small.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any

import pytest

from pipeline import config as config_mod
from pipeline import params as params_mod
from pipeline import data, sources

ROOT = Path(__file__).resolve().parent.parent
# A stage (or the Hydra app's step) that reads a config key its params in dvc.yaml do not
# list fails, in every test and in every process a test starts (`pipeline.reads`).
os.environ["LAB_STRICT_READS"] = "1"

# Overrides that make any pipeline run take seconds, not minutes: the default model (small_cnn)
# made narrow, and everything else short. TINY_OVERRIDES holds both; a test that brings its
# own model uses TINY_RUN_OVERRIDES (model keys depend on the architecture).
# (dense_units 32: blockwise int4 needs a multiple of 32 inputs per output)
TINY_MODEL_OVERRIDES = ("model.filters=[4,8]", "model.dense_units=32")
TINY_RUN_OVERRIDES = (
    "data=digits",  # the 8x8 digits: the default MNIST takes minutes to train on
    "train.epochs=3",
    "train.batch_size=32",
    "qat.epochs=1",
    "qat.batch_size=32",
    "train.learning_rate=0.01",
    "quantization.calibration_samples=16",
    "benchmark.warmup_seconds=0.01",
    "benchmark.min_runs=5",
    "benchmark.min_seconds=0.02",
    "benchmark.memory=false",  # measured in its own test: a subprocess per model is slow
    "benchmark.profile_rounds=5",
    # the calibration study: one variant, one size (and the pipeline's 16), two draws, three
    # selections (tests/test_calibration.py runs them all)
    "calibration.variants=[int8]",
    "calibration.sizes=[4]",
    "calibration.draws=2",
    "calibration.whole_split=false",
    "calibration.selections=[random,unconfident,misscaled]",
    "calibration.workers=1",
)
TINY_OVERRIDES = TINY_MODEL_OVERRIDES + TINY_RUN_OVERRIDES


@pytest.fixture(scope="session")
def tiny_raw() -> dict[str, Any]:
    """The composed default config with the tiny overrides, as a plain mapping."""
    return params_mod.compose(TINY_OVERRIDES)


@pytest.fixture(scope="session")
def tiny_cfg(tiny_raw: dict[str, Any]) -> config_mod.Config:
    return config_mod.parse_config(tiny_raw)


@pytest.fixture(scope="session")
def dataset(tiny_cfg: config_mod.Config, tmp_path_factory: pytest.TempPathFactory
            ) -> data.Dataset:
    """The default data (digits), prepared into a store as the prepare stage does."""
    return sources.prepare(tiny_cfg.data, tiny_cfg.seed, tmp_path_factory.mktemp("prepared"))


@pytest.fixture(scope="session")
def small_dataset(dataset: data.Dataset) -> data.Dataset:
    """A few hundred digits, in memory: enough to train a tiny model that beats chance."""
    return dataclasses.replace(dataset, x_train=dataset.x_train[:300], x_val=dataset.x_val[:],
                               y_train=dataset.y_train[:300], x_test=dataset.x_test[:60],
                               y_test=dataset.y_test[:60])


@pytest.fixture(scope="session")
def tiny_models(tiny_cfg: config_mod.Config, small_dataset: data.Dataset) -> dict[str, Any]:
    """A tiny float model and its QAT fine-tune, trained for real (one epoch each)."""
    from pipeline.produce import qat, train

    float_model, history, acc = train.train(small_dataset, tiny_cfg.model, tiny_cfg.train,
                                            tiny_cfg.seed)
    qat_model, qat_history, qat_acc, _ = qat.fine_tune(float_model, small_dataset, tiny_cfg.qat,
                                                       tiny_cfg.seed)
    return {"float": float_model, "qat": qat_model, "history": history, "accuracy": acc,
            "qat_history": qat_history, "qat_accuracy": qat_acc}


@pytest.fixture(scope="session")
def variant_dirs(tmp_path_factory: pytest.TempPathFactory, tiny_cfg: config_mod.Config,
                 small_dataset: data.Dataset, tiny_models: dict[str, Any]) -> Path:
    """Every configured variant of the tiny model, produced for real as the quantize stage
    does: `<root>/<variant>/` with the `.tflite`, `conversion.json` and per-layer errors."""
    from pipeline.artifacts import tflite_path
    from pipeline.produce import quantize
    from pipeline.produce.producer import Inputs, Source, Validation

    root = tmp_path_factory.mktemp("variants")
    calibration = data.calibration_samples(small_dataset, 16, tiny_cfg.seed)
    comparison = small_dataset.x_val[:8]
    float_tflite = tflite_path(root / "float32", "float32")  # the float model's .tflite
    validation = Validation(small_dataset.x_val, small_dataset.y_val, 0.01)
    specs = sorted(tiny_cfg.variants.items(), key=lambda kv: kv[0] != "float32")
    for name, spec in specs:  # float32 first: the LiteRT Quantizer starts from it
        # each kind's producer takes the form it starts from (the float .tflite: float only)
        source = Source.given(keras=tiny_models[spec.source],
                              float_tflite=float_tflite if spec.source == "float" else None)
        compared = spec.source == "float" and name != "float32"
        record = quantize.variant(spec, Inputs(
            source, calibration=calibration, comparison=comparison, validation=validation,
            float_tflite=float_tflite if compared else None), root / name)
        assert record["status"] == "ok", (name, record["error"])
    return root


@pytest.fixture(scope="session")
def models(variant_dirs: Path, tiny_cfg: config_mod.Config) -> dict[str, Path]:
    """The `.tflite` file of each variant, by name."""
    from pipeline.artifacts import tflite_path

    return {name: tflite_path(variant_dirs / name, name) for name in tiny_cfg.variants}


@pytest.fixture(scope="session")
def stage_results(models: dict[str, Path], variant_dirs: Path, tiny_cfg: config_mod.Config,
                  small_dataset: data.Dataset) -> dict[str, dict[str, Any]]:
    """What the quantize, evaluate and benchmark stages produce for every variant, computed
    by the same functions: `{"records": ..., "evaluations": ..., "benchmarks": ...}`."""
    from pipeline.artifacts import read_record
    from pipeline.measure import benchmark, evaluate, litert

    x, y = small_dataset.x_test, small_dataset.y_test
    reference = litert.Runner(models["float32"]).predict(x)
    ok = {"status": "ok"}
    return {
        "records": {v: read_record(variant_dirs / v) for v in tiny_cfg.variants},
        "evaluations": {v: {**ok, **evaluate.evaluate(models[v], x, y, reference, 32)}
                        for v in tiny_cfg.variants},
        "benchmarks": {v: {**ok, **benchmark.benchmark(
            models[v], x[:1], tiny_cfg.benchmark,
            None if v == "float32" else models["float32"], progress=False)}
            for v in tiny_cfg.variants},
    }


# Rough minutes of the longest test files on this machine, to start them first.
LONGEST = {"test_readme.py": 14, "test_field_models.py": 10, "test_interruption.py": 9,
           "test_models.py": 7, "test_e2e.py": 7}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The slow tests first, the longest first: `make test` runs two workers that steal work
    from each other (`-n 2 --dist worksteal`), so the long tests start at once and the short
    ones fill the gaps, instead of one long test starting last."""
    items.sort(key=lambda item: (item.get_closest_marker("slow") is None,
                                 -LONGEST.get(item.path.name, 0)))
