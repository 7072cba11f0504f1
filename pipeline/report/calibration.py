"""The calibration study in the report (no TensorFlow): per variant and selection, the
smallest number of samples that reaches the float model's accuracy within the budget, how
much the activation ranges move between draws, whether the pipeline's own size is enough,
and what mis-scaled inputs do; the curve of accuracy against calibration size.

A size is within the budget when every draw's test accuracy is at least the float model's
minus `report.max_accuracy_drop`; a selection's smallest size is the smallest from which
every larger size it was measured at is within the budget too. A range's spread at a size
is how far its ends move between the draws, as a share of its median width; the size's
spread is its largest over the activation tensors.

    python -m pipeline.report.calibration   # calibration/study.json: sentences and curves
"""

from __future__ import annotations

import argparse
import statistics
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from pipeline.io import read_json
from pipeline.report.document import (Bullets, Figure, Paragraph, Section, Table, code,
                                      short_layer, text)

CALIBRATION_PLOT = "Calibration: "  # caption prefix of the study's plot


def _spread(ranges: Sequence[Mapping[str, Sequence[float]]]) -> tuple[float, str | None]:
    """The largest move of a range's ends between draws, as a share of its median width,
    over the tensors every draw has; and that tensor."""
    if len(ranges) < 2:
        return 0.0, None
    worst, which = 0.0, None
    for tensor in set.intersection(*(set(r) for r in ranges)):
        lows = [r[tensor][0] for r in ranges]
        highs = [r[tensor][1] for r in ranges]
        width = statistics.median(h - lo for lo, h in zip(lows, highs))
        if width <= 0:
            continue
        move = max(max(lows) - min(lows), max(highs) - min(highs)) / width
        if move > worst:
            worst, which = move, tensor
    return worst, which


def curve(points: Sequence[Mapping[str, Any]], floor: float) -> list[dict[str, Any]]:
    """One row per size of one variant's selection (sorted): its draws' accuracy (mean,
    lowest, highest, the widest interval), agreement, the worst layer, the ranges' spread,
    and whether every draw is within the budget (`floor`: the lowest accuracy allowed)."""
    sizes: dict[int, list[Mapping[str, Any]]] = {}
    for p in points:
        sizes.setdefault(p["train_samples"], []).append(p)
    rows = []
    for size in sorted(sizes):
        draws = sizes[size]
        ok = [p for p in draws if p["status"] == "ok"]
        row: dict[str, Any] = {"size": size, "draws": len(draws), "failed": len(draws) - len(ok),
                               "whole": any(p.get("whole") for p in draws)}
        if ok:
            acc = [p["accuracy"] for p in ok]
            spread, tensor = _spread([p["ranges"] for p in ok])
            worst = min((p for p in ok if "worst_layer" in p),
                        key=lambda p: p["worst_layer_snr_db"], default=None)
            row.update(accuracy=statistics.fmean(acc), lowest=min(acc), highest=max(acc),
                       ci_low=min(p["accuracy_ci_low"] for p in ok),
                       ci_high=max(p["accuracy_ci_high"] for p in ok),
                       agreement=statistics.fmean(p["agreement"] for p in ok),
                       spread=spread, spread_tensor=tensor,
                       worst_layer=worst and worst["worst_layer"],
                       worst_layer_snr_db=worst and worst["worst_layer_snr_db"])
        row["within"] = bool(ok) and not row["failed"] and row["lowest"] >= floor
        rows.append(row)
    return rows


def smallest_within(rows: Sequence[Mapping[str, Any]]) -> int | None:
    """The smallest size from which every measured size is within the budget."""
    found = None
    for row in reversed(rows):
        if not row["within"]:
            break
        found = row["size"]
    return found


def stable_from(rows: Sequence[Mapping[str, Any]], limit: float) -> int | None:
    """The smallest size from which the ranges move by at most `limit` between draws (over
    the sizes with more than one draw); None when no size has two draws."""
    found = None
    for row in reversed([r for r in rows if r["draws"] > 1 and "spread" in r]):
        if row["spread"] > limit:
            break
        found = row["size"]
    return found


