"""TFLite quantization lab: train a float Keras model, quantize it every way TFLite offers,
evaluate, benchmark, report and track each variant.

Library code lives here and is importable and typed; `stages/*.py` are the thin DVC entry
points (`dvc repro`). Modules that only run `.tflite` files (litert, evaluate, benchmark,
report, tracking) never import TensorFlow.
"""

__version__ = "0.1.0"
