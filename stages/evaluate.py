"""Stage evaluate@VARIANT: accuracy, top-k, per-class accuracy, confusion matrix and output
error against the reference, on the whole test split.

    python stages/evaluate.py int8 --data data/prepared/dataset.npz \
        --variant-dir models/tflite/int8 --reference evaluation/reference_outputs.npy \
        --out evaluation/int8
"""

from pathlib import Path

from pipeline import cli, steps
from pipeline.config import load_params


def main() -> None:
    p = cli.parser(__doc__)
    p.add_argument("variant")
    p.add_argument("--data", required=True, type=Path)
    p.add_argument("--variant-dir", required=True, type=Path, help="the quantize stage's folder")
    p.add_argument("--reference", required=True, type=Path,
                   help="the reference stage's outputs (.npy)")
    p.add_argument("--out", required=True, type=Path,
                   help="folder for metrics.json and the confusion matrix (JSON and PNG)")
    args = p.parse_args()
    steps.evaluate(load_params(args.params)[0], args.variant, args.data, args.variant_dir,
                   args.reference, args.out)


if __name__ == "__main__":
    cli.run(main)
