"""Step train: train the float Keras model, or with `model.arch: file` load the user's model,
check that it fits the data, and measure it."""

from __future__ import annotations

import logging
from pathlib import Path

from pipeline import data, reads
from pipeline.produce import model_store
from pipeline.produce import train as train_mod
from pipeline.config import FROM_FILE, Config
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
            if cfg.model.arch != FROM_FILE:
                raise ValueError(f"data.path {cfg.data.path} {labels.UNLABELLED}")
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
