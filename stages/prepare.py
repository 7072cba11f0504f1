"""Stage prepare: load the dataset and write its seeded, stratified splits.

    python stages/prepare.py --out data/prepared/dataset.npz
"""

from pathlib import Path

from pipeline import cli, steps
from pipeline.config import load_params


def main() -> None:
    p = cli.parser(__doc__)
    p.add_argument("--out", required=True, type=Path, help="the .npz of train/val/test splits")
    args = p.parse_args()
    steps.prepare(load_params(args.params)[0], args.out)


if __name__ == "__main__":
    cli.run(main)
