"""Stage layer_errors: the float model's per-layer error under each full-integer setting,
once (TensorFlow's QuantizationDebugger), for the quantize stages to read.

    python stages/layer_errors.py     # outputs: pipeline.layout; config: params.yaml
"""

from pipeline import cli
from pipeline.steps import layer_errors

if __name__ == "__main__":
    cli.stage(__doc__, layer_errors.run, warm=True)
