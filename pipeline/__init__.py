"""TFLite quantization lab: train a float Keras model, quantize it every way TFLite offers,
evaluate, benchmark, report and track each variant.

The package is in layers (docs/development.md: "Layout"), split along the TensorFlow
boundary: `pipeline.produce` imports TensorFlow (models, training, QAT, conversion, the
variants' `.tflite` files, the search); `pipeline.variants` (the kinds of variant, as data),
`pipeline.measure` (interpreter, inspection, evaluation, benchmark, device footprint),
`pipeline.report` (summary, recommendation, the report's pages), `pipeline.ship` (a variant
as a device package: C sources, resolver, settings, golden vectors) and `pipeline.tracking`
(MLflow: runs, logged models, sweeps, the server) never do, nor do the shared modules at the
top (`pipeline.config`, `pipeline.layout`, `pipeline.artifacts`, `pipeline.data`,
`pipeline.io`, `pipeline.signals`, ...). `pipeline.steps` has one function per DVC stage;
`stages/*.py` are the thin entry points. `pipeline.zoo` holds trained models nobody here
wrote (an ONNX file, a PyTorch builder), to try the ONNX and PyTorch intakes on.
"""

__version__ = "0.1.0"
