"""Stage qat: quantization-aware fine-tuning of the float model.

    python stages/qat.py --data data/prepared/dataset.npz --model models/keras/float \
        --out models/keras/qat --history models/keras/qat_history.json \
        --metrics models/keras/qat_metrics.json
"""

from pathlib import Path

from pipeline import cli, steps
from pipeline.config import load_params


def main() -> None:
    p = cli.parser(__doc__)
    p.add_argument("--data", required=True, type=Path)
    p.add_argument("--model", required=True, type=Path, help="the float model's folder")
    p.add_argument("--out", required=True, type=Path, help="the QAT model's folder")
    p.add_argument("--history", required=True, type=Path)
    p.add_argument("--metrics", required=True, type=Path)
    args = p.parse_args()
    steps.qat(load_params(args.params)[0], args.data, args.model, args.out, args.history,
              args.metrics)


if __name__ == "__main__":
    cli.run(main)