def summarize(study: Mapping[str, Any], budget: float, limit: float) -> dict[str, Any]:
    """Per variant: each selection's curve and smallest size within the budget, the random
    selection's stable size and largest spread below it, whether the pipeline's own size
    (`main_size`) is enough, and the mis-scaled set's accuracy there."""
    floor = study["float"]["accuracy"] - budget
    main = study.get("main_size")
    variants: dict[str, Any] = {}
    for p in study["points"]:
        variants.setdefault(p["variant"], {}).setdefault(p["selection"], []).append(p)
    out: dict[str, Any] = {}
    for variant, selections in variants.items():
        curves = {sel: curve(points, floor) for sel, points in selections.items()}
        random = curves.get("random", [])
        at_main = {sel: next((r for r in rows if r["size"] == main and not r["whole"]), None)
                   for sel, rows in curves.items()}
        stable = stable_from(random, limit)
        below = [r for r in random if stable is None or r["size"] < stable]
        unsteady = max(below, key=lambda r: r.get("spread", 0.0), default=None)
        main_row = at_main.get("random")
        drawn = [r for r in random if r["draws"] > 1 and "spread" in r]
        # every point failed (a variant that cannot be made from this model): why
        failed = None if any("accuracy" in p for ps in selections.values() for p in ps) \
            else next((p.get("error") for ps in selections.values() for p in ps
                       if p.get("error")), "failed")
        out[variant] = {
            "curves": curves,
            "smallest_within": {sel: smallest_within(rows) for sel, rows in curves.items()},
            "stable_from": stable,
            "largest_spread": {"size": unsteady["size"], "spread": unsteady["spread"],
                               "tensor": unsteady.get("spread_tensor")}
            if unsteady and "spread" in unsteady else None,
            "last_spread": {"size": drawn[-1]["size"], "spread": drawn[-1]["spread"],
                            "tensor": drawn[-1]["spread_tensor"]} if drawn else None,
            "failed": failed,
            "main_size": main,
            "main_enough": main_row["within"] if main_row and not failed else None,
            "at_main": {sel: r for sel, r in at_main.items() if r},
        }
    return {"floor": floor, "budget": budget, "limit": limit, "float": study["float"],
            "variants": out, "misscale": study.get("misscale"),
            "label_free": study.get("label_free", False)}


def sentence(variant: str, s: Mapping[str, Any], summary: Mapping[str, Any]) -> str:
    """One variant's finding, in one sentence (and one more on its own size and on the
    mis-scaled set, where measured)."""
    if s.get("failed"):
        return f"{variant}: every point of the study failed ({s['failed'].splitlines()[0]})."
    n = s["smallest_within"].get("random")
    parts = [f"{variant}: " + (
        f"{n:,} random sample{'s reach' if n != 1 else ' reaches'} the float model's "
        f"accuracy within the budget (every "
        f"draw at least {summary['floor']:.2%})" if n is not None else
        "no calibration size measured reaches the float model's accuracy within the budget "
        "on every draw")]
    limit = summary["limit"]
    if s["stable_from"] is not None and s["largest_spread"]:
        spread = s["largest_spread"]
        parts.append(f"below {s['stable_from']:,} the activation ranges vary by more than "
                     f"{limit:.0%} of their width across draws (up to {spread['spread']:.0%}, "
                     f"{short_layer(spread['tensor'] or '')} at {spread['size']:,})")
    elif s["stable_from"] is not None:
        parts.append(f"the activation ranges vary by at most {limit:.0%} across draws at "
                     "every size measured")
    elif s["largest_spread"] and s["last_spread"]:
        last = s["last_spread"]
        parts.append(f"the activation ranges still vary by more than {limit:.0%} of their "
                     f"width across draws at the largest size drawn more than once "
                     f"({last['spread']:.0%} at {last['size']:,}, "
                     f"{short_layer(last['tensor'] or '')})")
    text_ = "; ".join(parts) + "."
    main = s["main_size"]
    if s["main_enough"] is not None:
        text_ += (f" The pipeline's {main:,} samples are enough." if s["main_enough"] else
                  f" The pipeline's {main:,} samples are NOT enough: a draw of that size "
                  "misses the budget" + (f"; use {n:,} or more" if n is not None else "") + ".")
    mis = s["at_main"].get("misscaled")
    rnd = s["at_main"].get("random")
    if mis and rnd and "accuracy" in mis:
        text_ += (f" Mis-scaled inputs (x{summary['misscale']:g}) at {main:,} samples: "
                  f"{mis['accuracy']:.2%} against {rnd['accuracy']:.2%}.")
    return text_


def warnings(summary: Mapping[str, Any]) -> list[str]:
    """The recommendation's warnings: each studied variant the pipeline's own size is not
    enough for."""
    return [f"calibration: {s['main_size']:,} random samples are not enough for {v} (a draw "
            f"of that size misses the budget in the calibration study"
            + (f"; {n:,} reach it" if (n := s["smallest_within"].get("random")) else "") + ")"
            for v, s in summary["variants"].items() if s["main_enough"] is False]


