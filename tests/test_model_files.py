"""Bring your own model: `.keras`, `.h5` and SavedModel files made here with tf_keras and
Keras 3, loaded by the train step, stored, quantized for real; QAT falls back with a reason
when the model cannot take it."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from pipeline import config as config_mod
from pipeline import params as params_mod
from pipeline import data
from pipeline.produce import model_store
from pipeline.io import read_json, write_json
from pipeline.layout import Layout
from pipeline.steps import qat as qat_step_mod
from pipeline.steps import quantize as quantize_step_mod
from pipeline.steps import train as train_step_mod


def functional(input_shape: tuple[int, ...] = (8, 8, 1), classes: int = 10,
               lambda_layer: bool = False) -> Any:
    from pipeline.tfcompat import import_tf

    _, keras = import_tf(seed=0)
    inputs = keras.Input(shape=input_shape)
    x = keras.layers.Lambda(lambda t: t * 2.0)(inputs) if lambda_layer else inputs
    x = keras.layers.Conv2D(4, 3, activation="relu")(x)
    x = keras.layers.Flatten()(x)
    return keras.Model(inputs, keras.layers.Dense(classes, activation="softmax")(x))


def fitted(model: Any, ds: data.Dataset) -> Any:
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    model.fit(np.asarray(ds.x_train), ds.y_train, epochs=3, batch_size=32, verbose=0)
    return model


def subclassed_saved_model(path: Path) -> Path:
    from pipeline.tfcompat import import_tf

    _, keras = import_tf(seed=0)

    class Tiny(keras.Model):
        def __init__(self) -> None:
            super().__init__()
            self.flat = keras.layers.Flatten()
            self.out = keras.layers.Dense(10, activation="softmax")

        def call(self, x: Any) -> Any:
            return self.out(self.flat(x))

    model = Tiny()
    model(np.zeros((1, 8, 8, 1), np.float32))
    model.save(path, save_format="tf")
    return path


def keras3_file(path: Path) -> Path:
    import keras  # Keras 3, which TensorFlow installs

    inputs = keras.Input(shape=(8, 8, 1))
    x = keras.layers.Flatten()(inputs)
    keras.Model(inputs, keras.layers.Dense(10, activation="softmax")(x)).save(path)
    return path


def independent_accuracy(path: Path, ds: data.Dataset) -> float:
    """Test accuracy of a model file, computed without the lab's loaders: Keras 3 for a
    `.keras` file of Keras 3, TensorFlow's SavedModel signature for a folder."""
    if path.suffix == ".keras":
        import keras

        scores = keras.saving.load_model(path).predict(np.asarray(ds.x_test), verbose=0)
    else:
        from pipeline.tfcompat import import_tf

        tf, _ = import_tf()
        signature = tf.saved_model.load(str(path)).signatures["serving_default"]
        scores = next(iter(signature(tf.constant(np.asarray(ds.x_test))).values())).numpy()
    return float(np.mean(np.argmax(scores, -1) == ds.y_test))


@pytest.fixture()
def workspace(tmp_path: Path, dataset: data.Dataset) -> Layout:
    lay = Layout(tmp_path)
    data.save(dataset, lay.dataset)
    return lay


def file_cfg(cfg: config_mod.Config, path: Path, **kw: Any) -> config_mod.Config:
    """`cfg` with conf/model/file.yaml's model, loading `path`, and `kw` changed."""
    model = {**params_mod.compose(["model=file"])["model"], "path": str(path), **kw}
    return dataclasses.replace(cfg, model=config_mod.parse_model(model))


def train_step(cfg: config_mod.Config, lay: Layout) -> float | None:
    return train_step_mod.run(cfg, lay)


def qat_step(cfg: config_mod.Config, lay: Layout) -> float | None:
    return qat_step_mod.run(cfg, lay)


def quantize_step(cfg: config_mod.Config, lay: Layout, variant: str) -> dict[str, Any]:
    return quantize_step_mod.run(cfg, lay, variant)


