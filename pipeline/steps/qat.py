"""Step qat: quantization-aware fine-tuning of the float model."""

from __future__ import annotations

import logging

from pipeline import data
from pipeline.build import model_store
from pipeline.build import qat as qat_mod
from pipeline.config import Config
from pipeline.io import write_json
from pipeline.layout import Layout

log = logging.getLogger(__name__)


def run(cfg: Config, layout: Layout) -> float | None:
    """Fine-tune the float model with QAT; returns its test accuracy.

    A float model QAT cannot annotate (subclassed, Keras 3, a layer tfmot does not support)
    is not an error: the QAT model is recorded as unavailable with the reason, its accuracy
    is None, and the variants made from it are reported as failed.
    """
    float_dir = layout.keras("float")
    blocker = model_store.read_info(float_dir).get("qat_blocker")
    qat_model = None
    if not blocker:
        ds = data.load(layout.dataset)
        try:
            qat_model, hist, accuracy = qat_mod.fine_tune(model_store.load(float_dir), ds,
                                                          cfg.qat, cfg.seed)
        except qat_mod.QatUnsupported as exc:
            blocker = str(exc).splitlines()[0]
    if blocker:
        reason = f"QAT is not possible: {blocker}; {model_store.QAT_HOW_TO}"
        log.warning("%s. The post-training variants still run.", reason)
        model_store.save_unavailable(layout.keras("qat"), reason)
        write_json(layout.history("qat"), {})
        write_json(layout.keras_metrics("qat"), {"test_accuracy": None, "error": reason})
        return None
    model_store.save(qat_model, layout.keras("qat"), {"origin": "qat"})
    write_json(layout.history("qat"), hist)
    write_json(layout.keras_metrics("qat"), {"test_accuracy": accuracy})
    return accuracy
