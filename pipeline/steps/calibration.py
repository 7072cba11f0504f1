"""Step calibration: the calibration study (`pipeline.produce.calibration`): each studied
variant calibrated on draws of every selection and size from the training split, each point
evaluated on the test split and compared with the float model (imports TensorFlow)."""

from __future__ import annotations

from typing import Any

from pipeline import data, labels
from pipeline.config import Config
from pipeline.layout import Layout
from pipeline.produce import calibration, model_store


def run(cfg: Config, layout: Layout) -> dict[str, Any]:
    """Write the study's folder (`layout.calibration`); returns the study."""
    c = cfg.calibration
    specs = {name: cfg.variants[name] for name in c.variants}
    train_size = len(data.load(layout.dataset).y_train)
    # the main pipeline's own size is always a point: the study says whether it is enough
    sizes = sorted({*c.sizes, cfg.quantization.calibration_samples})
    points = calibration.grid(list(specs), c.selections, sizes, c.draws, train_size,
                              c.whole_split)
    setting = calibration.Setting(
        dataset=layout.dataset, model_dir=layout.keras("float"),
        float_tflite=model_store.float_tflite(layout.keras("float")), specs=specs,
        misscale=c.misscale, comparison_samples=cfg.quantization.comparison_samples,
        label_free=labels.label_free(cfg))
    return calibration.run(setting, points, cfg.seed, layout.calibration,
                           layout.calibration_cache, workers=c.worker_count,
                           main_size=cfg.quantization.calibration_samples)
