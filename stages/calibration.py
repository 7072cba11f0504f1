"""Stage calibration: the calibration study, what the number and the choice of
representative samples cost each calibrated variant (`calibration` in params.yaml).

    python stages/calibration.py   # outputs: pipeline.layout; config: params.yaml
"""

from pipeline import cli
from pipeline.steps import calibration

if __name__ == "__main__":
    cli.stage(__doc__, calibration.run)
