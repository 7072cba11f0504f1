"""Stage train: train the float Keras model (or, with model=file, load yours, check that it
fits the data and measure it); write it, its history and its test accuracy.

    python stages/train.py            # outputs: pipeline.layout; config: params.yaml
"""

from pipeline import cli
from pipeline.steps import train

if __name__ == "__main__":
    cli.stage(__doc__, train.run, warm=True)
