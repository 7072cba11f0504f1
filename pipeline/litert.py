"""Run `.tflite` models with the LiteRT interpreter (`ai_edge_litert`); no TensorFlow.

Inputs are quantized and outputs dequantized with each tensor's own scale and zero point, so
every variant takes float images and returns float scores.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

_NUMPY_DTYPES = {"float32": np.float32, "int8": np.int8, "uint8": np.uint8, "int16": np.int16}


def load_interpreter(path: str | Path, num_threads: int = 1) -> Any:
    """Load a `.tflite` file and allocate its tensors.

    Raises:
        FileNotFoundError: if the file is missing.
        ValueError: if the file is not a TFLite model.
    """
    from ai_edge_litert.interpreter import Interpreter

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"TFLite model {path} does not exist")
    try:
        interpreter = Interpreter(model_path=str(path), num_threads=num_threads)
    except ValueError as exc:
        raise ValueError(f"{path} is not a valid TFLite model: {exc}") from exc
    interpreter.allocate_tensors()
    return interpreter


def quantize_input(x: np.ndarray, detail: dict[str, Any]) -> np.ndarray:
    """Convert float input `x` to the input tensor's dtype using its scale and zero point."""
    dtype = detail["dtype"]
    if np.issubdtype(dtype, np.floating):
        return x.astype(dtype)
    scale, zero_point = detail["quantization"]
    if scale == 0:
        raise ValueError(f"input tensor {detail['name']!r} is {dtype} but has no scale")
    info = np.iinfo(dtype)
    q = np.round(x / scale + zero_point)
    return np.clip(q, info.min, info.max).astype(dtype)


def dequantize_output(y: np.ndarray, detail: dict[str, Any]) -> np.ndarray:
    """Convert the output tensor's values to float32 using its scale and zero point."""
    if np.issubdtype(detail["dtype"], np.floating):
        return y.astype(np.float32)
    scale, zero_point = detail["quantization"]
    return ((y.astype(np.float32) - zero_point) * scale).astype(np.float32)


def io_dtypes(interpreter: Any) -> tuple[str, str]:
    """Names of the first input's and first output's dtypes, e.g. `("int8", "int8")`."""
    return (np.dtype(interpreter.get_input_details()[0]["dtype"]).name,
            np.dtype(interpreter.get_output_details()[0]["dtype"]).name)


class Runner:
    """Single-sample inference on one `.tflite` model, float in and float out.

    Args:
        path: The `.tflite` file.
        num_threads: Interpreter threads.
    """

    def __init__(self, path: str | Path, num_threads: int = 1) -> None:
        self.path = Path(path)
        self.interpreter = load_interpreter(path, num_threads)
        self.input = self.interpreter.get_input_details()[0]
        self.output = self.interpreter.get_output_details()[0]

    def set_input(self, sample: np.ndarray) -> None:
        """Quantize and copy one sample `(1, *input_shape)` into the input tensor."""
        self.interpreter.set_tensor(self.input["index"], quantize_input(sample, self.input))

    def invoke(self) -> None:
        self.interpreter.invoke()

    def get_output(self) -> np.ndarray:
        """The dequantized output, `(1, num_classes)` float32."""
        return dequantize_output(self.interpreter.get_tensor(self.output["index"]), self.output)

    def predict(self, x: np.ndarray) -> np.ndarray:
        """Scores for every sample of `x` `(n, *input_shape)`, one invoke each.

        Returns:
            `(n, num_classes)` float32.
        """
        expected = tuple(self.input["shape"][1:])
        if tuple(x.shape[1:]) != expected:
            raise ValueError(f"{self.path.name} takes samples of shape {expected}, "
                             f"got {tuple(x.shape[1:])}")
        out = []
        for i in range(len(x)):
            self.set_input(x[i:i + 1])
            self.invoke()
            out.append(self.get_output()[0])
        return np.stack(out)
