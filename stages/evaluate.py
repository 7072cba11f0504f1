"""Stage evaluate@VARIANT: accuracy, top-k, per-class accuracy, confusion matrix and output
error against the reference, on the whole test split.

    python stages/evaluate.py int8    # outputs: pipeline.layout; config: params.yaml
"""

from pipeline import cli
from pipeline.steps import evaluate

if __name__ == "__main__":
    cli.stage(__doc__, evaluate.run, per_variant=True)
