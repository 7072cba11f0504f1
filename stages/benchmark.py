"""Stage benchmark@VARIANT: single-sample invoke() latency of one variant per thread count and
XNNPACK setting, speed-up against the reference (interleaved) and peak memory.

    python stages/benchmark.py int8   # outputs: pipeline.layout; config: params.yaml
"""

from pipeline import cli
from pipeline.steps import benchmark

if __name__ == "__main__":
    cli.stage(__doc__, benchmark.run, per_variant=True)
