"""Building models (imports TensorFlow): architectures, training, QAT, conversion, per-layer
debugging and the stored Keras models. Everything that needs TensorFlow lives here.
"""
