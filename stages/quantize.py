"""Stage quantize@VARIANT: convert the variant's source Keras model to TFLite, inspect it and
measure its per-layer error. A failed conversion is recorded, and the stage still succeeds.

    python stages/quantize.py int8 --data data/prepared/dataset.npz \
        --model models/keras/float --out models/tflite/int8
"""

from pathlib import Path

from pipeline import cli, steps
from pipeline.config import load_params


def main() -> None:
    p = cli.parser(__doc__)
    p.add_argument("variant")
    p.add_argument("--data", required=True, type=Path)
    p.add_argument("--model", required=True, type=Path, help="the variant's source model folder")
    p.add_argument("--out", required=True, type=Path, help="the variant's folder")
    args = p.parse_args()
    steps.quantize(load_params(args.params)[0], args.variant, args.data, args.model, args.out)


if __name__ == "__main__":
    cli.run(main)
