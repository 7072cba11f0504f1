"""Stage quantize@VARIANT: convert the variant's source Keras model to TFLite, inspect it and
measure its per-layer error. A failed conversion is recorded, and the stage still succeeds.

    python stages/quantize.py int8    # outputs: pipeline.layout; config: params.yaml
"""

from pipeline import cli
from pipeline.steps import quantize

if __name__ == "__main__":
    cli.stage(__doc__, quantize.run, per_variant=True, warm=True)
