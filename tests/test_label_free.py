"""A model from somewhere else, with data that does not fit the lab's defaults: its own input
range ([-1, 1], or per-channel mean and std) applied once where samples are read (so training,
calibration and evaluation all see it), a test split missing classes the model has, and no
labels at all (the reference's own predictions are what the variants are scored against).
The real steps run on tiny data."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from conftest import TINY_OVERRIDES, TINY_RUN_OVERRIDES
from pipeline import config as config_mod
from pipeline import params as params_mod
from pipeline import data, sources
from pipeline.io import read_json
from pipeline.layout import Layout


def cfg_with(*overrides: str) -> config_mod.Config:
    return config_mod.parse_config(params_mod.compose([*TINY_RUN_OVERRIDES, *overrides]))


def test_an_input_range_is_applied_where_samples_are_read(tmp_path: Path) -> None:
    plain = sources.prepare(cfg_with().data, 0, tmp_path / "plain")
    cfg = cfg_with(*TINY_OVERRIDES, "data.scale=2", "data.offset=-1")
    ds = sources.prepare(cfg.data, 0, tmp_path / "pm1")
    x = np.asarray(ds.x_train)
    assert x.min() == -1.0 and x.max() == 1.0
    np.testing.assert_allclose(x, np.asarray(plain.x_train) * 2 - 1, atol=1e-6)
    cal = data.calibration_samples(ds, 16, 0)  # the calibration draw sees it too
    assert cal.min() < -0.9 and cal.max() > 0.9
    assert data.meta(tmp_path / "pm1")["input_range"]["describe"].startswith("[-1, 1]")
    norm = sources.prepare(cfg_with("data.normalize={mean: [0.5], std: [0.25]}").data, 0,
                           tmp_path / "norm")
    np.testing.assert_allclose(np.asarray(norm.x_test), (np.asarray(plain.x_test) - 0.5) / 0.25,
                               atol=1e-5)
    with pytest.raises(ValueError, match="data.normalize and data.scale/data.offset both set"):
        cfg_with("data.normalize={mean: [0.5], std: [0.25]}", "data.scale=2")
    with pytest.raises(ValueError, match="data.normalize has 3 values per statistic"):
        sources.prepare(cfg_with("data.normalize={mean: [0.5,0.5,0.5], std: [1,1,1]}").data,
                        0, tmp_path / "bad")
    assert not (tmp_path / "bad").exists()  # nothing half-written


@pytest.mark.slow
def test_a_model_trained_on_minus_one_to_one_is_calibrated_on_that_range(
        tmp_path: Path) -> None:
    from pipeline.produce import quantize, train
    from pipeline.produce.producer import Inputs, Source
    from pipeline.measure import litert

    cfg = cfg_with(*TINY_OVERRIDES, "data.scale=2", "data.offset=-1")
    ds = sources.prepare(cfg.data, cfg.seed, tmp_path / "prepared")
    model, _, accuracy = train.train(ds, cfg.model, cfg.train, cfg.seed)
    assert accuracy > 0.5  # it learned on [-1, 1] inputs
    record = quantize.variant(cfg.variants["int8_full"], Inputs(
        Source.given(keras=model), calibration=data.calibration_samples(ds, 16, cfg.seed)),
        tmp_path / "int8_full")
    assert record["status"] == "ok", record.get("error")
    runner = litert.Runner(tmp_path / "int8_full" / "int8_full.tflite")
    scale, zero_point = runner.input["quantization"]
    # [0, 1] would give zero point -128; [-1, 1] puts 0.0 in the middle of int8's range.
    assert abs(zero_point) <= 1 and scale == pytest.approx(2 / 255, rel=0.05)


def _digits_folder(root: Path, ds: data.Dataset, n: int) -> Path:
    """`n` 8x8 digit images as PNG files in one folder, no class folders: unlabelled."""
    root.mkdir(parents=True)
    x = np.asarray(ds.x_test[:n])
    for i, img in enumerate(x):
        Image.fromarray((img[..., 0] * 255).astype(np.uint8)).save(root / f"{i:03d}.png")
    return root


@pytest.fixture(scope="module")
def digits_model(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, data.Dataset]:
    """A digits classifier trained elsewhere (here), saved as a user's `.keras` file."""
    from pipeline.tfcompat import import_tf

    tmp = tmp_path_factory.mktemp("digits_model")
    ds = sources.prepare(cfg_with().data, 0, tmp / "prepared")
    _, keras = import_tf(seed=0)
    inputs = keras.Input(shape=ds.input_shape)
    x = keras.layers.Conv2D(8, 3, activation="relu")(inputs)
    x = keras.layers.Dense(10, activation="softmax")(keras.layers.Flatten()(x))
    model = keras.Model(inputs, x)
    model.compile(optimizer=keras.optimizers.Adam(0.01), loss="sparse_categorical_crossentropy")
    model.fit(np.asarray(ds.x_train), ds.y_train, epochs=10, verbose=0)
    model.save(tmp / "digits.keras")
    return tmp / "digits.keras", ds


