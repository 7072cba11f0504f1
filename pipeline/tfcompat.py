"""Import TensorFlow with Keras 2 (`tf_keras`), as tensorflow-model-optimization requires.

`TF_USE_LEGACY_KERAS=1` must be set before the first `import tensorflow`; every module that
needs TF gets it from `import_tf()` so that no import order can get this wrong.
"""

from __future__ import annotations

import os
from types import ModuleType


def import_tf(seed: int | None = None) -> tuple[ModuleType, ModuleType]:
    """Import TensorFlow and tf_keras; optionally seed everything and make ops deterministic.

    Returns:
        `(tensorflow, tf_keras)`.
    """
    from pipeline import quiet

    os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
    quiet.setup()  # TensorFlow's log level, before its first import
    with quiet.native():  # absl's and CUDA's lines at import
        import tensorflow as tf
        import tf_keras

    if seed is not None:
        tf_keras.utils.set_random_seed(seed)  # python, numpy and TF generators
        tf.config.experimental.enable_op_determinism()
    return tf, tf_keras
