"""Stage evaluate@VARIANT: accuracy of one .tflite variant on the whole test split.

    python stages/evaluate.py int8 --data data/prepared/dataset.npz \
        --variant-dir models/tflite/int8 --out evaluation/int8.json
"""

from pipeline import cli, data, evaluate, quantize
from pipeline.config import load_params
from pipeline.io import write_json
from pipeline.variants import select


def main() -> None:
    p = cli.parser(__doc__)
    p.add_argument("variant")
    p.add_argument("--data", required=True)
    p.add_argument("--variant-dir", required=True, help="the quantize stage's folder")
    p.add_argument("--out", required=True)
    args = p.parse_args()
    cfg, _ = load_params(args.params)
    select(cfg.variants, args.variant)
    record = quantize.read_record(args.variant_dir)
    if record["status"] != "ok":
        write_json(args.out, quantize.skipped("evaluate"))
        return
    ds = data.load(args.data)
    model = quantize.tflite_path(args.variant_dir, args.variant)
    result = evaluate.evaluate(model, ds.x_test, ds.y_test)
    write_json(args.out, {"status": "ok", **result})


if __name__ == "__main__":
    cli.run(main)
