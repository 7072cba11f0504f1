"""The summary of all variants: relative metrics, what each model really is, the
recommendation under the accuracy budget, and the Markdown / CSV / JSON files (no TensorFlow).
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pipeline.evaluate import SQNR_CAP_DB
from pipeline.io import write_json, write_text
from pipeline.variants import VariantSpec

# Metrics every variant carries, in report order (also MLflow metric names and DVC metrics).
METRICS = ("accuracy", "accuracy_drop", "agreement", "size_bytes", "compression_ratio",
           "latency_ms_mean", "latency_ms_p50", "latency_ms_p90", "latency_ms_std")
# Weight storage types reported for every variant (0 where absent), so columns line up.
WEIGHT_DTYPES = ("float32", "float16", "int8", "int16", "int32", "int64")
INSPECTION_METRICS = ("float_compute_ops", "weight_bytes",
                      *(f"weight_bytes_{d}" for d in WEIGHT_DTYPES))
# Evaluation and benchmark figures beyond the base set (the headline setting's latency).
EVALUATION_METRICS = ("top_k_accuracy", "output_sqnr_db", "output_mae")
BENCHMARK_METRICS = ("speedup_vs_float32", "latency_ms_min", "latency_ms_max",
                     "latency_ms_p99", "latency_cv", "init_ms", "first_inference_ms",
                     "warmup_ms_mean")
MEMORY_METRICS = ("peak_rss_mb", "peak_rss_delta_mb")
# Per benchmark setting, as `<setting>.<figure>` (e.g. `t2.latency_ms_p50`).
SETTING_METRICS = ("latency_ms_mean", "latency_ms_p50", "latency_ms_p90", "latency_ms_p99",
                   "latency_ms_std", "latency_cv", "speedup_vs_float32")
ALL_METRICS = METRICS + INSPECTION_METRICS + EVALUATION_METRICS + BENCHMARK_METRICS
# Row keys that are not metrics; every other numeric key of a row is one.
NOT_METRICS = frozenset({"status", "error", "input_dtype", "output_dtype", "inspection",
                         "worst_layers", "denylisted_nodes", "settings", "headline", "machine",
                         "per_class_accuracy", "top_k"})


def metrics_of(row: Mapping[str, Any]) -> dict[str, float]:
    """Every metric of a summary row, flat: the fixed set, per-class accuracies
    (`class_accuracy_<c>`) and per-setting figures (`<setting>.<figure>`)."""
    return {k: v for k, v in row.items() if k not in NOT_METRICS
            and isinstance(v, (int, float)) and not isinstance(v, bool)}


def summarize(specs: Mapping[str, VariantSpec], records: Mapping[str, Mapping[str, Any]],
              evaluations: Mapping[str, Mapping[str, Any]],
              benchmarks: Mapping[str, Mapping[str, Any]], reference: str
              ) -> dict[str, dict[str, Any]]:
    """One row per variant: its metrics (relative ones against `reference`), or its failure.

    Args:
        specs: The configured variants, in report order.
        records: Per variant, the quantize stage's record (`pipeline.quantize`).
        evaluations: Per variant, the evaluate stage's output.
        benchmarks: Per variant, the benchmark stage's output.
        reference: The variant that the others are compared to (normally `float32`).

    Returns:
        `{variant: row}`. A row has `status` (`ok` or `failed`) and `error`; an `ok` row also
        has `ALL_METRICS`, `input_dtype`, `output_dtype`, `inspection` and `worst_layers`.

    Raises:
        ValueError: if a variant has no results, or the reference variant failed.
    """
    missing = [n for n in specs if n not in records or n not in evaluations
               or n not in benchmarks]
    if missing:
        raise ValueError(f"no conversion, evaluation or benchmark for variant(s) "
                         f"{', '.join(missing)}")
    rows: dict[str, dict[str, Any]] = {}
    for name in specs:
        parts = (records[name], evaluations[name], benchmarks[name])
        failure = next((p for p in parts if p.get("status") != "ok"), None)
        if failure is not None:
            rows[name] = {"status": "failed", "error": failure.get("error") or "failed"}
    if reference in rows:
        raise ValueError(f"the reference variant {reference!r} failed, so nothing can be "
                         f"compared: {rows[reference]['error']}")
    ref = evaluations[reference]
    for name in specs:
        if name in rows:
            continue
        ev, bench, rec = evaluations[name], benchmarks[name], records[name]
        if ev["num_samples"] != ref["num_samples"]:
            raise ValueError(f"{name} was evaluated on {ev['num_samples']} samples, "
                             f"{reference} on {ref['num_samples']}")
        insp = rec["inspection"]
        memory = bench.get("memory") or {}
        rows[name] = {
            "status": "ok",
            "error": None,
            "accuracy": ev["accuracy"],
            "accuracy_drop": ref["accuracy"] - ev["accuracy"],
            "agreement": ev["agreement"],
            "size_bytes": ev["size_bytes"],
            "compression_ratio": ref["size_bytes"] / ev["size_bytes"],
            **{k: bench[k] for k in METRICS if k.startswith("latency_ms_")},
            "float_compute_ops": insp["float_compute_ops"],
            "weight_bytes": insp["weight_bytes"],
            **{f"weight_bytes_{d}": insp["weight_bytes_by_dtype"].get(d, 0)
               for d in WEIGHT_DTYPES},
            **{k: ev[k] for k in EVALUATION_METRICS},
            **{k: bench[k] for k in BENCHMARK_METRICS},
            **{k: memory[k] for k in MEMORY_METRICS if k in memory},
            **{f"class_accuracy_{c}": a for c, a in enumerate(ev["per_class_accuracy"])},
            **{f"{key}.{k}": fig[k] for key, fig in bench["settings"].items()
               for k in SETTING_METRICS},
            "top_k": ev["top_k"],
            "per_class_accuracy": ev["per_class_accuracy"],
            "settings": bench["settings"],
            "headline": bench["headline"],
            "machine": bench["machine"],
            "input_dtype": ev["input_dtype"],
            "output_dtype": ev["output_dtype"],
            "inspection": insp,
            "worst_layers": rec.get("worst_layers", []),
            "denylisted_nodes": rec.get("denylisted_nodes", []),
        }
    return {name: rows[name] for name in specs}


def recommend(rows: Mapping[str, Mapping[str, Any]], max_accuracy_drop: float
              ) -> dict[str, Any]:
    """Pick the smallest and the fastest (p50) variant whose accuracy drop is within budget.

    Returns:
        `max_accuracy_drop`, `smallest`, `fastest` (names, or None if nothing fits),
        `misses` (`{variant: amount over budget}`) and `failed` (names).
    """
    eps = 1e-12  # float noise: a drop equal to the budget is within it
    ok = {n: r for n, r in rows.items() if r.get("status", "ok") == "ok"}
    within = [n for n, r in ok.items() if r["accuracy_drop"] <= max_accuracy_drop + eps]
    return {
        "max_accuracy_drop": max_accuracy_drop,
        "smallest": min(within, key=lambda n: ok[n]["size_bytes"]) if within else None,
        "fastest": min(within, key=lambda n: ok[n]["latency_ms_p50"]) if within else None,
        "misses": {n: r["accuracy_drop"] - max_accuracy_drop for n, r in ok.items()
                   if n not in within},
        "failed": [n for n in rows if n not in ok],
    }


def candidate(rows: Mapping[str, Mapping[str, Any]], rec: Mapping[str, Any],
              prefer: str = "smallest") -> str | None:
    """The variant to put forward: the recommendation (`prefer`: `smallest` or `fastest`),
    or while nothing is within budget, the most accurate integer variant (no float compute),
    the smaller one on a tie. None if there is neither."""
    if rec.get(prefer):
        return str(rec[prefer])
    integer = [n for n, r in rows.items()
               if r.get("status") == "ok" and r.get("float_compute_ops") == 0]
    if not integer:
        return None
    return max(integer, key=lambda n: (rows[n]["accuracy"], -rows[n]["size_bytes"]))


def _fmt(metric: str, value: Any) -> str:
    if isinstance(value, str):
        return value
    if metric == "output_sqnr_db":
        return f"{value:.1f} dB"
    if metric == "speedup_vs_float32":
        return f"{value:.2f}x"
    if metric.startswith(("size_bytes", "weight_bytes")):
        return f"{value / 1024:.1f} KiB"
    if metric.startswith("latency_ms"):
        return f"{value * 1000:.1f} us" if value < 1 else f"{value:.3f} ms"
    if metric == "compression_ratio":
        return f"{value:.2f}x"
    if isinstance(value, int):
        return str(value)
    if math.isfinite(value):
        return f"{value:+.4f}" if metric == "accuracy_drop" else f"{value:.4f}"
    return str(value)


def short_layer(tensor_name: str) -> str:
    """The readable head of a fused tensor name (`a/conv/Relu;a/conv/BiasAdd;...` -> first)."""
    return tensor_name.split(";")[0]


def _latency_table(ok: Mapping[str, Mapping[str, Any]]) -> list[str]:
    """Per benchmark setting (threads, XNNPACK): p50, p90, p99, cv and speed-up."""
    settings = list(next(iter(ok.values()))["settings"])
    lines = ["## Latency per setting", "",
             "Single-sample `invoke()` after a warm-up, over at least the configured runs and "
             "seconds; speed-up against the reference measured interleaved in one process. "
             "`t2` = 2 threads; `_noxnnpack` = without the XNNPACK delegate.", "",
             "| variant | " + " | ".join(f"{k} p50 | {k} p90 | {k} p99 | {k} cv | {k} speed-up"
                                         for k in settings) + " |",
             "|---|" + "---|" * (5 * len(settings))]
    for name, row in ok.items():
        cells = []
        for k in settings:
            fig = row["settings"][k]
            cells += [_fmt("latency_ms", fig["latency_ms_p50"]),
                      _fmt("latency_ms", fig["latency_ms_p90"]),
                      _fmt("latency_ms", fig["latency_ms_p99"]), f"{fig['latency_cv']:.2f}",
                      f"{fig['speedup_vs_float32']:.2f}x"]
        lines.append(f"| `{name}` | " + " | ".join(cells) + " |")
    return lines + [""]


def _memory_table(ok: Mapping[str, Mapping[str, Any]]) -> list[str]:
    """Start-up figures and peak memory."""
    lines = ["## Start-up and memory", "",
             "Peak RSS of loading and running the model, in a fresh process, above the "
             "interpreter library's own baseline.", "",
             "| variant | init | first inference | warm-up mean | peak RSS (model) | "
             "peak RSS (process) |", "|---|---|---|---|---|---|"]
    for name, row in ok.items():
        mem = (f"{row['peak_rss_delta_mb']:.1f} MiB | {row['peak_rss_mb']:.1f} MiB"
               if "peak_rss_mb" in row else "not measured | not measured")
        lines.append(f"| `{name}` | {row['init_ms']:.2f} ms | "
                     f"{_fmt('latency_ms', row['first_inference_ms'])} | "
                     f"{_fmt('latency_ms', row['warmup_ms_mean'])} | {mem} |")
    return lines + [""]


def _class_table(ok: Mapping[str, Mapping[str, Any]]) -> list[str]:
    """Per-class accuracy; confusion matrices are in `evaluation/<variant>/`."""
    classes = len(next(iter(ok.values()))["per_class_accuracy"])
    if classes > 20:
        return ["Per-class accuracy: `evaluation/<variant>/metrics.json`.", ""]
    lines = ["## Per-class accuracy", "",
             "Confusion matrices: `evaluation/<variant>/confusion_matrix.png` (and `.json`).",
             "", "| variant | " + " | ".join(str(c) for c in range(classes)) + " |",
             "|---|" + "---|" * classes]
    for name, row in ok.items():
        lines.append(f"| `{name}` | " + " | ".join(f"{a:.3f}" for a in
                                                   row["per_class_accuracy"]) + " |")
    return lines + [""]


def _first_line(text: str) -> str:
    return text.strip().splitlines()[0][:300] if text.strip() else ""


def to_markdown(rows: Mapping[str, Mapping[str, Any]], specs: Mapping[str, VariantSpec],
                rec: Mapping[str, Any], keras_accuracy: float | None = None,
                plots: Mapping[str, str] | None = None) -> str:
    """The human summary: recommendation first, then the tables, plots and evidence.

    Args:
        plots: `{caption: path relative to the Markdown file}` of images to show.
    """
    budget = rec["max_accuracy_drop"]
    lines = ["# Quantization report", ""]
    if rec["smallest"] is None:
        lines.append(f"**No variant is within the accuracy budget** (drop <= {budget:.4f}).")
    else:
        s, f = rec["smallest"], rec["fastest"]
        lines += [f"Accuracy budget: a drop of at most {budget:.4f} against the reference.", "",
                  f"- **Smallest within budget: `{s}`**, "
                  f"{_fmt('size_bytes', rows[s]['size_bytes'])} "
                  f"({_fmt('compression_ratio', rows[s]['compression_ratio'])} smaller), "
                  f"accuracy {rows[s]['accuracy']:.4f}",
                  f"- **Fastest within budget: `{f}`**, p50 "
                  f"{_fmt('latency_ms_p50', rows[f]['latency_ms_p50'])}, "
                  f"accuracy {rows[f]['accuracy']:.4f}"]
    for name, over in rec["misses"].items():
        lines.append(f"- `{name}` misses the budget by {over:.4f}")
    for name in rec["failed"]:
        lines.append(f"- `{name}` **failed**: {_first_line(rows[name]['error'])}")
    if keras_accuracy is not None:
        lines += ["", f"Float Keras model test accuracy: {keras_accuracy:.4f}"]
    ok = {n: r for n, r in rows.items() if r["status"] == "ok"}
    cols = ("accuracy", "accuracy_drop", "agreement", "top_k_accuracy", "output_sqnr_db",
            "size_bytes", "compression_ratio", "latency_ms_p50", "speedup_vs_float32",
            "float_compute_ops")
    lines += ["", "## All variants", "",
              "| variant | " + " | ".join(cols) + " | I/O | what |",
              "|---|" + "---|" * (len(cols) + 2)]
    for name, row in rows.items():
        if row["status"] != "ok":
            cells = ["failed"] + [""] * (len(cols) - 1)
            io_types = ""
        else:
            cells = [_fmt(c, row[c]) for c in cols]
            io_types = f"{row['input_dtype']}/{row['output_dtype']}"
        lines.append(f"| `{name}` | " + " | ".join(cells)
                     + f" | {io_types} | {specs[name].description} |")
    first = next(iter(ok.values()), None)
    top_k = first["top_k"] if first else "k"
    lines += ["", f"accuracy and top_k_accuracy (k = {top_k}) on the whole test split. "
              "agreement: share of test samples whose top-1 equals the reference's. "
              "output_sqnr_db: signal-to-quantization-noise ratio of the dequantized outputs "
              f"against the reference's on the same inputs ({SQNR_CAP_DB:.0f} = identical). "
              "latency_ms_p50 and speedup_vs_float32: the first benchmark setting. "
              "float_compute_ops: compute ops with a float activation input or output "
              "(QUANTIZE/DEQUANTIZE not counted).", ""]
    if plots:
        lines += ["## Trade-offs", "", "Red: the Pareto front, the variants no other variant "
                  "beats on both accuracy and cost.", ""]
        for caption, src in plots.items():
            lines += [f"![{caption}]({src})", ""]
    if first:
        lines += _latency_table(ok) + _memory_table(ok) + _class_table(ok)
        m = first["machine"]
        lines += [f"Measured on {m['cpu']} ({m['cores']} cores), Python {m['python']}, "
                  f"ai-edge-litert {m['ai_edge_litert']}.", ""]
    lines += ["## What each model is", "",
              "| variant | weights by dtype | ops by type |", "|---|---|---|"]
    for name, row in rows.items():
        if row["status"] == "ok":
            insp = row["inspection"]
            weights = ", ".join(f"{d} {_fmt('weight_bytes', b)}"
                                for d, b in insp["weight_bytes_by_dtype"].items())
            ops = ", ".join(f"{op} {n}" for op, n in insp["ops_by_type"].items())
            lines.append(f"| `{name}` | {weights} | {ops} |")
    # Variants calibrated alike share their per-layer error: list each distinct table once.
    groups: dict[str, list[str]] = {}
    layers_of: dict[str, list[dict[str, Any]]] = {}
    for name, row in rows.items():
        if row["status"] == "ok" and row["worst_layers"]:
            key = repr([(l["tensor_name"], round(l["rmse_over_scale"], 6))
                        for l in row["worst_layers"]])
            groups.setdefault(key, []).append(name)
            layers_of[key] = row["worst_layers"]
    if groups:
        lines += ["", "## Worst-quantized layers", "",
                  "Per-layer error against the float model (TFLite's QuantizationDebugger on the "
                  "calibration samples). rmse/scale is the error in quantization steps; rounding "
                  "alone gives about 0.289. Full per-layer tables: "
                  "`models/tflite/<variant>/layer_errors.csv`.", "",
                  "| variants | layer | op | rmse/scale | max abs error |", "|---|---|---|---|---|"]
        for key, names in groups.items():
            label = ", ".join(f"`{n}`" for n in names)
            for layer in layers_of[key]:
                lines.append(f"| {label} | `{short_layer(layer['tensor_name'])}` | "
                             f"{layer['op_name']} | {layer['rmse_over_scale']:.3f} | "
                             f"{layer['max_abs_error']:.4g} |")
    selective = {n: r["denylisted_nodes"] for n, r in rows.items()
                 if r["status"] == "ok" and r["denylisted_nodes"]}
    for name, nodes in selective.items():
        lines += ["", f"`{name}` keeps {len(nodes)} layer(s) in float: "
                  + ", ".join(f"`{short_layer(n)}`" for n in nodes)]
    failures = {n: r["error"] for n, r in rows.items() if r["status"] != "ok"}
    if failures:
        lines += ["", "## Failed variants", ""]
        for name, error in failures.items():
            lines += [f"### `{name}`", "", "```", error.strip(), "```", ""]
    lines.append("")
    return "\n".join(lines)


def to_csv(rows: Mapping[str, Mapping[str, Any]]) -> str:
    """One line per variant: status, every metric (`metrics_of`), and the error if any."""
    columns: list[str] = []
    for row in rows.values():
        columns += [m for m in metrics_of(row) if m not in columns]
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["variant", "status", *columns, "error"])
    for name, row in rows.items():
        writer.writerow([name, row["status"], *(row.get(m, "") for m in columns),
                         _first_line(row["error"] or "")])
    return buf.getvalue()


PLOTS_DIR = "plots"


def write_plots(out_dir: Path, rows: Mapping[str, Mapping[str, Any]],
                histories: Mapping[str, Mapping[str, list[float]]]) -> dict[str, str]:
    """PNG plots and the CSV data behind DVC's plots, in `out_dir/plots/`.

    Returns:
        `{caption: path relative to out_dir}` of the PNGs.
    """
    from pipeline import plots

    ok = {n: r for n, r in rows.items() if r["status"] == "ok"}
    d = out_dir / PLOTS_DIR
    pngs = {
        "Accuracy against size": plots.tradeoff(
            {n: (r["size_bytes"] / 1024, r["accuracy"]) for n, r in ok.items()},
            "size (KiB)", "accuracy against size", d / "accuracy_vs_size.png"),
        "Accuracy against latency": plots.tradeoff(
            {n: (r["latency_ms_p50"] * 1e3, r["accuracy"]) for n, r in ok.items()},
            f"p50 latency (us, {next(iter(ok.values()))['headline']})",
            "accuracy against latency", d / "accuracy_vs_latency.png", log_x=True),
        "Size per variant": plots.bars({n: r["size_bytes"] / 1024 for n, r in ok.items()},
                                       "size (KiB)", "size per variant", d / "size.png"),
    }
    if any(histories.values()):
        pngs["Training curves"] = plots.training_curves(dict(histories), d / "training.png")
    # Data files for `dvc plots show` (dvc.yaml's plots section).
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["variant", "accuracy", "size_bytes", "latency_ms_p50", "pareto_size",
                     "pareto_latency"])
    front_size = plots.pareto_front({n: (r["size_bytes"], r["accuracy"]) for n, r in ok.items()})
    front_lat = plots.pareto_front({n: (r["latency_ms_p50"], r["accuracy"])
                                    for n, r in ok.items()})
    for n, r in ok.items():
        writer.writerow([n, r["accuracy"], r["size_bytes"], r["latency_ms_p50"],
                         int(n in front_size), int(n in front_lat)])
    write_text(d / "variants.csv", buf.getvalue())
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["model", "epoch", "loss", "accuracy", "val_loss", "val_accuracy"])
    for model, history in histories.items():
        for epoch in range(len(history.get("loss", []))):
            writer.writerow([model, epoch + 1, *(history[k][epoch] for k in
                                                 ("loss", "accuracy", "val_loss",
                                                  "val_accuracy"))])
    write_text(d / "training.csv", buf.getvalue())
    return {caption: str(path.relative_to(out_dir)) for caption, path in pngs.items()}


def write_report(out_dir: str | Path, rows: Mapping[str, Mapping[str, Any]],
                 specs: Mapping[str, VariantSpec], rec: Mapping[str, Any],
                 keras_accuracy: float | None = None,
                 histories: Mapping[str, Mapping[str, list[float]]] | None = None
                 ) -> dict[str, Path]:
    """Write the report into `out_dir`: `summary.md`, `report.html` (self-contained),
    `summary.csv`, `summary.json`, `metrics.json` (DVC metrics of the variants that
    succeeded), `recommendation.json`, and `plots/` (PNGs and the CSVs of DVC's plots).

    Args:
        histories: `{model: Keras history}` for the training curves (e.g. float, qat).

    Returns:
        The written paths by kind.
    """
    from pipeline.html import markdown_to_html

    out = Path(out_dir)
    metrics = {name: metrics_of(row) for name, row in rows.items() if row["status"] == "ok"}
    plots = write_plots(out, rows, histories or {})
    markdown = to_markdown(rows, specs, rec, keras_accuracy, plots)
    return {
        "markdown": write_text(out / "summary.md", markdown),
        "html": write_text(out / "report.html",
                           markdown_to_html(markdown, out, "Quantization report")),
        "csv": write_text(out / "summary.csv", to_csv(rows)),
        "summary": write_json(out / "summary.json", rows),
        "metrics": write_json(out / "metrics.json", metrics),
        "recommendation": write_json(out / "recommendation.json", rec),
        "plots": out / PLOTS_DIR,
    }
