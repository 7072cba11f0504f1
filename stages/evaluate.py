"""Stage evaluate@VARIANT: accuracy, top-k, per-class accuracy, confusion matrix and output
error against the reference, on the whole test split.

    python stages/evaluate.py int8 --data data/prepared/dataset.npz \
        --variant-dir models/tflite/int8 --reference evaluation/reference_outputs.npy \
        --out evaluation/int8
"""

from pathlib import Path

import numpy as np

from pipeline import cli, data, evaluate, plots, quantize
from pipeline.config import load_params
from pipeline.io import write_json
from pipeline.variants import select


def main() -> None:
    p = cli.parser(__doc__)
    p.add_argument("variant")
    p.add_argument("--data", required=True)
    p.add_argument("--variant-dir", required=True, help="the quantize stage's folder")
    p.add_argument("--reference", required=True, help="the reference stage's outputs (.npy)")
    p.add_argument("--out", required=True, help="folder for metrics.json and the confusion "
                                                 "matrix (JSON and PNG)")
    args = p.parse_args()
    cfg, _ = load_params(args.params)
    select(cfg.variants, args.variant)
    out = Path(args.out)
    record = quantize.read_record(args.variant_dir)
    if record["status"] != "ok":
        write_json(out / "metrics.json", quantize.skipped("evaluate"))
        return
    ds = data.load(args.data)
    reference = np.load(args.reference, mmap_mode="r")  # read batch by batch
    result = evaluate.evaluate(quantize.tflite_path(args.variant_dir, args.variant), ds.x_test,
                               ds.y_test, reference, cfg.evaluate.batch_size,
                               cfg.evaluate.top_k, ds.num_classes)
    matrix = result.pop("confusion_matrix")
    write_json(out / "confusion_matrix.json", matrix)
    plots.confusion_matrix(matrix, f"{args.variant}: accuracy {result['accuracy']:.4f}",
                           out / "confusion_matrix.png")
    write_json(out / "metrics.json", {"status": "ok", **result})


if __name__ == "__main__":
    cli.run(main)
