"""Running `.tflite` models (LiteRT and numpy only, never TensorFlow): the interpreter,
inspection, evaluation, benchmark and memory.
"""
