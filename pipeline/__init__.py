"""TFLite quantization lab: train a float Keras model, quantize it every way TFLite offers,
evaluate, benchmark, report and track each variant.

The package is split along the TensorFlow boundary: `pipeline.produce` imports TensorFlow
(models, training, QAT, conversion); `pipeline.measure` (interpreter, inspection, evaluation,
benchmark) and `pipeline.report` (summary, recommendation, pages, MLflow) never do, nor do the
shared modules at the top (config, variants, layout, artifacts, data, io, signals).
`pipeline.steps` has one function per DVC stage; `stages/*.py` are the thin entry points.
"""

__version__ = "0.1.0"
