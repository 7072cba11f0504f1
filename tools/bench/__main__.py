"""`make bench`: every section of the lab's own performance figures, printed."""

from __future__ import annotations

import argparse

from tools.bench import (cluster, conversion, evaluation, footprint, methods, overhead,
                            scale, searchtime, stagetimes)

SECTIONS = ("stages", "overhead", "cores", "stability", "search", "pipeline", "footprint",
            "conversion", "scale", "cluster", "methods")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="+", choices=SECTIONS, default=list(SECTIONS))
    parser.add_argument("--sizes", nargs=2, type=int, default=(2000, 8000),
                        help="image counts of the scale check")
    args = parser.parse_args()
    if "stages" in args.only:
        stagetimes.main()
    evaluation.main(args.only)
    if "search" in args.only:
        searchtime.main()
    if "pipeline" in args.only:
        overhead.main()
    if "footprint" in args.only:
        footprint.main()
    if "conversion" in args.only:
        conversion.main()
    if "scale" in args.only:
        scale.main(tuple(args.sizes))
    if "cluster" in args.only:
        cluster.main()
    if "methods" in args.only:
        methods.main()


if __name__ == "__main__":
    main()
