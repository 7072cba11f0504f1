"""The summary of all variants: one row per variant with its metrics (relative ones against
the reference), what the model really is, or why it failed (no TensorFlow).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from pipeline import metrics, stats
from pipeline.io import csv_text
from pipeline.variants import VariantSpec

# Weight storage types reported for every variant (0 where absent), so columns line up.
WEIGHT_DTYPES = ("float32", "float16", "int8", "int16", "int32", "int64", "int4", "int2")
# Row keys that are not metrics (`pipeline.metrics` declares the metrics); a numeric row key
# that is neither fails tests/test_metrics.py.
NOT_METRICS = frozenset({"status", "error", "input_dtype", "output_dtype", "inspection",
                         "worst_layers", "denylisted_nodes", "settings", "headline", "machine",
                         "budget_verdict", "paired", "kernel_paths", "kernel_paths_disagree",
                         "asked_vs_got", "worst_tensors", "backend", "kernels", "search",
                         "per_class_accuracy", "top_k", "footprint", "gpu_compatible",
                         "gpu_first_incompatible_op", "micro_error", "npu",
                         "footprint_error", "preparation", "profiles"})
# Per Ethos-U target, as `<accelerator>.<figure>` (e.g. `ethos-u55-128.sram_bytes`).
NPU_METRICS = tuple(k.split(".", 1)[1] for k in metrics.family_keys("<accelerator>."))
MICRO_METRICS = tuple(k for k in metrics.keys(stage="footprint")
                      if metrics.device_metric(k) and not k.startswith("micro."))
# Per benchmark setting, as `<setting>.<figure>` (e.g. `t2.latency_ms_p50`).
SETTING_METRICS = tuple(k.split(".", 1)[1] for k in metrics.family_keys("<setting>."))


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
    """Every metric of a summary row, flat (each declared in `pipeline.metrics`): the fixed
    set, per-class accuracies (`class_accuracy_<c>`), per-setting figures
    (`<setting>.<figure>`), the device tools' figures."""
    return {k: v for k, v in row.items() if metrics.declared(k)
            and isinstance(v, (int, float)) and not isinstance(v, bool)}


def undeclared(row: Mapping[str, Any]) -> list[str]:
    """Numeric keys of a row that are neither a declared metric nor a known non-metric: a
    metric someone wrote and did not declare (it would be missing from every table)."""
    return sorted(k for k, v in row.items() if k not in NOT_METRICS
                  and isinstance(v, (int, float)) and not isinstance(v, bool)
                  and not metrics.declared(k))


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
        has every metric of `pipeline.metrics.every_variant()`, `budget_verdict`
        (`pipeline.stats.VERDICTS`), `paired`, `input_dtype`, `output_dtype`, `inspection`
        and `worst_layers`.

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
            # what each stage measured, as it measured it (pipeline.metrics declares them)
            **metrics.copied(ev, "evaluate"),
            **metrics.copied(bench, "benchmark"),
            **metrics.copied(memory, "benchmark"),
            **metrics.copied(insp, "quantize"),
            **metrics.copied(rec.get("fidelity") or {}, "quantize"),
            "compression_ratio": ref["size_bytes"] / ev["size_bytes"],
            **{f"weight_bytes_{d}": insp["weight_bytes_by_dtype"].get(d, 0)
               for d in WEIGHT_DTYPES},
            **{f"class_accuracy_{c}": a for c, a in enumerate(ev["per_class_accuracy"])},
            **{f"{key}.{k}": fig[k] for key, fig in bench["settings"].items()
               for k in SETTING_METRICS if k in fig},
            "top_k": ev["top_k"],
            "per_class_accuracy": ev["per_class_accuracy"],
            **{k: v for k, v in bench.items() if k.startswith("op_ms.")},
            "settings": bench["settings"],
            "profiles": bench.get("profiles", {}),
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
    # Every profiled variant gets every op type's time (0: it has no such operator), so the
    # columns line up (MLflow's compare view, summary.csv).
    profiled = [r for r in rows.values() if "profile_explained" in r]
    op_types = {k for r in profiled for k in r if k.startswith("op_ms.")}
    for r in profiled:
        r.update({k: 0.0 for k in op_types if k not in r})
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
    columns = list(dict.fromkeys(m for row in rows.values() for m in metrics_of(row)))
    return csv_text([{"variant": name, "status": row["status"], **metrics_of(row),
                      "error": first_line(row["error"])} for name, row in rows.items()],
                    ["variant", "status", *columns, "error"])
