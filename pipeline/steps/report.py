"""Step report: the summary of every variant, the recommendation and the candidate under the
budget, plots, and the report in Markdown and HTML (no TensorFlow)."""

from __future__ import annotations

from pathlib import Path

from pipeline import artifacts, data
from pipeline.config import Config
from pipeline.io import read_json
from pipeline.layout import CALIBRATION_STUDY, FOOTPRINT_FILE, Layout
from pipeline.report import calibration, recommend, summary, writer
from pipeline.labels import keras_accuracy


def run(cfg: Config, layout: Layout) -> dict[str, Path]:
    """Write the report folder (`pipeline.report.writer`); returns the written paths."""
    names = list(cfg.variants)
    rows = summary.summarize(
        cfg.variants,
        {v: artifacts.read_record(layout.variant(v)) for v in names},
        {v: read_json(layout.evaluation_metrics(v)) for v in names},
        {v: read_json(layout.benchmark(v)) for v in names},
        cfg.report.reference, cfg.report.max_accuracy_drop,
        {v: read_json(layout.footprint(v) / FOOTPRINT_FILE) for v in names})
    r = cfg.report
    rec = recommend.recommend(rows, r.max_accuracy_drop, r.prefer, r.reference, r.target,
                              r.max_arena_bytes, r.max_flash_bytes)
    # the calibration study: is the pipeline's own calibration size enough?
    # (steps run on their own, without the study's, have none)
    found = layout.calibration / CALIBRATION_STUDY
    study = read_json(found) if found.is_file() else {"points": []}
    study_summary = (calibration.summarize(study, r.max_accuracy_drop, r.range_spread)
                     if study["points"] else None)
    if study_summary:
        rec["warnings"] += calibration.warnings(study_summary)
        rec["calibration_enough"] = {v: s["main_enough"]
                                     for v, s in study_summary["variants"].items()}
    return writer.write_report(layout.reports, rows, cfg.variants, rec, cfg.report.reference,
                               keras_accuracy(cfg, layout),
                               {m: read_json(layout.history(m)) for m in ("float", "qat")},
                               read_json(layout.keras_metrics("qat")), layout.variants,
                               facts={"labels": cfg.evaluate.labels,
                                      "inputs": data.meta(layout.dataset).get(
                                          "input_range", data.IDENTITY)["describe"],
                                      "intake": read_json(layout.keras_metrics("float"))
                                      .get("intake")},
                               calibration=study_summary)

