"""Stage benchmark@VARIANT: single-sample invoke() latency of one variant per thread count
and XNNPACK setting, speed-up against the reference (interleaved) and peak memory.

    python stages/benchmark.py int8 --data data/prepared/dataset.npz \
        --variant-dir models/tflite/int8 --reference-dir models/tflite/float32 \
        --out benchmark/int8.json
"""

from pathlib import Path

from pipeline import cli, steps
from pipeline.config import load_params


def main() -> None:
    p = cli.parser(__doc__)
    p.add_argument("variant")
    p.add_argument("--data", required=True, type=Path)
    p.add_argument("--variant-dir", required=True, type=Path, help="the quantize stage's folder")
    p.add_argument("--reference-dir", required=True, type=Path,
                   help="the reference variant's folder")
    p.add_argument("--out", required=True, type=Path)
    args = p.parse_args()
    steps.benchmark(load_params(args.params)[0], args.variant, args.data, args.variant_dir,
                    args.reference_dir, args.out)


if __name__ == "__main__":
    cli.run(main)
