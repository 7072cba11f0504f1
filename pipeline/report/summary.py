"""The summary of all variants: one row per variant with its metrics (relative ones against
the reference), what the model really is, or why it failed (no TensorFlow).
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Mapping
from typing import Any

from pipeline import stats
from pipeline.variants import VariantSpec

# Metrics every variant carries, in report order (also MLflow metric names and DVC metrics).
METRICS = ("accuracy", "accuracy_drop", "agreement", "size_bytes", "compression_ratio",
           "latency_ms_mean", "latency_ms_p50", "latency_ms_p90", "latency_ms_std")
# Weight storage types reported for every variant (0 where absent), so columns line up.
WEIGHT_DTYPES = ("float32", "float16", "int8", "int16", "int32", "int64", "int4", "int2")
INSPECTION_METRICS = ("float_compute_ops", "weight_bytes",
                      *(f"weight_bytes_{d}" for d in WEIGHT_DTYPES))
# Evaluation and benchmark figures beyond the base set (the headline setting's latency).
EVALUATION_METRICS = ("top_k_accuracy", "output_sqnr_db", "output_mae", "output_kl")
BENCHMARK_METRICS = ("speedup_vs_float32", "speedup_ci_low", "speedup_ci_high",
                     "latency_ms_p50_ci_low", "latency_ms_p50_ci_high", "latency_ms_min",
                     "latency_ms_max", "latency_ms_p99", "latency_cv", "init_ms",
                     "first_inference_ms", "warmup_ms_mean")
# How sure each accuracy and drop is (`pipeline.stats`).
UNCERTAINTY_METRICS = ("accuracy_ci_low", "accuracy_ci_high", "accuracy_drop_ci_low",
                       "accuracy_drop_ci_high", "p_value_vs_reference")
MEMORY_METRICS = ("peak_rss_mb", "peak_rss_delta_mb")
# Per benchmark setting, as `<setting>.<figure>` (e.g. `t2.latency_ms_p50`).
SETTING_METRICS = ("latency_ms_mean", "latency_ms_p50", "latency_ms_p50_ci_low",
                   "latency_ms_p50_ci_high", "latency_ms_p90", "latency_ms_p99",
                   "latency_ms_std", "latency_cv", "speedup_vs_float32", "speedup_ci_low",
                   "speedup_ci_high")
ALL_METRICS = (METRICS + INSPECTION_METRICS + EVALUATION_METRICS + BENCHMARK_METRICS
               + UNCERTAINTY_METRICS)
# Row keys that are not metrics; every other numeric key of a row is one.
NOT_METRICS = frozenset({"status", "error", "input_dtype", "output_dtype", "inspection",
                         "worst_layers", "denylisted_nodes", "settings", "headline", "machine",
                         "budget_verdict", "paired", "kernel_paths", "kernel_paths_disagree",
                         "asked_vs_got", "worst_tensors", "backend", "kernels", "search",
                         "per_class_accuracy", "top_k", "footprint", "gpu_compatible",
                         "gpu_first_incompatible_op", "micro_error", "npu",
                         "footprint_error", "preparation"})
# Per Ethos-U target, as `<accelerator>.<figure>` (e.g. `ethos-u55-128.sram_bytes`).
NPU_METRICS = ("sram_bytes", "flash_bytes", "macs", "cycles", "npu_cycles", "inference_ms",
               "npu_ops", "cpu_ops", "npu_ops_share")
MICRO_METRICS = ("arena_bytes", "arena_persistent_bytes", "arena_nonpersistent_bytes",
                 "smallest_arena_bytes")


def device_metric(key: str) -> bool:
    """Whether a metric is a device tool's figure that exists only where the tool ran the
    variant (TFLM's arena and kernels, Vela's per accelerator): absent, not 0, elsewhere."""
    return key in MICRO_METRICS or key.startswith(("micro.", "ethos-u"))


def device_row(fp: Mapping[str, Any] | None) -> dict[str, Any]:
    """A variant's footprint (`pipeline.measure.footprint.measure`) as summary row keys:
    `macs`, the TFLM arena figures, `micro.*` (its kernels against LiteRT's built-in ones on
    the same samples, with the accuracy's Wilson interval), `gpu_*`, `<accelerator>.*`, and
    `footprint` (the whole record, for the report's tables)."""
    if not fp:
        return {}
    if fp.get("status") != "ok":
        return {"footprint_error": fp.get("error") or "failed"}
    row: dict[str, Any] = {"macs": fp["macs"], "footprint": dict(fp)}
    if "gpu" in fp:
        row["gpu_compatible"] = fp["gpu"]["gpu_compatible"]
        row["gpu_incompatible_ops"] = fp["gpu"]["gpu_incompatible_ops"]
        if "gpu_first_incompatible_op" in fp["gpu"]:
            row["gpu_first_incompatible_op"] = fp["gpu"]["gpu_first_incompatible_op"]
    m = fp.get("micro")
    if m and m["status"] == "ok":
        row.update({k: m[k] for k in MICRO_METRICS if k in m})
        if "samples" in m:
            low, high = stats.wilson(m["correct"], m["samples"])
            row.update({"micro.accuracy": m["accuracy"], "micro.accuracy_ci_low": low,
                        "micro.accuracy_ci_high": high,
                        "micro.builtin_accuracy": m["builtin_accuracy"],
                        "micro.agreement": m["agreement"], "micro.samples": m["samples"],
                        "micro.bit_identical": int(m["bit_identical"]),
                        "micro.max_abs_diff": m["max_abs_diff"]})
    elif m:
        row["micro_error"] = m["error"]
    row["npu"] = {k: dict(v) for k, v in fp.get("npu", {}).items()}
    for target, v in fp.get("npu", {}).items():
        if v["status"] == "ok":
            row.update({f"{target}.{k}": v[k] for k in NPU_METRICS})
    return row


def metrics_of(row: Mapping[str, Any]) -> dict[str, float]:
    """Every metric of a summary row, flat: the fixed set, per-class accuracies
    (`class_accuracy_<c>`) and per-setting figures (`<setting>.<figure>`)."""
    return {k: v for k, v in row.items() if k not in NOT_METRICS
            and isinstance(v, (int, float)) and not isinstance(v, bool)}


def uncertainty(ev: Mapping[str, Any], is_reference: bool, budget: float) -> dict[str, Any]:
    """How sure one variant's accuracy and drop are (`pipeline.stats`): the accuracy's
    Wilson interval; against the reference on the same samples, the exact McNemar p-value,
    Newcombe's interval of the drop, the budget verdict and the test samples that would
    resolve it at the observed proportions."""
    low, high = stats.wilson(ev["correct"], ev["num_samples"])
    table = stats.Paired(**ev["paired"])
    if is_reference:  # the same model: no difference at all
        drop_low = drop_high = 0.0
        p_value, needed = 1.0, ev["num_samples"]
    else:
        drop_low, drop_high = stats.drop_interval(table)
        p_value = stats.mcnemar_exact(table)
        needed = stats.samples_to_resolve(table, budget)
    row = {"accuracy_ci_low": low, "accuracy_ci_high": high,
           "accuracy_drop_ci_low": drop_low, "accuracy_drop_ci_high": drop_high,
           "p_value_vs_reference": p_value,
           "budget_verdict": stats.verdict(table.drop, drop_high, budget),
           "paired": dict(ev["paired"])}
    if needed is not None:
        row["test_samples_to_resolve"] = needed
    return row


def summarize(specs: Mapping[str, VariantSpec], records: Mapping[str, Mapping[str, Any]],
              evaluations: Mapping[str, Mapping[str, Any]],
              benchmarks: Mapping[str, Mapping[str, Any]], reference: str,
              budget: float, footprints: Mapping[str, Mapping[str, Any]] | None = None,
              ) -> dict[str, dict[str, Any]]:
    """One row per variant: its metrics (relative ones against `reference`, with their
    uncertainty), or its failure.

    Args:
        specs: The configured variants, in report order.
        records: Per variant, the quantize stage's record (`pipeline.artifacts`).
        evaluations: Per variant, the evaluate stage's output.
        benchmarks: Per variant, the benchmark stage's output.
        reference: The variant that the others are compared to (normally `float32`).
        budget: The accuracy budget (`report.max_accuracy_drop`), for the verdicts.
        footprints: Per variant, the footprint stage's output (`device_row`), if measured.

    Returns:
        `{variant: row}`. A row has `status` (`ok` or `failed`) and `error`; an `ok` row also
        has `ALL_METRICS`, `budget_verdict` (`pipeline.stats.VERDICTS`), `paired`,
        `input_dtype`, `output_dtype`, `inspection` and `worst_layers`.

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
            **uncertainty(ev, name == reference, budget),
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
            "worst_tensors": rec.get("worst_tensors", []),
            "asked_vs_got": rec.get("asked_vs_got", []),
            "preparation": rec.get("preparation"),
            "search": ({**rec["search"], "objective": specs[name].objective}
                       if rec.get("search") else None),
            "backend": specs[name].backend,
            "kernels": ev.get("kernels", "xnnpack"),
            "kernel_paths": ev.get("kernel_paths", {}),
            "kernel_paths_disagree": bool(ev.get("kernel_paths_disagree", False)),
            **{f"accuracy.{k}": v["accuracy"] for k, v in ev.get("kernel_paths", {}).items()},
            **{f"kernel_path_agreement.{k}": v["agreement"]
               for k, v in ev.get("kernel_paths", {}).items()},
            **device_row((footprints or {}).get(name)),
        }
        micro = rows[name].get("footprint", {}).get("micro", {})
        if micro.get("disagree"):  # TFLM's kernels against LiteRT's built-in ones
            rows[name]["kernel_paths_disagree"] = True
    return {name: rows[name] for name in specs}


def first_line(text: str | None, limit: int = 300) -> str:
    """The first line of an error message, for tables; an MLIR location (the converter's
    `loc(callsite(fused["AvgPool:", "net/pool/AvgPool@__inference_..."] at ...))`) becomes
    the node's name (`at net/pool/AvgPool`), so the reason itself fits."""
    text = (text or "").strip()
    return _without_mlir_locations(text.splitlines()[0])[:limit] if text else ""


def _without_mlir_locations(line: str) -> str:
    parts, i = [], 0
    while (start := line.find("loc(", i)) >= 0:
        parts.append(line[i:start])
        depth, end = 0, start + 3
        while end < len(line):
            depth += {"(": 1, ")": -1}.get(line[end], 0)
            if depth == 0:
                break
            end += 1
        names = [n.split("@")[0] for n in re.findall(r'"([^"]+)"', line[start:end + 1])
                 if not n.endswith(":")]
        parts.append(f"at {names[0]}" if names else "")
        i = end + 1
    parts.append(line[i:])
    return " ".join("".join(parts).replace("<unknown>:0: ", "").split())


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
                         first_line(row["error"])])
    return buf.getvalue()
