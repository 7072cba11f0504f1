"""Slow: your own images and your own trained `.keras` model, through a real `dvc repro` in a
temporary copy of the project."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import TINY_RUN_OVERRIDES
from pipeline import config as config_mod
from pipeline import params as params_mod
from pipeline import data, sources
from pipeline.produce import model_store
from pipeline.io import read_json
from test_e2e import project_copy, run, runs

VARIANTS = ("float32", "dynamic_range", "int8", "qat_int8")  # float, PTQ, full-integer, QAT


def colour_folders(root: Path, per_class: int = 16) -> Path:
    """Three classes of 12x10 RGB images (PNG and JPEG) that differ in their dominant
    colour."""
    rng = np.random.default_rng(0)
    for c, name in enumerate(("red", "green", "blue")):
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            pixels = (rng.random((12, 10, 3)) * 90).astype(np.uint8)
            pixels[..., c] += 150
            Image.fromarray(pixels).save(root / name / f"{i}.{'png' if i % 2 else 'jpg'}")
    return root


def trained_model(path: Path, ds: data.Dataset) -> Path:
    """A Functional tf_keras model for the folder's 8x8 RGB images, trained elsewhere (here)."""
    from pipeline.tfcompat import import_tf

    _, keras = import_tf(seed=0)
    inputs = keras.Input(shape=ds.input_shape)
    x = keras.layers.Conv2D(4, 3, activation="relu")(inputs)
    x = keras.layers.GlobalAveragePooling2D()(x)
    model = keras.Model(inputs, keras.layers.Dense(ds.num_classes, activation="softmax")(x))
    model.compile(optimizer=keras.optimizers.Adam(0.05), loss="sparse_categorical_crossentropy")
    model.fit(np.asarray(ds.x_train), ds.y_train, epochs=30, verbose=0)
    model.save(path)
    return path


@pytest.mark.slow
def test_own_image_folder_and_own_keras_model_through_dvc_repro(tmp_path: Path) -> None:
    images = colour_folders(tmp_path / "photos")
    overrides = [*TINY_RUN_OVERRIDES, "data=image_folder", f"data.path={images}",
                 "data.image_size=[8,8]", "data.channels=3", "data.test_fraction=0.25",
                 "data.val_fraction=0.25", "model=file"]
    raw = params_mod.compose([*overrides, "model.path=unused"])
    cfg = config_mod.parse_config(raw)
    model_path = trained_model(tmp_path / "mine.keras",
                               sources.prepare(cfg.data, cfg.seed, tmp_path / "prepared"))
    raw = params_mod.compose([*overrides, f"model.path={model_path}"])
    raw["quantization"]["variants"] = {v: raw["quantization"]["variants"][v] for v in VARIANTS}
    project = project_copy(tmp_path / "lab")
    (project / "params.yaml").write_text(params_mod.render_params(raw))

    out = run([str(Path(sys.executable).parent / "dvc"), "repro"], project)

    ran = {line.split("'")[1] for line in out.splitlines() if line.startswith("Running stage")}
    assert "train" in ran and "quantize@qat_int8" in ran
    ds = data.load(project / "data" / "prepared")
    assert ds.input_shape == (8, 8, 3) and ds.num_classes == 3 and len(ds.x_test) == 12
    info = read_json(project / "models" / "keras" / "float" / model_store.INFO)
    assert info["origin"] == str(model_path.resolve()) and info["qat_blocker"] is None
    keras_accuracy = read_json(project / "models" / "keras" / "float_metrics.json")
    assert keras_accuracy["test_accuracy"] > 0.9  # the colours are easy: the model was loaded
    metrics = read_json(project / "reports" / "metrics.json")
    assert set(metrics) == set(VARIANTS)
    assert metrics["float32"]["accuracy"] == pytest.approx(keras_accuracy["test_accuracy"])
    for v in VARIANTS:
        assert (project / "models" / "tflite" / v / f"{v}.tflite").stat().st_size > 0
        assert metrics[v]["accuracy"] > 0.6, v
    parent = next(r for r in runs(project) if "mlflow.parentRunId" not in r.data.tags)
    assert parent.info.status == "FINISHED"
    assert parent.data.params["model.name"] == "file"
    assert parent.data.params["data.name"] == "image_folder"
    assert parent.info.run_name == "file-image_folder"
