"""Where the default run's time goes: the wall time each stage took the last time it ran on
this machine (recorded by every stage script, `pipeline.cli.STAGE_TIMES`), summed per group
of stages. `make bench` runs `make repro` first, so these are the default config's figures;
a stage that `dvc repro` found up to date keeps the time of the run that built it.

    python -m tools.bench --only stages
"""

from __future__ import annotations

import json
import time

from tools.bench.common import ROOT
from pipeline.cli import STAGE_TIMES
from pipeline.dvcfile import stages

# Stage -> the group it is counted in (a stage not named here is its own group).
GROUPS = {"prepare": "prepare", "train": "train", "qat": "train", "layer_errors": "quantize",
          "quantize": "quantize", "reference_outputs": "evaluate", "evaluate": "evaluate"}


def read() -> list[dict]:
    """Every recorded stage time, oldest first."""
    records = []
    for file in sorted((ROOT / STAGE_TIMES).glob("*.json")):
        try:
            records.append(json.loads(file.read_text()))
        except (OSError, ValueError):
            continue
    return sorted(records, key=lambda r: r["started"])


def main() -> dict[str, float]:
    """Print seconds per group (and per stage), in pipeline order; returns the groups."""
    records = read()
    print("\n== stages: wall time of the default run per stage group (last run of each) ==")
    if not records:
        print(f"no stage times in {ROOT / STAGE_TIMES}: run `make repro` first")
        return {}
    order = [s.name for s in stages()]
    groups: dict[str, float] = {}
    counts: dict[str, int] = {}
    for name in order:
        group = GROUPS.get(name, name)
        groups.setdefault(group, 0.0)
        counts.setdefault(group, 0)
    for r in records:
        base = r["stage"].split("@")[0]
        group = GROUPS.get(base, base)
        groups[group] = groups.get(group, 0.0) + r["seconds"]
        counts[group] = counts.get(group, 0) + 1
    total = sum(groups.values())
    for group, seconds in groups.items():
        share = seconds / total if total else 0.0
        print(f"  {group:<10} {seconds:8.1f} s  {share:6.1%}  ({counts[group]} stage runs)")
    span = records[-1]["ended"] - records[0]["started"]
    first = time.strftime("%Y-%m-%d %H:%M", time.localtime(records[0]["started"]))
    print(f"  {'total':<10} {total:8.1f} s  (stage processes; first start to last end: "
          f"{span:.0f} s, from {first})")
    return groups
