"""Stage reference: the reference variant's outputs on the test split, written once, so that
every variant's output error is measured against the same numbers.

    python stages/reference.py --data data/prepared/dataset.npz \
        --variant-dir models/tflite/float32 --out evaluation/reference_outputs.npy
"""

from pipeline import cli, data, evaluate, quantize
from pipeline.config import load_params


def main() -> None:
    p = cli.parser(__doc__)
    p.add_argument("--data", required=True)
    p.add_argument("--variant-dir", required=True, help="the reference variant's folder")
    p.add_argument("--out", required=True, help="outputs (n, num_classes) as .npy")
    args = p.parse_args()
    cfg, _ = load_params(args.params)
    name = cfg.report.reference
    record = quantize.read_record(args.variant_dir)
    if record["status"] != "ok":
        raise ValueError(f"the reference variant {name!r} failed, so nothing can be "
                         f"compared: {record['error']}")
    ds = data.load(args.data)
    evaluate.reference_outputs(quantize.tflite_path(args.variant_dir, name), ds.x_test,
                               args.out, cfg.evaluate.batch_size)


if __name__ == "__main__":
    cli.run(main)
