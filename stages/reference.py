"""Stage reference: the reference variant's outputs on the test split, written once, so that
every variant's output error is measured against the same numbers.

    python stages/reference.py --data data/prepared/dataset.npz \
        --variant-dir models/tflite/float32 --out evaluation/reference_outputs.npy
"""

from pathlib import Path

from pipeline import cli, steps
from pipeline.config import load_params


def main() -> None:
    p = cli.parser(__doc__)
    p.add_argument("--data", required=True, type=Path)
    p.add_argument("--variant-dir", required=True, type=Path,
                   help="the reference variant's folder")
    p.add_argument("--out", required=True, type=Path, help="outputs (n, num_classes) as .npy")
    args = p.parse_args()
    steps.reference(load_params(args.params)[0], args.data, args.variant_dir, args.out)


if __name__ == "__main__":
    cli.run(main)
