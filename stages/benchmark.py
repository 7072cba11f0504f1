"""Stage benchmark@VARIANT: single-sample invoke() latency of one .tflite variant.

    python stages/benchmark.py int8 --data data/prepared/dataset.npz \
        --model models/tflite/int8.tflite --out benchmark/int8.json
"""

from pipeline import benchmark, cli, data
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
    write_json(args.out, benchmark.benchmark(args.model, ds.x_test[:1], cfg.benchmark))


if __name__ == "__main__":
    cli.run(main)
