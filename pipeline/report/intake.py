"""A model from another framework, after `dvc repro`: how its conversion did against the
original runtime, and every variant's accuracy (95% interval), size, speed-up against the
reference (95% interval) and TFLM arena, from the report's summary (no TensorFlow).

    python -m pipeline.report.intake            # reads models/keras/float_metrics.json and
                                                # reports/summary.json
"""

from __future__ import annotations

import argparse
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from pipeline.io import read_json
from pipeline.layout import Layout
from pipeline.report.content import conversion_line


def _interval(row: Mapping[str, Any], key: str, low: str, high: str, pattern: str) -> str:
    if row.get(key) is None:
        return "-"
    shown = pattern.format(row[key])
    if row.get(low) is not None and row.get(high) is not None:
        shown += f" [{pattern.format(row[low])}, {pattern.format(row[high])}]"
    return shown


def table(rows: Mapping[str, Mapping[str, Any]]) -> list[str]:
    """A Markdown table: a line per variant (failed ones with their reason's first line)."""
    lines = ["| variant | accuracy [95%] | size | speed-up [95%] | TFLM arena |",
             "| --- | --- | --- | --- | --- |"]
    for name, row in rows.items():
        if row["status"] != "ok":
            reason = (row.get("error") or "failed").splitlines()[0]
            lines.append(f"| {name} | failed: {reason[:110]} | | | |")
            continue
        arena = row.get("arena_bytes")
        accuracy = _interval(row, "accuracy", "accuracy_ci_low", "accuracy_ci_high", "{:.2%}")
        speedup = _interval(row, "speedup_vs_float32", "speedup_ci_low", "speedup_ci_high",
                            "{:.2f}x")
        lines.append(f"| {name} | {accuracy} | {row['size_bytes'] / 1024:,.1f} KiB | {speedup} "
                     f"| {'-' if arena is None else f'{arena / 1024:,.1f} KiB'} |")
    return lines


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--root", type=Path, default=Path("."), help="the project (default: .)")
    args = parser.parse_args(argv)
    layout = Layout(args.root)
    metrics_file, summary_file = layout.keras_metrics("float"), layout.report("summary.json")
    for path in (metrics_file, summary_file):
        if not path.is_file():
            raise SystemExit(f"{path} does not exist: run dvc repro first")
    intake = read_json(metrics_file).get("intake")
    if not intake:
        raise SystemExit("the float model was not converted from ONNX or PyTorch (model.arch "
                         "is not onnx or torch): nothing to show")
    print(f"{Path(intake['origin']).name}: {conversion_line(intake)}")
    print("\n".join(table(read_json(summary_file))))


if __name__ == "__main__":
    main()
