"""Stage reference_outputs: the reference variant's outputs on the test split, written once, so
that every variant's output error is measured against the same numbers.

    python stages/reference_outputs.py  # outputs: pipeline.layout; config: params.yaml
"""

from pipeline import cli
from pipeline.steps import reference_outputs

if __name__ == "__main__":
    cli.stage(__doc__, reference_outputs.run)
