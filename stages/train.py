"""Stage train: train the float Keras model (or, with model=file, load yours, check that it
fits the data and measure it); write it, its history and its test accuracy.

    python stages/train.py --data data/prepared/dataset.npz --out models/keras/float \
        --history models/keras/float_history.json --metrics models/keras/float_metrics.json
"""

from pathlib import Path

from pipeline import cli, steps
from pipeline.config import load_params


def main() -> None:
    p = cli.parser(__doc__)
    p.add_argument("--data", required=True, type=Path)
    p.add_argument("--out", required=True, type=Path, help="the float model's folder")
    p.add_argument("--history", required=True, type=Path, help="per-epoch curves (JSON)")
    p.add_argument("--metrics", required=True, type=Path, help="test accuracy (JSON)")
    args = p.parse_args()
    steps.train(load_params(args.params)[0], args.data, args.out, args.history, args.metrics)


if __name__ == "__main__":
    cli.run(main)
