"""The recommendation under the accuracy budget, and the one variant to ship: decided here,
once, in the report step, and written to `reports/recommendation.json`. The registry (track
stage), the sweep summary and the Hydra app's return value all read that file.

The evidence counts. Each variant's drop against the reference has a verdict
(`pipeline.stats.verdict`): `within` (even the interval's upper bound is within the budget),
`unresolved` (the drop is, its interval is not), `misses`. The recommendation picks among the
quantized variants shown `within` the budget; when none is, among the `unresolved` ones, and
says so; when none is either, the reference. Latencies whose intervals overlap are a tie:
the fastest pick then takes the smallest of the tied variants, then the most accurate.

The device comes first: with a target (`report.target`) and budgets (`max_arena_bytes`,
`max_flash_bytes`), only the variants that run there and fit are considered, and each one
left out is listed with the budget that excluded it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pipeline import metrics, stats


def _interval(row: Mapping[str, Any]) -> tuple[float, float]:
    return (row.get("latency_ms_p50_ci_low", row["latency_ms_p50"]),
            row.get("latency_ms_p50_ci_high", row["latency_ms_p50"]))


def fastest(rows: Mapping[str, Mapping[str, Any]], names: list[str]) -> tuple[str, list[str]]:
    """The fastest of `names` by p50, ties (overlapping p50 intervals with the fastest)
    broken by size, then accuracy.

    Returns:
        `(chosen, tied)`: `tied` lists the other variants with no measurable difference.
    """
    best = min(names, key=lambda n: rows[n]["latency_ms_p50"])
    tied = [n for n in names
            if stats.compare_latency(_interval(rows[n]), _interval(rows[best])) == 0]
    chosen = min(tied, key=lambda n: (rows[n]["size_bytes"], -rows[n]["accuracy"]))
    return chosen, sorted(n for n in tied if n != chosen)


def on_device(row: Mapping[str, Any], target: str) -> tuple[int | None, int | None, str | None]:
    """A variant's working memory and storage on `target`, and why it cannot run there.

    `cpu`: the `.tflite` size, and TFLite Micro's smallest arena as its working memory where
    TFLM runs it; `micro`: the same, but a model TFLM cannot run does not fit; an Ethos-U
    accelerator: Vela's SRAM and flash, and a model Vela did not compile does not fit.

    Returns:
        `(arena_bytes or None, flash_bytes or None, reason or None)`.
    """
    arena = row.get("smallest_arena_bytes", row.get("arena_bytes"))
    if target in ("cpu", "micro"):
        reason = None
        if target == "micro" and arena is None:
            reason = row.get("micro_error") or "not measured on TFLite Micro"
        return arena, row["size_bytes"], reason
    npu = row.get("npu", {}).get(target)
    if f"{target}.sram_bytes" not in row:
        return None, None, (npu or {}).get("error") or f"not compiled for {target}"
    return row[f"{target}.sram_bytes"], row[f"{target}.flash_bytes"], None


def excluded_by_device(row: Mapping[str, Any], target: str, max_arena_bytes: int | None,
                       max_flash_bytes: int | None) -> str | None:
    """Why a variant does not fit the device budgets (None: it fits)."""
    arena, flash, reason = on_device(row, target)
    if reason:
        return f"cannot run on {target}: {reason}"
    if max_arena_bytes is not None:
        if arena is None:
            return (f"arena budget {max_arena_bytes:,} B: its arena was not measured ("
                    f"{row.get('micro_error') or 'no TFLite Micro run'})")
        if arena > max_arena_bytes:
            return f"arena {arena:,} B > budget {max_arena_bytes:,} B on {target}"
    if max_flash_bytes is not None and flash is not None and flash > max_flash_bytes:
        return f"flash {flash:,} B > budget {max_flash_bytes:,} B on {target}"
    return None


def dominated_searches(rows: Mapping[str, Mapping[str, Any]]) -> dict[str, list[str]]:
    """Each search variant that another variant of the same run beats on both accuracy and
    the search's objective (size, or p50 latency): `{search variant: [those variants]}`. A
    search that ends there found nothing the fixed variants had not; it is not recommended."""
    ok = {n: r for n, r in rows.items() if r.get("status", "ok") == "ok"}
    found: dict[str, list[str]] = {}
    for name, row in ok.items():
        if not row.get("search"):
            continue
        key = "latency_ms_p50" if row["search"].get("objective") == "latency" else "size_bytes"
        better = [n for n, r in ok.items()
                  if n != name and metrics.dominates(r, row, (key, "accuracy"))]
        if better:
            found[name] = sorted(better, key=lambda n: (ok[n][key], -ok[n]["accuracy"]))
    return found


def recommend(rows: Mapping[str, Mapping[str, Any]], max_accuracy_drop: float,
              prefer: str, reference: str, target: str = "cpu",
              max_arena_bytes: int | None = None,
              max_flash_bytes: int | None = None) -> dict[str, Any]:
    """Pick the smallest and the fastest variant at the best level of evidence, and the
    candidate.

    Args:
        rows: The summary rows (`pipeline.report.summary.summarize`), in report order.
        max_accuracy_drop: The budget, an absolute drop against the reference.
        prefer: `smallest` or `fastest`: which pick becomes the candidate.
        reference: The reference variant (it never fails: `summarize` refuses that).
        target: The device the budgets apply to (`on_device`).
        max_arena_bytes: Working-memory budget on the target; None: any.
        max_flash_bytes: Storage budget on the target; None: any.

    Returns:
        `max_accuracy_drop`, `prefer`, `evidence` (`within`, `unresolved` or `reference`:
        the level the picks were made at), `verdicts` (`{variant: verdict}`), `smallest`,
        `fastest`, `fastest_tied_with` (names with no measurable difference), `misses`
        (`{variant: amount over budget}`), `failed` (names), `kernel_paths_disagree` (names),
        `candidate` (a name), `candidate_reason` (one sentence), `warnings`, `target`,
        `max_arena_bytes`, `max_flash_bytes`, `excluded` (`{variant: the budget that
        excluded it}`), `dominated` (`dominated_searches`: not recommended) and
        `smallest_arena` (the variant with the smallest working memory
        on the target, or None).
    """
    ok = {n: r for n, r in rows.items() if r.get("status", "ok") == "ok"}
    excluded = {n: why for n, r in ok.items()
                if (why := excluded_by_device(r, target, max_arena_bytes, max_flash_bytes))}
    arenas = {n: a for n, r in ok.items() if (a := on_device(r, target)[0]) is not None}
    dominated = dominated_searches(ok)
    fit = {n: r for n, r in ok.items() if n not in excluded and n not in dominated}
    verdicts = {n: stats.verdict(r["accuracy_drop"],
                                 r.get("accuracy_drop_ci_high", r["accuracy_drop"]),
                                 max_accuracy_drop) for n, r in ok.items()}
    # A variant whose accuracy depends on the kernel path is recommended only when nothing
    # else qualifies, and then with a warning.
    steady = [n for n in fit if n != reference and not fit[n].get("kernel_paths_disagree")]
    unsteady = [n for n in fit if n != reference and fit[n].get("kernel_paths_disagree")]
    evidence, pool = "reference", [reference]
    for candidates in (steady, unsteady):
        for level in ("within", "unresolved"):
            chosen = [n for n in candidates if verdicts[n] == level]
            if chosen:
                evidence, pool = level, chosen
                break
        if evidence != "reference":
            break
    smallest = min(pool, key=lambda n: (ok[n]["size_bytes"], -ok[n]["accuracy"]))
    fast, tied = fastest(ok, pool)
    rec: dict[str, Any] = {
        "max_accuracy_drop": max_accuracy_drop,
        "prefer": prefer,
        "evidence": evidence,
        "verdicts": verdicts,
        "smallest": smallest,
        "fastest": fast,
        "fastest_tied_with": tied,
        "misses": {n: r["accuracy_drop"] - max_accuracy_drop for n, r in ok.items()
                   if verdicts[n] == "misses"},
        "failed": [n for n in rows if n not in ok],
        "kernel_paths_disagree": unsteady,
        "warnings": [],
        "target": target,
        "max_arena_bytes": max_arena_bytes,
        "max_flash_bytes": max_flash_bytes,
        "excluded": excluded,
        "dominated": dominated,
        "smallest_arena": min(arenas, key=lambda n: (arenas[n], -ok[n]["accuracy"]))
        if arenas else None,
    }
    rec["candidate"] = rec[prefer]
    if rec["candidate"] in unsteady:
        rec["warnings"].append(f"{rec['candidate']}'s accuracy depends on the kernel path that "
                               "runs it: check it on the device's path before shipping")
    if evidence == "reference" and reference in excluded:
        rec["warnings"].append(f"no variant fits the device budgets on {target}, the reference "
                               f"{reference} neither ({excluded[reference]})")
    rec["candidate_reason"] = {
        "within": f"the {prefer} variant shown within the accuracy budget (the upper bound "
                  "of its drop's 95% interval is within it)",
        "unresolved": f"no variant is shown within the accuracy budget: the {prefer} of "
                      "those whose drop is within it but whose interval crosses it "
                      "(unresolved; more test samples would settle it)",
        "reference": "every quantized variant misses the accuracy budget, does not fit the "
                     "device or failed: the reference",
    }[evidence]
    return rec
