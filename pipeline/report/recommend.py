"""The recommendation under the accuracy budget, and the one variant to ship: decided here,
once, in the report step, and written to `reports/recommendation.json`. The registry (track
stage), the sweep summary and the Hydra app's return value all read that file.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

EPS = 1e-12  # float noise: a drop equal to the budget is within it


def recommend(rows: Mapping[str, Mapping[str, Any]], max_accuracy_drop: float,
              prefer: str, reference: str) -> dict[str, Any]:
    """Pick the smallest and the fastest (p50) variant within the budget, and the candidate.

    The candidate is the `prefer`red pick (`smallest` or `fastest`) within the budget; while
    nothing is within it, the most accurate variant that computes only in integers (the
    smaller on a tie); failing that, the reference.

    Args:
        rows: The summary rows (`pipeline.report.summary.summarize`), in report order.
        max_accuracy_drop: The budget, an absolute drop against the reference.
        prefer: `smallest` or `fastest`.
        reference: The reference variant (it never fails: `summarize` refuses that).

    Returns:
        `max_accuracy_drop`, `prefer`, `smallest`, `fastest` (names, or None if nothing
        fits), `misses` (`{variant: amount over budget}`), `failed` (names), `candidate`
        (a name) and `candidate_reason` (one sentence).
    """
    ok = {n: r for n, r in rows.items() if r.get("status", "ok") == "ok"}
    within = [n for n, r in ok.items() if r["accuracy_drop"] <= max_accuracy_drop + EPS]
    rec: dict[str, Any] = {
        "max_accuracy_drop": max_accuracy_drop,
        "prefer": prefer,
        "smallest": min(within, key=lambda n: ok[n]["size_bytes"]) if within else None,
        "fastest": min(within, key=lambda n: ok[n]["latency_ms_p50"]) if within else None,
        "misses": {n: r["accuracy_drop"] - max_accuracy_drop for n, r in ok.items()
                   if n not in within},
        "failed": [n for n in rows if n not in ok],
    }
    integer = [n for n, r in ok.items() if r.get("float_compute_ops") == 0]
    if rec[prefer]:
        rec["candidate"] = rec[prefer]
        rec["candidate_reason"] = f"the {prefer} variant within the accuracy budget"
    elif integer:
        rec["candidate"] = max(integer, key=lambda n: (ok[n]["accuracy"], -ok[n]["size_bytes"]))
        rec["candidate_reason"] = ("no variant is within the accuracy budget: the most "
                                   "accurate integer-only variant")
    else:
        rec["candidate"] = reference
        rec["candidate_reason"] = ("no variant is within the accuracy budget and none runs "
                                   "in integers only: the reference")
    return rec
