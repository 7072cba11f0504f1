"""Step train: train the float Keras model, or with `model.arch: file` load the user's model,
check that it fits the data, and measure it; with `onnx` or `torch`, store the model the
intake step converted (and measure it)."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from pipeline import data, reads
from pipeline.produce import intake, model_store
from pipeline.produce import train as train_mod
from pipeline.config import FROM_FILE, ONNX, TORCH, Config
from pipeline.io import write_json
from pipeline.layout import Layout
from pipeline import labels

log = logging.getLogger(__name__)


def run(cfg: Config, layout: Layout) -> float | None:
    """Write the float model's folder, its history and its test accuracy; returns the latter.

    Raises:
        FileNotFoundError, ValueError: a missing or unloadable model file, or one whose input
            does not fit the data (nothing is written).
    """
    ds = data.load(layout.dataset)
    with reads.unrecorded():  # checks: they refuse, or the step goes on as if unread
        if not ds.labelled:
            labels.check(cfg, ds, f"data.path {cfg.data.path}")
            if cfg.model.arch not in (FROM_FILE, ONNX, TORCH):
                raise ValueError(f"data.path {cfg.data.path} {labels.UNLABELLED}")
    if cfg.model.arch in (ONNX, TORCH):  # converted by the intake step
        return _store_converted(cfg, layout, ds, intake.read_info(layout.intake))
    if cfg.model.arch == FROM_FILE:
        model, kind, blocker = model_store.load_user_model(
            cfg.model.path, cfg.model.safe_mode, cfg.model.custom_objects)
        with reads.unrecorded():
            model_store.check_fits(model, ds.input_shape, ds.num_classes,
                                   declared=cfg.data.num_classes)
        # On the data's labels whenever there are some; label-free runs (evaluate.labels:
        # model) do not show it (the report and the tracking read evaluate.labels).
        accuracy = (model_store.accuracy(model, ds.x_test, ds.y_test) if ds.labelled
                    else None)
        hist: dict[str, list[float]] = {}  # not trained here
        info = {"origin": str(Path(cfg.model.path).expanduser().resolve()), "kind": kind,
                "custom_objects": list(cfg.model.custom_objects)}  # what loading it needs
        log.info("model %s (%s): test accuracy %s", cfg.model.path, kind,
                 "not measured (no labels)" if accuracy is None else f"{accuracy:.4f}")
    else:
        model, hist, accuracy = train_mod.train(ds, cfg.model, cfg.train, cfg.seed)
        info, blocker = {"origin": "trained", "kind": "tf_keras"}, None
    if blocker:
        log.warning("QAT will not be possible: %s; the post-training variants still run "
                    "(%s)", blocker, model_store.QAT_HOW_TO)
    model_store.save(model, layout.keras("float"), info, blocker)
    write_json(layout.history("float"), hist)
    write_json(layout.keras_metrics("float"), {"test_accuracy": accuracy})
    return accuracy


def _store_converted(cfg: Config, layout: Layout, ds: data.Dataset,
                     converted: dict) -> float | None:
    """Store the intake's model as the float model (ONNX: its SavedModel; PyTorch: its
    `.tflite` and program), measured on the test split; its metrics carry the intake's
    facts (the report's conversion line)."""
    info = {"origin": converted["origin"], "kind": converted["format"],
            "intake": {k: v for k, v in converted.items() if k != "origin"}}
    if converted["format"] == ONNX:
        saved = layout.intake / intake.SAVED_MODEL
        model, _, _ = model_store.load_user_model(saved)
        accuracy = model_store.accuracy(model, ds.x_test, ds.y_test) if ds.labelled else None
        blocker = (f"the model came from ONNX (a SavedModel made by {converted['converter']}, "
                   "not a tf_keras model)")
        model_store.save(model, layout.keras("float"), info, blocker)
    else:
        from pipeline.measure import litert

        tflite = layout.intake / intake.FLOAT_TFLITE
        accuracy = None
        if ds.labelled:
            top1 = litert.Runner(tflite, batch_size=intake.BATCH).predict(ds.x_test).argmax(1)
            accuracy = float(np.mean(top1 == ds.y_test))
        model_store.save_tflite(layout.keras("float"), tflite,
                                layout.intake / intake.PROGRAM, info)
        blocker = model_store.NOT_TENSORFLOW
    log.warning("QAT will not be possible: %s; the post-training variants still run", blocker)
    log.info("model %s (%s, converted by %s): test accuracy %s", cfg.model.path,
             converted["format"], converted["converter"],
             "not measured (no labels)" if accuracy is None else f"{accuracy:.4f}")
    write_json(layout.history("float"), {})
    write_json(layout.keras_metrics("float"), {"test_accuracy": accuracy, "intake": converted})
    return accuracy
