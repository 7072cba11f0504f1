"""Where the time goes: for each variant slower than the reference, the operators behind the
difference and one sentence naming the cause, from the benchmark's per-operator profiles
(`pipeline.measure.profile`); no TensorFlow.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pipeline.measure.benchmark import INT8_DOT
from pipeline.metrics import fmt
from pipeline.report.document import Bullets, Figure, Paragraph, Section, Table, code, text

TIME_PLOT = "Where the time goes: "  # caption prefix of the per-op-type plots
MAX_CAUSES = 3  # op types named per variant
EDGE_OPS = frozenset({"QUANTIZE", "DEQUANTIZE"})
INTEGER = frozenset({"int8", "uint8"})


def headline_profile(row: Mapping[str, Any]) -> dict[str, Any] | None:
    """The profile of the variant's headline setting (`t1`: one thread, XNNPACK), if any."""
    p = (row.get("profiles") or {}).get(row.get("headline", ""))
    return None if p is None or "error" in p else p


def clearly_slower(row: Mapping[str, Any]) -> bool:
    """Slower than the reference beyond noise: the speed-up's interval lies below 1."""
    return "speedup_ci_high" in row and row["speedup_ci_high"] < 1.0


def _by_type(profile: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for r in profile["ops"]:
        t = out.setdefault(r["type"], {"count": 0, "ms": 0.0, "kernels": {},
                                       "activations": set()})
        t["activations"].update(x for x in (r.get("inputs") or "").split(",") if x != "-")
        t["count"] += 1
        t["ms"] += r.get("ms") or 0.0
        t["kernels"][r["kernel"]] = t["kernels"].get(r["kernel"], 0) + 1
    return out


def _ms(value: float) -> str:
    return fmt("latency_ms_p50", value)


def causes(profile: Mapping[str, Any], reference: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The op types that account for most of the variant's extra time over the reference
    (largest extra first, at most `MAX_CAUSES`, until 80% of all extra; each at least a
    tenth of it and, for a type both have, at least 10% slower): type, counts, both
    times, the ratio, the kernels, the activation types, the share of the variant's
    per-operator time."""
    mine, ref = _by_type(profile), _by_type(reference)
    whole = sum(t["ms"] for t in mine.values()) or 1.0
    rows = []
    for op, t in mine.items():
        if not t["count"]:
            continue
        r = ref.get(op, {"count": 0, "ms": 0.0, "kernels": {}})
        rows.append({"type": op, "count": t["count"], "ms": t["ms"],
                     "reference_ms": r["ms"], "reference_count": r["count"],
                     "extra_ms": t["ms"] - r["ms"], "share": t["ms"] / whole,
                     "ratio": t["ms"] / r["ms"] if r["ms"] > 0 else float("inf"),
                     "kernels": t["kernels"], "reference_kernels": r["kernels"],
                     "activations": t["activations"]})
    rows.sort(key=lambda x: -x["extra_ms"])
    total = sum(x["extra_ms"] for x in rows if x["extra_ms"] > 0)
    chosen, cum = [], 0.0
    for x in rows:
        if x["extra_ms"] < 0.1 * total or len(chosen) == MAX_CAUSES or cum >= 0.8 * total:
            break
        if x["reference_count"] and x["ratio"] < 1.1:
            continue
        chosen.append(x)
        cum += x["extra_ms"]
    return chosen


def _kernels(k: Mapping[str, int]) -> str:
    return ", ".join(f"{n} on {name}" for name, n in sorted(k.items()))


def _verbs(n: int) -> tuple[str, str]:
    return ("take", "run") if n > 1 else ("takes", "runs")


def sentence(name: str, profile: Mapping[str, Any], reference: Mapping[str, Any],
             reference_name: str, simd: str | None = None) -> str:
    """One sentence naming what makes `name` slower than the reference. `simd`: the CPU's
    vector extensions (`pipeline.measure.benchmark.machine`), to say when integer kernels
    are slow for want of int8 dot-product instructions."""
    found = causes(profile, reference)
    if not found:
        return (f"{name}: no operator type is slower than in {reference_name}; the difference "
                f"({_ms(profile['whole_ms'] - reference['whole_ms'])}) is outside the "
                "operators (an invoke's fixed cost, the delegate's partitions).")
    parts = []
    for c in found:
        op, n = c["type"], c["count"]
        take, run = _verbs(n)
        ops = f"the {n} {op} op{'s' if n > 1 else ''}"
        if c["reference_count"] == 0:
            what = ("which the float model does not have" if op in EDGE_OPS
                    else f"absent from {reference_name}")
            parts.append(f"{ops} ({what}) {take} {c['share']:.0%} of the time "
                         f"({_ms(c['ms'])})")
            continue
        part = (f"{ops} {take} {c['share']:.0%} of the time and {run} {c['ratio']:.1f}x "
                f"slower than in {reference_name} ({_ms(c['ms'])} against "
                f"{_ms(c['reference_ms'])})")
        builtin = c["kernels"].get("builtin", 0)
        if builtin and c["reference_kernels"].get("xnnpack", 0):
            why = _reasons(profile).get(op)
            part += (f", {'all' if builtin == n else builtin} on the built-in kernels where "
                     f"XNNPACK ran {reference_name}'s" + (f" ({why})" if why else ""))
        elif (set(c["kernels"]) == {"xnnpack"} and c["activations"] & INTEGER
              and simd not in (None, "unknown") and not INT8_DOT & set(simd.split())):
            part += (", on XNNPACK in both: this CPU has no int8 dot-product instructions "
                     f"(VNNI, or Arm's dot product; it has {simd}), and XNNPACK's integer "
                     "kernels run slower than its float ones here")
        parts.append(part)
    return f"{name}: " + "; ".join(parts) + "."


def _reasons(profile: Mapping[str, Any]) -> dict[str, str]:
    """Per op type XNNPACK left, the reason (the first operator's)."""
    out: dict[str, str] = {}
    for x in (profile.get("delegate") or {}).get("left", []):
        out.setdefault(x["type"], x["reason"])
    return out


def left_line(profile: Mapping[str, Any]) -> str:
    """What the delegate took, and which operators it left, grouped by reason."""
    d = profile.get("delegate")
    if not d:
        return f"no delegate ({profile['kernels']} kernels)"
    if not d["left"]:
        return f"XNNPACK took all {d['nodes']} operators"
    by_reason: dict[str, dict[str, int]] = {}
    for x in d["left"]:
        types = by_reason.setdefault(x["reason"], {})
        types[x["type"]] = types.get(x["type"], 0) + 1
    left = "; ".join(", ".join(f"{n} {op}" for op, n in types.items()) + f" ({why})"
                     for why, types in by_reason.items())
    took = f"XNNPACK took {d['delegated']} of {d['nodes']} operators" if d["delegated"] \
        else f"XNNPACK took none of the {d['nodes']} operators"
    return f"{took}, left {left}"


def section(ok: Mapping[str, Mapping[str, Any]], reference: str,
            plots: Mapping[str, str] | None = None) -> Section | None:
    """The report's "Where the time goes": a table of every profiled variant (what the
    delegate took, how much of the time the per-op figures explain), one sentence per
    variant slower than the reference, and their per-op-type plots."""
    ref_row = ok.get(reference)
    ref = headline_profile(ref_row) if ref_row else None
    profiled = {n: p for n, r in ok.items() if (p := headline_profile(r))}
    if ref is None or not profiled:
        return None
    table_rows = []
    for name, p in profiled.items():
        op, top = max(p["by_type"].items(), key=lambda kv: kv[1]["ms"])
        table_rows.append((text(code(name)), text(_ms(p["whole_ms"])),
                           text(f"{p['explained']:.0%}"),
                           text(f"{op} {top['ms'] / p['whole_ms']:.0%}"), text(left_line(p))))
    slower = [n for n in profiled if n != reference and clearly_slower(ok[n])]
    blocks: list[Any] = [
        Paragraph(text(
            "Each operator timed as its own model (cut out of the flatbuffer with its weights, "
            "fed the values it sees in the whole model) on the headline setting (",
            code(ok[reference]["headline"]), "), after the whole-model timing. The per-op "
            "times plus an invoke's fixed cost add up to the whole model's time within the "
            "share shown; the rest is overhead between operators. Per-op tables: ",
            code("benchmark/<variant>.ops.csv"), " (also on each variant's MLflow run).")),
        Table(("variant", "whole model", "per-op explains", "slowest op type",
               "delegate"), tuple(table_rows))]
    if slower:
        blocks.append(Paragraph(text(
            f"Slower than {reference} beyond noise (speed-up interval below 1):")))
        simd = ok[reference].get("machine", {}).get("simd")
        blocks.append(Bullets(tuple(text(sentence(n, profiled[n], ref, reference, simd))
                                    for n in slower)))
    else:
        blocks.append(Paragraph(text(f"No variant is slower than {reference} beyond noise.")))
    blocks += [Figure(c, p) for c, p in (plots or {}).items() if c.startswith(TIME_PLOT)]
    return Section(text("Where the time goes"), tuple(blocks))


def plot_data(ok: Mapping[str, Mapping[str, Any]], reference: str
              ) -> dict[str, dict[str, float]]:
    """`{op type: {variant: ms}}` of the reference and every variant slower than it (empty
    when none is), for the plot."""
    ref_row = ok.get(reference)
    ref = headline_profile(ref_row) if ref_row else None
    if ref is None:
        return {}
    shown = {reference: _by_type(ref)}
    for name, row in ok.items():
        p = headline_profile(row)
        if name != reference and p is not None and clearly_slower(row):
            shown[name] = _by_type(p)
    if len(shown) == 1:
        return {}
    types = dict.fromkeys(t for by in shown.values() for t in by)
    groups = {t: {name: by.get(t, {}).get("ms", 0.0) for name, by in shown.items()}
              for t in types}
    # on a log scale: an op type no variant spent time in (profiled nowhere) has no bar
    return {t: g for t, g in groups.items() if any(ms > 0 for ms in g.values())}
