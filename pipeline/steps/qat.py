"""Step qat: quantization-aware fine-tuning of the float model."""

from __future__ import annotations

import dataclasses
import logging

from pipeline import data
from pipeline.produce import model_store
from pipeline.produce import qat as qat_mod
from pipeline.config import Config
from pipeline.io import write_json
from pipeline.layout import Layout
from pipeline import labels

log = logging.getLogger(__name__)

QAT_LAYERS_HOW_TO = ("to get QAT, replace the layers the message names with ones tfmot "
                     "supports, or name the layers to annotate in qat.layers")


def run(cfg: Config, layout: Layout) -> float | None:
    """Fine-tune the float model with QAT; returns its test accuracy.

    QAT covers as much of the model as tfmot can annotate (`pipeline.produce.qat`); what it
    covers goes into the QAT model's `model.json` and `qat_metrics.json` (`coverage`). A
    model QAT cannot take at all (subclassed, Keras 3, nothing tfmot supports, or tfmot or
    Keras failing on it) is not an error: the QAT model is recorded as unavailable with the
    reason, its accuracy is None, and the variants made from it are reported as failed.
    """
    float_dir = layout.keras("float")
    info = model_store.read_info(float_dir)
    blocker = info.get("qat_blocker")
    how_to = model_store.QAT_HOW_TO  # the model's kind blocks QAT ...
    if info.get("intake"):  # ... or it came from another framework
        how_to = model_store.QAT_CONVERTED_HOW_TO
    if not blocker:
        how_to = QAT_LAYERS_HOW_TO  # ... or tfmot failed on its layers
        ds = data.load(layout.dataset)
        try:
            with qat_mod.third_party("the float model could not be loaded for QAT"):
                float_model = model_store.load(float_dir)
            if labels.label_free(cfg):  # fine-tune towards the float model's own answers
                ds = dataclasses.replace(ds, **{
                    f"y_{s}": model_store.predict(float_model, getattr(ds, f"x_{s}")
                                                  ).argmax(axis=1) for s in data.SPLITS})
            qat_model, hist, accuracy, cover = qat_mod.fine_tune(float_model, ds, cfg.qat,
                                                                 cfg.seed)
            with qat_mod.third_party("the QAT model could not be stored"):
                model_store.save(qat_model, layout.keras("qat"), {
                    "origin": "qat", "qat": cover,  # its layers need the float model's classes
                    "custom_objects": model_store.read_info(float_dir).get("custom_objects", [])},
                    float_tflite=False)
        except qat_mod.QatUnsupported as exc:
            blocker = str(exc).splitlines()[0]
    if blocker:
        reason = f"QAT is not possible: {blocker}; {how_to}"
        log.warning("%s. The post-training variants still run.", reason)
        model_store.save_unavailable(layout.keras("qat"), reason)
        write_json(layout.history("qat"), {})
        write_json(layout.keras_metrics("qat"), {"test_accuracy": None, "error": reason})
        return None
    write_json(layout.history("qat"), hist)
    write_json(layout.keras_metrics("qat"), {"test_accuracy": accuracy, "coverage": cover})
    return accuracy
