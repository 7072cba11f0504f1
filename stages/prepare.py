"""Stage prepare: load the dataset and write its seeded, stratified splits.

    python stages/prepare.py          # outputs: pipeline.layout; config: params.yaml
"""

from pipeline import cli
from pipeline.steps import prepare

if __name__ == "__main__":
    cli.stage(__doc__, prepare.run)
