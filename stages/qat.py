"""Stage qat: quantization-aware fine-tuning of the float model.

    python stages/qat.py              # outputs: pipeline.layout; config: params.yaml
"""

from pipeline import cli
from pipeline.steps import qat

if __name__ == "__main__":
    cli.stage(__doc__, qat.run, warm=True)