@pytest.mark.parametrize("suffix", [".keras", ".h5", "_savedmodel"])
def test_a_tf_keras_file_gets_every_variant_qat_included(
        suffix: str, tmp_path: Path, tiny_cfg: config_mod.Config, dataset: data.Dataset,
        workspace: Layout) -> None:
    model = fitted(functional(), dataset)
    path = tmp_path / f"mine{suffix}"
    model.save(path, **({"save_format": "tf"} if suffix == "_savedmodel" else {}))
    expected = float(np.mean(np.argmax(model.predict(np.asarray(dataset.x_test), verbose=0), -1)
                             == dataset.y_test))
    cfg = file_cfg(tiny_cfg, path)

    accuracy = train_step(cfg, workspace)

    assert accuracy == pytest.approx(expected)  # loaded, not retrained
    assert accuracy > 0.5  # the model was trained on digits: it beats chance (0.1)
    info = read_json(workspace.keras("float") / model_store.INFO)
    assert info["format"] == "h5" and info["qat_blocker"] is None and info["kind"] == "tf_keras"
    assert read_json(workspace.history("float")) == {}
    assert qat_step(cfg, workspace) is not None
    for variant in ("int8", "qat_int8"):
        record = quantize_step(cfg, workspace, variant)
        assert record["status"] == "ok", record["error"]


def keras3_export(path: Path) -> Path:
    """A plain SavedModel (no tf_keras metadata), as Keras 3's `export` writes it."""
    import keras

    keras.saving.load_model(keras3_file(path.with_suffix(".keras"))).export(
        str(path), format="tf_saved_model", verbose=False)
    return path


BLOCKED = {"subclassed": ("subclassed model", subclassed_saved_model),
           "keras3": ("Keras 3 model", lambda p: keras3_file(p.with_suffix(".keras"))),
           "plain_savedmodel": ("not saved from a tf_keras model", keras3_export)}


@pytest.mark.parametrize("kind", list(BLOCKED))
def test_a_model_qat_cannot_annotate_still_gets_the_post_training_variants(
        kind: str, tmp_path: Path, tiny_cfg: config_mod.Config, dataset: data.Dataset,
        workspace: Layout) -> None:
    expected, make = BLOCKED[kind]
    path = make(tmp_path / "mine")
    cfg = file_cfg(tiny_cfg, path)

    accuracy = train_step(cfg, workspace)
    qat_accuracy = qat_step(cfg, workspace)

    assert accuracy == pytest.approx(independent_accuracy(path, dataset))
    info = read_json(workspace.keras("float") / model_store.INFO)
    assert info["format"] == "saved_model"
    assert expected in info["qat_blocker"]
    assert qat_accuracy is None
    qat_metrics = read_json(workspace.keras_metrics("qat"))
    assert qat_metrics["test_accuracy"] is None
    assert expected in qat_metrics["error"] and "Functional API" in qat_metrics["error"]
    for variant in ("dynamic_range", "int8_full"):  # from the SavedModel, debugger included
        record = quantize_step(cfg, workspace, variant)
        assert record["status"] == "ok", record["error"]
        assert (workspace.variant(variant) / f"{variant}.tflite").stat().st_size > 0
    qat_record = quantize_step(cfg, workspace, "qat_int8")
    assert qat_record["status"] == "failed" and expected in qat_record["error"]
    assert not (workspace.variant("qat_int8") / "qat_int8.tflite").exists()


def test_safe_mode_refuses_lambda_code_unless_allowed(
        tmp_path: Path, tiny_cfg: config_mod.Config, workspace: Layout) -> None:
    path = tmp_path / "lambda.h5"
    functional(lambda_layer=True).save(path)
    with pytest.raises(ValueError, match="Lambda layer with Python code.*safe_mode=false"):
        train_step(file_cfg(tiny_cfg, path), workspace)
    assert not workspace.keras("float").exists()
    train_step(file_cfg(tiny_cfg, path, safe_mode=False), workspace)  # trusted: loads
    assert read_json(workspace.keras("float") / model_store.INFO)["status"] == "ok"


LAYER_SCALE = "tf_keras.src.applications.convnext:LayerScale"  # ConvNeXt's, not registered


