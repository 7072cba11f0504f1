"""Stage benchmark@VARIANT: single-sample invoke() latency of one variant per thread count
and XNNPACK setting, speed-up against the reference (interleaved) and peak memory.

    python stages/benchmark.py int8 --data data/prepared/dataset.npz \
        --variant-dir models/tflite/int8 --reference-dir models/tflite/float32 \
        --out benchmark/int8.json
"""

from pipeline import benchmark, cli, data, quantize
from pipeline.config import load_params
from pipeline.io import write_json
from pipeline.variants import select


def main() -> None:
    p = cli.parser(__doc__)
    p.add_argument("variant")
    p.add_argument("--data", required=True)
    p.add_argument("--variant-dir", required=True, help="the quantize stage's folder")
    p.add_argument("--reference-dir", required=True, help="the reference variant's folder")
    p.add_argument("--out", required=True)
    args = p.parse_args()
    cfg, _ = load_params(args.params)
    select(cfg.variants, args.variant)
    record = quantize.read_record(args.variant_dir)
    if record["status"] != "ok":
        write_json(args.out, quantize.skipped("benchmark"))
        return
    reference = cfg.report.reference
    ds = data.load(args.data)
    result = benchmark.benchmark(
        quantize.tflite_path(args.variant_dir, args.variant), ds.x_test[:1], cfg.benchmark,
        None if args.variant == reference else
        quantize.tflite_path(args.reference_dir, reference))
    write_json(args.out, {"status": "ok", **result})


if __name__ == "__main__":
    cli.run(main)
