"""Stage evaluate@VARIANT: accuracy of one .tflite variant on the whole test split.

    python stages/evaluate.py int8 --data data/prepared/dataset.npz \
        --model models/tflite/int8.tflite --out evaluation/int8.json
"""

from pipeline import cli, data, evaluate
from pipeline.config import load_params
from pipeline.io import write_json
from pipeline.variants import select


def main() -> None:
    p = cli.parser(__doc__)
    p.add_argument("variant")
    p.add_argument("--data", required=True)
    p.add_argument("--model", required=True)
    p.add_argument("--out", required=True)
    args = p.parse_args()
    cfg, _ = load_params(args.params)
    select(cfg.variants, args.variant)
    ds = data.load(args.data)
    write_json(args.out, evaluate.evaluate(args.model, ds.x_test, ds.y_test))


if __name__ == "__main__":
    cli.run(main)
