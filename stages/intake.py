"""Stage intake: with model=onnx or model=torch, convert the model once into the float model
every variant starts from and check it against onnxruntime / torch on the test split (it
stops when the conversion changes predictions beyond conf/ tolerance); with a Keras model,
only record that none was needed.

    python stages/intake.py           # outputs: pipeline.layout; config: params.yaml
"""

from pipeline import cli
from pipeline.steps import intake

if __name__ == "__main__":
    cli.stage(__doc__, intake.run, warm=True)
