"""The search's speed on the default config: seconds per trial and the whole search's wall
time, read from the pipeline's own output (`make bench` runs `make repro` first).

    python -m tools.bench --only search
"""

from __future__ import annotations

import sys

from pipeline import artifacts
from tools.bench.common import ROOT
from pipeline.params import load_params
from pipeline.layout import Layout


def main() -> None:
    cfg, _ = load_params(ROOT / "params.yaml")
    layout = Layout(ROOT)
    searches = [n for n, s in cfg.variants.items() if s.search]
    if not searches:
        print("search: no variant of the config searches")
        return
    print("search on the default config (from the quantize stage's record)")
    for name in searches:
        try:
            found = artifacts.read_record(layout.variant(name)).get("search")
        except FileNotFoundError:
            sys.exit(f"error: no record for {name}; run `make repro` first")
        if not found:
            print(f"   {name}: failed, see models/tflite/{name}/conversion.json")
            continue
        print(f"   {name}: {found['trials']} trials, {found['seconds_per_trial']:.2f} s a "
              f"trial, {found['seconds']:.1f} s in all; stop: {found['stop']}; validation "
              f"drop {found['val_drop']:+.4f} (budget {found['budget']:.4f})")


if __name__ == "__main__":
    main()