def plot_data(summary: Mapping[str, Any]) -> dict[str, dict[str, list[tuple[float, ...]]]]:
    """`{variant: {selection: [(size, mean accuracy, lowest interval end, highest)]}}`."""
    return {v: {sel: [(r["size"], r["accuracy"], r["ci_low"], r["ci_high"])
                      for r in rows if "accuracy" in r]
                for sel, rows in s["curves"].items()}
            for v, s in summary["variants"].items()}


def _acc(row: Mapping[str, Any] | None) -> str:
    if not row or "accuracy" not in row:
        return "failed" if row else "-"
    if row["draws"] > 1:
        return f"{row['accuracy']:.2%} ({row['lowest']:.2%}-{row['highest']:.2%})"
    return f"{row['accuracy']:.2%} [{row['ci_low']:.2%}, {row['ci_high']:.2%}]"


def section(summary: Mapping[str, Any] | None, plots: Mapping[str, str] | None = None
            ) -> Section | None:
    """The report's "Calibration: how many samples, and which"."""
    if not summary or not summary["variants"]:
        return None
    f = summary["float"]
    rows = []
    for v, s in summary["variants"].items():
        for sel, n in s["smallest_within"].items():
            at = s["at_main"].get(sel)
            rows.append((text(code(v)), text(sel), text(f"{n:,}" if n is not None else "none"),
                         text(_acc(at)),
                         text(f"{at['agreement']:.2%}" if at and "agreement" in at else "-"),
                         text(f"{short_layer(at['worst_layer'])} {at['worst_layer_snr_db']:.1f} dB"
                              if at and at.get("worst_layer") else "-")))
    main = next(iter(summary["variants"].values()))["main_size"]
    blocks: list[Any] = [
        Paragraph(text(
            f"Each studied variant calibrated on draws of training samples (never validation "
            f"or test), by selection and size, and evaluated on the test split; the float "
            f"model: {f['accuracy']:.2%} [{f['accuracy_ci_low']:.2%}, "
            f"{f['accuracy_ci_high']:.2%}]. Budget: every draw at least "
            f"{summary['floor']:.2%}" + (" (label-free: accuracy is agreement with the float "
                                          "model's answers)" if summary["label_free"] else "")
            + ". Every point: ", code("calibration/points.csv"),
            " (and a run in the MLflow study run).")),
        Bullets(tuple(text(sentence(v, s, summary))
                      for v, s in summary["variants"].items())),
        Table(("variant", "selection", "smallest size within budget",
               f"accuracy at {main:,} (draws' range, or 95% interval)",
               "agreement with float", "worst layer (SNR)"), tuple(rows)),
    ]
    blocks += [Figure(c, p) for c, p in (plots or {}).items() if c.startswith(CALIBRATION_PLOT)]
    return Section(text("Calibration: how many samples, and which"), tuple(blocks))


def main(argv: Sequence[str] | None = None) -> None:
    """Print the study's findings: a sentence per variant, and each selection's curve."""
    import yaml

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("study", type=Path, nargs="?", default=Path("calibration/study.json"),
                        help="the study (default: calibration/study.json)")
    parser.add_argument("--params", type=Path, default=Path("params.yaml"),
                        help="where the budget and the spread limit come from (report.*)")
    parser.add_argument("--budget", type=float, help="accuracy budget; default: the params'")
    parser.add_argument("--spread", type=float, help="range spread limit; default: the params'")
    args = parser.parse_args(argv)
    if not args.study.is_file():
        raise SystemExit(f"{args.study} does not exist: run `make calibration` first")
    report = yaml.safe_load(args.params.read_text())["report"] if args.params.is_file() else {}
    budget = args.budget if args.budget is not None else report.get("max_accuracy_drop", 0.01)
    spread = args.spread if args.spread is not None else report.get("range_spread", 0.1)
    study = read_json(args.study)
    if not study["points"]:
        print("the study has no points: calibration.variants is empty")
        return
    summary = summarize(study, budget, spread)
    print(f"float model: {summary['float']['accuracy']:.2%}; budget: every draw at least "
          f"{summary['floor']:.2%} ({len(study['points'])} points, {study['cached']} from the "
          "cache)")
    for v, s in summary["variants"].items():
        print(sentence(v, s, summary))
        for sel, rows in s["curves"].items():
            print(f"  {sel:12s} smallest within budget: {s['smallest_within'][sel]}")
            for r in rows:
                print(f"    n={r['size']:>6,}  {_acc(r):32s} spread {r.get('spread', 0):.0%}")


if __name__ == "__main__":
    main()
