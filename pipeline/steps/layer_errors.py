"""Step layer_errors: the per-layer error of the float model under each full-integer
setting, computed once with TensorFlow's QuantizationDebugger, not once per variant (it is
the slowest part of quantizing a real model). Calibrated on the calibration samples
(training split), compared on as many validation samples."""

from __future__ import annotations

import logging
from typing import Any

from pipeline import data
from pipeline.produce import layer_errors
from pipeline.produce import model_store
from pipeline.produce.layer_errors import INDEX, LayerTable, layer_table
from pipeline.config import Config
from pipeline.io import atomic_dir, write_json, write_text
from pipeline.layout import Layout
from pipeline.variants import VariantSpec

log = logging.getLogger(__name__)

def settings(cfg: Config) -> dict[str, list[VariantSpec]]:
    """The full-integer variants, grouped by their debugger setting."""
    groups: dict[str, list[VariantSpec]] = {}
    for spec in cfg.variants.values():
        if spec.full_integer and not spec.adjusts_weights:  # adjusted: its producer's own
            groups.setdefault(layer_errors.setting_key(spec), []).append(spec)
    return groups


def run(cfg: Config, layout: Layout) -> dict[str, Any]:
    """Write `layout.layer_errors`: `<key>.csv` per setting and `index.json`; returns the
    index. A table the debugger cannot give is recorded with its reason."""
    groups = settings(cfg)
    index: dict[str, Any] = {}
    with atomic_dir(layout.layer_errors) as out:
        if groups:
            try:
                source = model_store.conversion_source(layout.keras("float"))
            except model_store.ModelUnavailable as exc:
                source, unavailable = None, str(exc)
            ds = data.load(layout.dataset)
            calibration = data.calibration_samples(ds, cfg.quantization.calibration_samples,
                                                   cfg.seed)
            selection = ds.x_val[:cfg.quantization.calibration_samples]
        for key, specs in groups.items():
            table = (layer_table(source, specs[0], calibration, selection) if source
                     else LayerTable(None, unavailable))
            entry: dict[str, Any] = {"variants": [s.name for s in specs]}
            if table.rows is not None:
                write_text(out / f"{key}.csv", layer_errors.to_csv(table.rows))
                entry.update(status="ok", error=None, layers=len(table.rows))
                log.info("per-layer error (%s): %d layers, for %s", key, len(table.rows),
                         ", ".join(entry["variants"]))
            else:
                entry.update(status="failed", error=table.error)
            index[key] = entry
        write_json(out / INDEX, index)
    return index
