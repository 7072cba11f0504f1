"""An MLflow pyfunc model that runs one `.tflite` file: float images in, float scores out.

Logged as MLflow "models from code" (`mlflow.pyfunc.log_model(python_model=<this file>)`):
MLflow copies this file into the logged model, so the model loads and serves where the lab is
not installed, with only `mlflow`, `ai-edge-litert` and `numpy`. That is why it imports nothing
from the lab; the quantization of inputs and outputs is the evaluation's
(`pipeline.measure.litert.quantize_input` / `dequantize_output`), and a test holds the served
answers to the lab's own evaluation.
"""

from __future__ import annotations

from typing import Any

import mlflow
import numpy as np
from mlflow.pyfunc import PythonModel


class TFLiteModel(PythonModel):
    """Scores for a batch of float samples `(n, *input_shape)`: `(n, num_classes)` float32."""

    def load_context(self, context: Any) -> None:
        from ai_edge_litert.interpreter import Interpreter

        self._interpreter = Interpreter(model_path=context.artifacts["tflite"])
        self._interpreter.allocate_tensors()
        self._batch = 1

    def _details(self) -> tuple[dict, dict]:
        return (self._interpreter.get_input_details()[0],
                self._interpreter.get_output_details()[0])

    def _resize(self, n: int) -> int:
        """Run `n` samples per invoke if the graph allows it, else one."""
        if n == self._batch:
            return n
        shape = list(self._details()[0]["shape"][1:])
        try:
            self._interpreter.resize_tensor_input(self._details()[0]["index"], [n, *shape])
            self._interpreter.allocate_tensors()
            self._batch = n
        except (RuntimeError, ValueError):  # a fixed-shape graph: one sample at a time
            self._interpreter.resize_tensor_input(self._details()[0]["index"], [1, *shape])
            self._interpreter.allocate_tensors()
            self._batch = 1
        return self._batch

    # The np.ndarray annotation: no type-hint validation, and no MLflow warning about it.
    def predict(self, context: Any, model_input: np.ndarray, params: Any = None) -> np.ndarray:
        x = np.asarray(getattr(model_input, "values", model_input), dtype=np.float32)
        shape = tuple(int(d) for d in self._details()[0]["shape"][1:])
        x = x.reshape((-1, *shape))
        batch = self._resize(len(x)) if len(x) else 1
        scores = [self._score(x[i:i + batch]) for i in range(0, len(x), batch)]
        return np.concatenate(scores) if scores else np.zeros((0, 0), np.float32)

    def _score(self, x: np.ndarray) -> np.ndarray:
        inp, out = self._details()
        if not np.issubdtype(inp["dtype"], np.floating):  # quantize: round(x/scale + zp)
            scale, zero_point = inp["quantization"]
            info = np.iinfo(inp["dtype"])
            x = np.clip(np.rint(x * np.float32(1.0 / scale) + np.float32(zero_point)),
                        info.min, info.max).astype(inp["dtype"])
        else:
            x = x.astype(inp["dtype"])
        self._interpreter.set_tensor(inp["index"], x)
        self._interpreter.invoke()
        y = self._interpreter.get_tensor(out["index"])
        if not np.issubdtype(out["dtype"], np.floating):  # dequantize: (y - zp) * scale
            scale, zero_point = out["quantization"]
            y = (y.astype(np.float32) - zero_point) * scale
        return np.asarray(y, dtype=np.float32)


mlflow.models.set_model(TFLiteModel())
