"""The summary of all variants: relative metrics, the recommendation under the accuracy
budget, and the Markdown / CSV / JSON files (no TensorFlow).
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pipeline.io import write_json, write_text
from pipeline.variants import VariantSpec

# Metrics every variant carries, in report order (also MLflow metric names and DVC metrics).
METRICS = ("accuracy", "accuracy_drop", "agreement", "size_bytes", "compression_ratio",
           "latency_ms_mean", "latency_ms_p50", "latency_ms_p90", "latency_ms_std")


def summarize(specs: Mapping[str, VariantSpec], evaluations: Mapping[str, Mapping[str, Any]],
              benchmarks: Mapping[str, Mapping[str, Any]], reference: str
              ) -> dict[str, dict[str, Any]]:
    """One row of metrics per variant, relative ones against `reference`.

    Args:
        specs: The configured variants, in report order.
        evaluations: Per variant, the output of `pipeline.evaluate.evaluate`.
        benchmarks: Per variant, the output of `pipeline.benchmark.benchmark`.
        reference: The variant that the others are compared to (normally `float32`).

    Returns:
        `{variant: {metric: value}}` with the metrics of `METRICS`, plus `input_dtype` and
        `output_dtype`.

    Raises:
        ValueError: if a variant has no evaluation or benchmark, or predictions differ in count.
    """
    missing = [n for n in specs if n not in evaluations or n not in benchmarks]
    if missing:
        raise ValueError(f"no evaluation or benchmark for variant(s) {', '.join(missing)}")
    ref = evaluations[reference]
    rows: dict[str, dict[str, Any]] = {}
    for name in specs:
        ev, bench = evaluations[name], benchmarks[name]
        if len(ev["predictions"]) != len(ref["predictions"]):
            raise ValueError(f"{name} was evaluated on {len(ev['predictions'])} samples, "
                             f"{reference} on {len(ref['predictions'])}")
        same = sum(a == b for a, b in zip(ev["predictions"], ref["predictions"], strict=True))
        rows[name] = {
            "accuracy": ev["accuracy"],
            "accuracy_drop": ref["accuracy"] - ev["accuracy"],
            "agreement": same / len(ref["predictions"]),
            "size_bytes": ev["size_bytes"],
            "compression_ratio": ref["size_bytes"] / ev["size_bytes"],
            **{k: bench[k] for k in METRICS if k.startswith("latency_ms_")},
            "input_dtype": ev["input_dtype"],
            "output_dtype": ev["output_dtype"],
        }
    return rows


def recommend(rows: Mapping[str, Mapping[str, Any]], max_accuracy_drop: float
              ) -> dict[str, Any]:
    """Pick the smallest and the fastest (p50) variant whose accuracy drop is within budget.

    Returns:
        `max_accuracy_drop`, `smallest`, `fastest` (names, or None if nothing fits), and
        `misses` (`{variant: amount over budget}`).
    """
    eps = 1e-12  # float noise: a drop equal to the budget is within it
    within = [n for n, r in rows.items() if r["accuracy_drop"] <= max_accuracy_drop + eps]
    misses = {n: r["accuracy_drop"] - max_accuracy_drop for n, r in rows.items()
              if n not in within}
    return {
        "max_accuracy_drop": max_accuracy_drop,
        "smallest": min(within, key=lambda n: rows[n]["size_bytes"]) if within else None,
        "fastest": min(within, key=lambda n: rows[n]["latency_ms_p50"]) if within else None,
        "misses": misses,
    }


def _fmt(metric: str, value: Any) -> str:
    if isinstance(value, str):
        return value
    if metric == "size_bytes":
        return f"{value / 1024:.1f} KiB"
    if metric.startswith("latency_ms"):
        return f"{value * 1000:.1f} us" if value < 1 else f"{value:.3f} ms"
    if metric == "compression_ratio":
        return f"{value:.2f}x"
    if math.isfinite(value):
        return f"{value:+.4f}" if metric == "accuracy_drop" else f"{value:.4f}"
    return str(value)


def to_markdown(rows: Mapping[str, Mapping[str, Any]], specs: Mapping[str, VariantSpec],
                rec: Mapping[str, Any], keras_accuracy: float | None = None) -> str:
    """The human summary: recommendation first, then the table."""
    budget = rec["max_accuracy_drop"]
    lines = ["# Quantization report", ""]
    if rec["smallest"] is None:
        lines.append(f"**No variant is within the accuracy budget** (drop <= {budget:.4f}).")
    else:
        s, f = rec["smallest"], rec["fastest"]
        lines += [f"Accuracy budget: a drop of at most {budget:.4f} against the reference.", "",
                  f"- **Smallest within budget: `{s}`**, {_fmt('size_bytes', rows[s]['size_bytes'])}"
                  f" ({_fmt('compression_ratio', rows[s]['compression_ratio'])} smaller), "
                  f"accuracy {rows[s]['accuracy']:.4f}",
                  f"- **Fastest within budget: `{f}`**, p50 "
                  f"{_fmt('latency_ms_p50', rows[f]['latency_ms_p50'])}, "
                  f"accuracy {rows[f]['accuracy']:.4f}"]
    for name, over in rec["misses"].items():
        lines.append(f"- `{name}` misses the budget by {over:.4f}")
    if keras_accuracy is not None:
        lines += ["", f"Float Keras model test accuracy: {keras_accuracy:.4f}"]
    cols = ("accuracy", "accuracy_drop", "agreement", "size_bytes", "compression_ratio",
            "latency_ms_p50", "latency_ms_p90", "latency_ms_std")
    lines += ["", "| variant | " + " | ".join(cols) + " | I/O | what |",
              "|---|" + "---|" * (len(cols) + 2)]
    for name, row in rows.items():
        cells = [_fmt(c, row[c]) for c in cols]
        lines.append(f"| `{name}` | " + " | ".join(cells)
                     + f" | {row['input_dtype']}/{row['output_dtype']} "
                     + f"| {specs[name].description} |")
    lines += ["", "Latency: single-sample `invoke()` after a warm-up; p50/p90 over at least the "
              "configured runs and seconds. Agreement: share of test samples whose top-1 equals "
              "the reference's.", ""]
    return "\n".join(lines)


def to_csv(rows: Mapping[str, Mapping[str, Any]]) -> str:
    """One line per variant, the metrics of `METRICS` as columns."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["variant", *METRICS])
    for name, row in rows.items():
        writer.writerow([name, *(row[m] for m in METRICS)])
    return buf.getvalue()


def write_report(out_dir: str | Path, rows: Mapping[str, Mapping[str, Any]],
                 specs: Mapping[str, VariantSpec], rec: Mapping[str, Any],
                 keras_accuracy: float | None = None) -> dict[str, Path]:
    """Write `summary.md`, `summary.csv` and `metrics.json` (DVC metrics) into `out_dir`.

    Returns:
        The written paths by kind: `markdown`, `csv`, `metrics`.
    """
    out = Path(out_dir)
    metrics = {name: {m: row[m] for m in METRICS} for name, row in rows.items()}
    return {
        "markdown": write_text(out / "summary.md", to_markdown(rows, specs, rec, keras_accuracy)),
        "csv": write_text(out / "summary.csv", to_csv(rows)),
        "metrics": write_json(out / "metrics.json", metrics),
        "recommendation": write_json(out / "recommendation.json", rec),
    }
