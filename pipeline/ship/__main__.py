"""Package any variant of the last run (`make export VARIANT=name`): its outputs must exist
(`make repro` first).

    python -m pipeline.ship int8_full              # -> exports/int8_full/
    python -m pipeline.ship int8_full --out DIR
"""

from __future__ import annotations

from pathlib import Path

from pipeline import console
from pipeline.layout import Layout
from pipeline.ship import project


def main() -> None:
    from pipeline.params import load_params
    from pipeline.variants import select

    parser = console.parser(__doc__)
    parser.add_argument("variant", help="a variant of quantization.variants")
    parser.add_argument("--root", type=Path, default=Path("."), help="the run's outputs")
    parser.add_argument("--out", type=Path, help="where to write it (default: exports/VARIANT)")
    args = parser.parse_args()
    cfg, _ = load_params(args.params)
    select(cfg.variants, args.variant)  # an unknown name: one line with the valid ones
    layout = Layout(args.root)
    out = args.out or Path("exports") / args.variant
    record = project.package_variant(cfg, layout, args.variant, out,
                                     project.shared(cfg, layout))
    micro = record["micro"]
    print(f"wrote {out}/: {len(record['files'])} files; TFLite Micro sources: "
          + ("yes, " + ", ".join(micro["ops"]) if micro["status"] == "ok"
             else f"no ({micro['error']})"))


if __name__ == "__main__":
    console.run(main)
