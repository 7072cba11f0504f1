"""Convert a Keras model to TFLite as a `ConverterVariant` says (imports TensorFlow)."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from pipeline import quiet
from pipeline.tfcompat import import_tf
from pipeline.variants import ConverterVariant

log = logging.getLogger(__name__)


def configure(converter: Any, spec: ConverterVariant, calibration: np.ndarray | None) -> Any:
    """Set a `tf.lite.TFLiteConverter` up for `spec`.

    Args:
        converter: A fresh converter.
        spec: The variant.
        calibration: Representative samples `(n, *input_shape)` float32; required when
            `spec.representative_data` is true.

    Returns:
        The same converter.

    Raises:
        ValueError: if the variant needs calibration data and none was given.
    """
    tf, _ = import_tf()
    converter.optimizations = [getattr(tf.lite.Optimize, o) for o in spec.optimizations]
    converter.target_spec.supported_ops = [getattr(tf.lite.OpsSet, o)
                                           for o in spec.supported_ops]
    converter.target_spec.supported_types = [tf.as_dtype(t) for t in spec.supported_types]
    if spec.inference_input_type != "float32":
        converter.inference_input_type = tf.as_dtype(spec.inference_input_type)
    if spec.inference_output_type != "float32":
        converter.inference_output_type = tf.as_dtype(spec.inference_output_type)
    if not spec.per_channel:  # no public switch exists; dense layers have their own flag
        converter._experimental_disable_per_channel = True
        converter._experimental_disable_per_channel_quantization_for_dense_layers = True
    if spec.representative_data:
        if calibration is None or len(calibration) == 0:
            raise ValueError(f"variant {spec.name!r} needs representative (calibration) data")
        samples = calibration.astype(np.float32)

        def representative_dataset() -> Iterator[list[np.ndarray]]:
            from tqdm import tqdm

            for sample in tqdm(samples, desc=f"calibrating {spec.name}", unit="sample",
                               disable=None, leave=False):
                yield [sample[np.newaxis]]  # (1, *input_shape)

        converter.representative_dataset = representative_dataset
    return converter


def new_converter(model: Any) -> Any:
    """A fresh `tf.lite.TFLiteConverter` for a `tf_keras` model or a SavedModel folder's path
    (`pipeline.produce.model_store.load`)."""
    tf, _ = import_tf()
    if isinstance(model, Path):
        return tf.lite.TFLiteConverter.from_saved_model(str(model))
    return tf.lite.TFLiteConverter.from_keras_model(model)


def convert(model: Any, spec: ConverterVariant, calibration: np.ndarray | None = None) -> bytes:
    """Convert a `tf_keras` model or a SavedModel folder to a TFLite flatbuffer for `spec`.

    Returns:
        The `.tflite` file's bytes.
    """
    import time

    started = time.perf_counter()
    converter = configure(new_converter(model), spec, calibration)
    log.info("converting variant %s from %s ...", spec.name,
             "its SavedModel" if isinstance(model, Path) else "the Keras model")
    with quiet.native():  # the converter's "fully_quantize: 0, ..." line
        flatbuffer = bytes(converter.convert())
    log.info("converted %s in %.1f s", spec.name, time.perf_counter() - started)
    return flatbuffer