def test_a_model_with_a_library_s_own_layer_loads_once_the_class_is_named(
        tmp_path: Path, tiny_cfg: config_mod.Config, dataset: data.Dataset,
        workspace: Layout) -> None:
    """Keras' ConvNeXt saved as .h5 cannot be loaded back without its `LayerScale` class:
    the error says how to name it, and with `model.custom_objects` the file gets its
    variants and QAT of the layers tfmot supports (the train and qat stages both load it)."""
    from pipeline.tfcompat import import_tf
    from tf_keras.src.applications.convnext import LayerScale

    _, keras = import_tf(seed=0)
    inputs = keras.Input(shape=(8, 8, 1))
    x = keras.layers.Conv2D(4, 3, activation="relu")(inputs)
    x = LayerScale(1e-1, 4)(x)
    x = keras.layers.Flatten()(x)
    model = fitted(keras.Model(inputs, keras.layers.Dense(10, activation="softmax")(x)),
                   dataset)
    path = tmp_path / "convnext_like.h5"
    model.save(path)
    keras.utils.get_custom_objects().pop("LayerScale", None)  # as in a fresh process

    with pytest.raises(ValueError, match=r"Unknown layer.*LayerScale.*model\.custom_objects"):
        train_step(file_cfg(tiny_cfg, path), workspace)
    with pytest.raises(ValueError, match=r"model.custom_objects: cannot import 'no.such:Cls'"):
        train_step(file_cfg(tiny_cfg, path, custom_objects=["no.such:Cls"]), workspace)
    assert not workspace.keras("float").exists()

    cfg = file_cfg(tiny_cfg, path, custom_objects=[LAYER_SCALE])
    accuracy = train_step(cfg, workspace)
    keras.utils.get_custom_objects().pop("LayerScale", None)  # the qat stage is a new process

    assert accuracy == pytest.approx(float(np.mean(np.argmax(model.predict(
        np.asarray(dataset.x_test), verbose=0), -1) == dataset.y_test)))
    assert qat_step(cfg, workspace) is not None
    coverage = read_json(workspace.keras_metrics("qat"))["coverage"]
    assert coverage["mode"] == "partial" and coverage["annotated_layers"] < coverage["layers"]
    for variant in ("int8", "qat_int8"):
        record = quantize_step(cfg, workspace, variant)
        assert record["status"] == "ok", record["error"]


def test_a_model_that_does_not_fit_the_data_is_refused_before_anything_runs(
        tmp_path: Path, tiny_cfg: config_mod.Config, workspace: Layout) -> None:
    functional(input_shape=(28, 28, 1)).save(tmp_path / "mnist.keras")
    with pytest.raises(ValueError, match=r"takes inputs of shape \(28, 28, 1\).*\(8, 8, 1\)"):
        train_step(file_cfg(tiny_cfg, tmp_path / "mnist.keras"), workspace)
    functional(classes=5).save(tmp_path / "five.keras")
    with pytest.raises(ValueError, match=r"output is \(None, 5\), but the data has 10 "):
        train_step(file_cfg(tiny_cfg, tmp_path / "five.keras"), workspace)
    functional(classes=12).save(tmp_path / "twelve.keras")  # scores past the last label ...
    declared = file_cfg(tiny_cfg, tmp_path / "twelve.keras")
    declared = dataclasses.replace(declared, data=dataclasses.replace(declared.data,
                                                                      num_classes=10))
    with pytest.raises(ValueError, match=r"scores 12 classes, but data.num_classes is 10"):
        train_step(declared, workspace)  # ... refused when the config says there are 10
    from pipeline.tfcompat import import_tf

    _, keras = import_tf()
    inputs = keras.Input(shape=(8, 8, 1), dtype="uint8")
    x = keras.layers.Flatten()(keras.layers.Rescaling(1 / 255)(inputs))
    keras.Model(inputs, keras.layers.Dense(10)(x)).save(tmp_path / "uint8.keras")
    with pytest.raises(ValueError, match="takes uint8 inputs; the lab feeds float32"):
        train_step(file_cfg(tiny_cfg, tmp_path / "uint8.keras"), workspace)
    assert not workspace.keras("float").exists()
    assert not workspace.keras_metrics("float").exists()


def test_stored_models_are_replaced_atomically(tmp_path: Path, dataset: data.Dataset) -> None:
    model = functional()
    out = model_store.save(model, tmp_path / "float", {"origin": "first"})
    write_json(out / "extra.json", {})  # a leftover of the old output
    model_store.save(model, out, {"origin": "second"})
    assert sorted(p.name for p in out.iterdir()) == sorted(
        [model_store.INFO, model_store.H5, model_store.SAVED_MODEL, model_store.FLOAT_TFLITE])
    assert read_json(out / model_store.INFO)["origin"] == "second"
    assert [p.name for p in tmp_path.iterdir()] == ["float"]  # no temporary folders left
    loaded = model_store.load(out)
    np.testing.assert_allclose(loaded.predict(dataset.x_test[:4], verbose=0),
                               model.predict(dataset.x_test[:4], verbose=0), rtol=1e-6)
