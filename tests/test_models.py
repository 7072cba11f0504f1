"""Every configured architecture converts and runs in every variant (tiny inputs)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest

from pipeline import config as config_mod
from pipeline import params as params_mod
from pipeline import artifacts, data
from pipeline.produce import layer_errors, model_store, qat, quantize, train
from pipeline.measure import litert
from pipeline.produce.producer import Inputs, Source, Validation
from pipeline.variants import FLOAT_TFLITE


@pytest.mark.slow  # resnet_small about 1 minute, mobilenet_v2 about 5 (per-layer debugging)
@pytest.mark.parametrize("model", ["resnet_small", "mobilenet_v2"])
def test_architecture_converts_and_runs_in_every_variant(model: str, dataset: data.Dataset,
                                                         tmp_path: Path) -> None:
    cfg = config_mod.parse_config(params_mod.compose(
        [f"model={model}", "train.epochs=1", "qat.epochs=0"]))
    tiny = dataclasses.replace(dataset, x_train=dataset.x_train[:32],
                               y_train=dataset.y_train[:32], x_val=dataset.x_val[:8],
                               y_val=dataset.y_val[:8], x_test=dataset.x_test[:8],
                               y_test=dataset.y_test[:8])
    float_model, _, _ = train.train(tiny, cfg.model, cfg.train, cfg.seed)
    qat_model, _, _, _ = qat.fine_tune(float_model, tiny, cfg.qat, cfg.seed)
    # As the stages do: every variant is converted from its model's forward pass, exported
    # once (converting from the Keras model saves it again each time, about 3x slower).
    saved = {"float": model_store.export_inference(float_model, tmp_path / "float_saved"),
             "qat": model_store.export_inference(qat_model, tmp_path / "qat_saved")}
    calibration = data.calibration_samples(tiny, 4, cfg.seed)
    float_tflite = None  # what the LiteRT Quantizer and the search start from, as in the step
    tables: dict[str, layer_errors.LayerTable] = {}  # per debugger setting, as the layer_errors step
    for name, spec in cfg.variants.items():
        source = saved[spec.source]
        validation = None
        if spec.source_form == FLOAT_TFLITE:
            assert float_tflite is not None, "float32 is converted first"
            source = float_tflite
            validation = (tiny.x_val, tiny.y_val, cfg.report.max_accuracy_drop)
        table = None
        if spec.full_integer:
            key = layer_errors.setting_key(spec)
            if key not in tables:
                tables[key] = layer_errors.layer_table(saved["float"], spec, calibration, None)
            table = tables[key]
        record = quantize.variant(spec, Inputs(
            Source.given(keras=source) if spec.source_form != FLOAT_TFLITE
            else Source.given(float_tflite=source), calibration=calibration,
            stored_table=lambda _, table=table: table,
            validation=Validation(*validation) if validation else None), tmp_path / name)
        if name == cfg.report.reference:
            float_tflite = artifacts.tflite_path(tmp_path / name, name)
        assert record["status"] == "ok", (name, record["error"])
        scores = litert.Runner(artifacts.tflite_path(tmp_path / name, name)).predict(tiny.x_test)
        assert scores.shape == (8, 10) and np.isfinite(scores).all(), name
        if spec.integer_only or name in ("int8", "qat_int8"):
            assert record["inspection"]["float_compute_ops"] == 0, name


def test_batch_norm_statistics_are_re_estimated_after_training() -> None:
    """After training, each batch norm's moving statistics become the average of its
    batches' own over the samples given (Keras' MobileNetV2 keeps momentum 0.999, so they
    lag far behind the trained weights), and the layers keep their momentum."""
    from pipeline.tfcompat import import_tf

    _, keras = import_tf(seed=0)
    model = keras.applications.MobileNetV2(input_shape=(32, 32, 3), alpha=0.35, weights=None,
                                           classes=10)
    x = np.random.default_rng(0).uniform(0, 1, (300, 32, 32, 3)).astype(np.float32)
    assert train.reestimate_batch_norms(model, x, 300) == 52
    norm = model.get_layer("bn_Conv1")
    conv = keras.Model(model.inputs, model.get_layer("Conv1").output)(x).numpy()
    assert np.allclose(norm.moving_mean.numpy(), conv.mean(axis=(0, 1, 2)), atol=1e-4)
    assert np.allclose(norm.moving_variance.numpy(), conv.var(axis=(0, 1, 2)), rtol=0.05)
    assert norm.momentum == 0.999
    plain = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
    assert train.reestimate_batch_norms(plain, x.reshape(300, -1)[:, :4]) == 0