def _steps(cfg: config_mod.Config, lay: Layout, variants: tuple[str, ...]) -> dict[str, Any]:
    """prepare, train (the user's file), qat, quantize, reference_outputs, evaluate,
    benchmark and footprint of `variants`; returns the evaluations."""
    from pipeline.steps import (benchmark, evaluate, footprint, prepare, qat, quantize,
                                reference_outputs, train)

    prepare.run(cfg, lay)
    train.run(cfg, lay)
    qat.run(cfg, lay)
    for v in variants:
        assert quantize.run(cfg, lay, v)["status"] == "ok", v
    reference_outputs.run(cfg, lay)
    results = {v: evaluate.run(cfg, lay, v) for v in variants}
    for v in variants:
        benchmark.run(cfg, lay, v, progress=False)
    footprint.run(cfg, lay)
    return results


@pytest.mark.slow
def test_a_test_split_missing_classes_still_runs(
        digits_model: tuple[Path, data.Dataset], tmp_path: Path) -> None:
    model_path, ds = digits_model
    keep = lambda y: y < 7  # noqa: E731  (classes 7, 8, 9 never appear)
    npz = tmp_path / "seven.npz"
    np.savez(npz, x_train=np.asarray(ds.x_train)[keep(ds.y_train)],
             y_train=ds.y_train[keep(ds.y_train)], x_test=np.asarray(ds.x_test)[keep(ds.y_test)],
             y_test=ds.y_test[keep(ds.y_test)])
    variants = ("float32", "dynamic_range")
    cfg = cfg_with("data=npz", f"data.path={npz}", "model=file", f"model.path={model_path}")
    cfg = dataclasses.replace(cfg, quantization=dataclasses.replace(
        cfg.quantization, variants={v: cfg.variants[v] for v in variants}))
    lay = Layout(tmp_path / "run")
    results = _steps(cfg, lay, variants)
    stored = data.load(lay.dataset)
    assert stored.num_classes == 7 and set(stored.y_test) <= set(range(7))
    ev = results["float32"]  # the model's 10 classes, though the labels use 7
    matrix = np.array(read_json(lay.evaluation("float32") / "confusion_matrix.json"))
    assert len(ev["per_class_accuracy"]) == 10 and matrix.shape == (10, 10)
    assert ev["accuracy"] > 0.5
    assert read_json(lay.keras_metrics("float"))["test_accuracy"] == pytest.approx(
        ev["accuracy"], abs=0.02)


@pytest.mark.slow
def test_unlabelled_images_are_scored_against_the_models_own_predictions(
        digits_model: tuple[Path, data.Dataset], tmp_path: Path) -> None:
    from pipeline.steps import calibration, report, train

    model_path, ds = digits_model
    folder = _digits_folder(tmp_path / "unlabelled", ds, 120)
    variants = ("float32", "dynamic_range", "int8")
    base = ("data=image_folder", f"data.path={folder}", "data.image_size=[8,8]",
            "data.channels=1", "model=file", f"model.path={model_path}")
    with pytest.raises(ValueError, match="has no labels"):  # labels needed, none there
        refused = cfg_with(*base)
        from pipeline.steps import prepare

        lay = Layout(tmp_path / "refused")
        prepare.run(refused, lay)
        train.run(refused, lay)
    cfg = cfg_with(*base, "evaluate.labels=model")
    cfg = dataclasses.replace(cfg, quantization=dataclasses.replace(
        cfg.quantization, variants={v: cfg.variants[v] for v in variants}))
    lay = Layout(tmp_path / "run")
    results = _steps(cfg, lay, variants)
    assert not data.load(lay.dataset).labelled
    assert read_json(lay.keras_metrics("float"))["test_accuracy"] is None
    # QAT fine-tuned towards the float model's own answers: its "accuracy" is agreement.
    assert read_json(lay.keras_metrics("qat"))["test_accuracy"] > 0.8
    ref = results["float32"]
    assert ref["labels"] == "model" and ref["accuracy"] == 1.0  # the reference agrees with itself
    for v in ("dynamic_range", "int8"):
        assert results[v]["accuracy"] == pytest.approx(results[v]["agreement"])
        assert results[v]["output_kl"] >= 0 and results[v]["output_sqnr_db"] > 10
    # the calibration study scores its points the same way: agreement with the float model
    study = calibration.run(cfg, lay)
    assert study["label_free"] and study["float"]["accuracy"] == 1.0 and study["points"]
    assert all(p["accuracy"] == pytest.approx(p["agreement"]) for p in study["points"])
    report.run(cfg, lay)
    md = lay.report("summary.md").read_text()
    assert "No accuracy was measured." in md and "evaluate.labels: model" in md
    summary = read_json(lay.report("summary.json"))
    assert summary["int8"]["accuracy_drop"] == pytest.approx(1 - results["int8"]["agreement"])
    assert summary["int8"]["budget_verdict"] in ("within", "unresolved", "misses")
