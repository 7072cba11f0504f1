"""Write the report folder: the plots and their data, the Markdown and HTML renderings of the
one report document, the CSV/JSON summaries, DVC's metrics and the recommendation (with the
candidate). Every file is written atomically.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pipeline.artifacts import SEARCH_PLOT
from pipeline.io import write_bytes, write_csv, write_json, write_text
from pipeline.layout import (CALIBRATION_PNG, LATENCY_PNG, TIME_PNG, METRICS_FILE, PLOTS,
                             RECOMMENDATION, REPORT_HTML, SIZE_BARS_PNG, SIZE_PNG, SUMMARY_CSV,
                             SUMMARY_JSON, SUMMARY_MD, TRAINING_CSV, TRAINING_PNG, VARIANTS_CSV)
from pipeline import plots
from pipeline.report import calibration as calibration_section, content, latency, render
from pipeline.report.summary import metrics_of, to_csv
from pipeline.variants import VariantSpec



def device_plots(ok: Mapping[str, Mapping[str, Any]], d: Path) -> dict[str, Path]:
    """Accuracy against TFLite Micro's arena and against each NPU's cycles (Pareto plots), for
    the variants measured there."""
    acc = {n: (r["accuracy_ci_low"], r["accuracy_ci_high"]) for n, r in ok.items()}
    pngs: dict[str, Path] = {}
    arena = {n: r.get("smallest_arena_bytes", r.get("arena_bytes")) for n, r in ok.items()}
    arena = {n: a for n, a in arena.items() if a is not None}
    if arena:
        pngs[f"{content.DEVICE_PLOT}accuracy against TFLite Micro arena"] = plots.tradeoff(
            {n: (a / 1024, ok[n]["accuracy"]) for n, a in arena.items()},
            "smallest TFLite Micro arena (KiB)", "accuracy against arena",
            d / "accuracy_vs_arena.png",
            intervals={n: ((a / 1024,) * 2, acc[n]) for n, a in arena.items()})
    targets = sorted({t for r in ok.values() for t in r.get("npu", {})})
    for t in targets:
        cycles = {n: r[f"{t}.cycles"] for n, r in ok.items() if f"{t}.cycles" in r}
        if cycles:
            pngs[f"{content.DEVICE_PLOT}accuracy against {t} cycles"] = plots.tradeoff(
                {n: (c, ok[n]["accuracy"]) for n, c in cycles.items()},
                f"{t} cycles per inference (Vela's estimate)", f"accuracy against {t} cycles",
                d / f"accuracy_vs_cycles_{t}.png", log_x=True,
                intervals={n: ((c,) * 2, acc[n]) for n, c in cycles.items()})
    return pngs


def time_plots(ok: Mapping[str, Mapping[str, Any]], reference: str, d: Path
               ) -> dict[str, Path]:
    """Time per op type of the reference and of each variant slower than it, side by side
    (one plot; none when no variant is slower)."""
    groups = latency.plot_data(ok, reference)
    if not groups:
        return {}
    return {f"{latency.TIME_PLOT}time per op type, {reference} beside the slower variants":
            plots.grouped_bars({op: {k: ms * 1e3 for k, ms in v.items()}
                                for op, v in groups.items()}, "us per inference",
                               f"time per op type: {reference} and the slower variants",
                               d / TIME_PNG)}


def calibration_plot(summary: Mapping[str, Any], d: Path) -> dict[str, Path]:
    """The calibration study's curves: accuracy against calibration size, one panel per
    variant, one line per selection."""
    f, floor = summary["float"], summary["floor"]
    margin = max(summary["budget"], 0.002)
    return {f"{calibration_section.CALIBRATION_PLOT}test accuracy against calibration size, one "
            "line per selection (bands: the draws' 95% intervals); below, close up around the "
            "budget": plots.curves(
                calibration_section.plot_data(summary),
                {f"float {f['accuracy']:.2%}": f["accuracy"], f"budget {floor:.2%}": floor},
                "calibration samples (log scale)", "test accuracy", d / CALIBRATION_PNG,
                zoom=(floor - 2 * margin, f["accuracy_ci_high"] + margin))}


def write_plots(out_dir: Path, rows: Mapping[str, Mapping[str, Any]],
                histories: Mapping[str, Mapping[str, list[float]]],
                variants_dir: Path | None = None, reference: str | None = None,
                calibration: Mapping[str, Any] | None = None) -> dict[str, str]:
    """PNG plots and the CSV data behind DVC's plots, in `out_dir/plots/`.

    Returns:
        `{caption: path relative to out_dir}` of the PNGs.
    """
    ok = {n: r for n, r in rows.items() if r["status"] == "ok"}
    d = out_dir / PLOTS
    acc = {n: (r["accuracy_ci_low"], r["accuracy_ci_high"]) for n, r in ok.items()}
    pngs = {
        "Accuracy against size (bars: 95% intervals)": plots.tradeoff(
            {n: (r["size_bytes"] / 1024, r["accuracy"]) for n, r in ok.items()},
            "size (KiB)", "accuracy against size", d / SIZE_PNG,
            intervals={n: ((r["size_bytes"] / 1024,) * 2, acc[n]) for n, r in ok.items()}),
        "Accuracy against latency (bars: 95% intervals)": plots.tradeoff(
            {n: (r["latency_ms_p50"] * 1e3, r["accuracy"]) for n, r in ok.items()},
            f"p50 latency (us, {next(iter(ok.values()))['headline']})",
            "accuracy against latency", d / LATENCY_PNG, log_x=True,
            intervals={n: ((r["latency_ms_p50_ci_low"] * 1e3, r["latency_ms_p50_ci_high"] * 1e3),
                           acc[n]) for n, r in ok.items()}),
        "Size per variant": plots.bars({n: r["size_bytes"] / 1024 for n, r in ok.items()},
                                       "size (KiB)", "size per variant", d / SIZE_BARS_PNG),
    }
    pngs.update(device_plots(ok, d))
    if reference:
        pngs.update(time_plots(ok, reference, d))
    if calibration:
        pngs.update(calibration_plot(calibration, d))
    if any(histories.values()):
        pngs["Training curves"] = plots.training_curves(dict(histories), d / TRAINING_PNG)
    for name, row in ok.items():  # each search's trajectory, copied beside the other plots
        source = variants_dir / name / SEARCH_PLOT if variants_dir else None
        if row.get("search") and source and source.is_file():
            pngs[f"Search trajectory of {name}"] = write_bytes(d / f"search_{name}.png",
                                                               source.read_bytes())
    # Data files for `dvc plots show` (dvc.yaml's plots section).
    front_size = plots.pareto_front({n: (r["size_bytes"], r["accuracy"]) for n, r in ok.items()})
    front_lat = plots.pareto_front({n: (r["latency_ms_p50"], r["accuracy"])
                                    for n, r in ok.items()})
    write_csv(d / VARIANTS_CSV, [
        {"variant": n, "accuracy": r["accuracy"], "size_bytes": r["size_bytes"],
         "latency_ms_p50": r["latency_ms_p50"], "pareto_size": int(n in front_size),
         "pareto_latency": int(n in front_lat)} for n, r in ok.items()])
    curves = ("loss", "accuracy", "val_loss", "val_accuracy")
    write_csv(d / TRAINING_CSV, [
        {"model": model, "epoch": epoch + 1, **{k: h[k][epoch] for k in curves}}
        for model, h in histories.items() for epoch in range(len(h.get("loss", [])))],
        columns=("model", "epoch", *curves))
    return {caption: str(path.relative_to(out_dir)) for caption, path in pngs.items()}


def write_report(out_dir: str | Path, rows: Mapping[str, Mapping[str, Any]],
                 specs: Mapping[str, VariantSpec], rec: Mapping[str, Any], reference: str,
                 keras_accuracy: float | None = None,
                 histories: Mapping[str, Mapping[str, list[float]]] | None = None,
                 qat: Mapping[str, Any] | None = None,
                 variants_dir: Path | None = None,
                 facts: Mapping[str, Any] | None = None,
                 calibration: Mapping[str, Any] | None = None) -> dict[str, Path]:
    """Write the report into `out_dir`: `summary.md`, `report.html` (self-contained),
    `summary.csv`, `summary.json`, `metrics.json` (DVC metrics of the variants that
    succeeded), `recommendation.json`, and `plots/` (PNGs and the CSVs of DVC's plots).

    Args:
        rec: The recommendation, candidate included (`pipeline.report.recommend`).
        histories: `{model: Keras history}` for the training curves (e.g. float, qat).
        qat: The qat step's metrics (what QAT covered, or why it was not possible).
        variants_dir: The variants' folders (for each search's trajectory plot).
        facts: About the data (`pipeline.report.content.build`).
        calibration: The calibration study's summary (`pipeline.report.calibration`).

    Returns:
        The written paths by kind.
    """
    out = Path(out_dir)
    figures = write_plots(out, rows, histories or {}, variants_dir, reference, calibration)
    doc = content.build(rows, specs, rec, reference, keras_accuracy, figures, qat, facts,
                        calibration)
    return {
        "markdown": write_text(out / SUMMARY_MD, render.markdown(doc)),
        "html": write_text(out / REPORT_HTML, render.page(doc, out)),
        "csv": write_text(out / SUMMARY_CSV, to_csv(rows)),
        "summary": write_json(out / SUMMARY_JSON, rows),
        "metrics": write_json(out / METRICS_FILE, {name: metrics_of(row) for name, row
                                                   in rows.items() if row["status"] == "ok"}),
        "recommendation": write_json(out / RECOMMENDATION, rec),
        "plots": out / PLOTS,
    }
