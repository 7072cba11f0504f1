"""Each variant as an MLflow logged model (`tflite_pyfunc.py`: float in, scores out) with its
metrics linked, and the candidate registered from it, so
`mlflow models serve -m models:/<registered model>@candidate` serves it."""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pipeline import metrics, signals

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class Data:
    """The prepared data a pipeline execution was measured on.

    Attributes:
        name: The data set's name (`data.name`).
        digest: Its content digest, as DVC computes it (`pipeline.data.content_digest`).
        path: The store folder.
        source: Where the splits came from (`meta.json`).
        splits: Each split's size.
        sample_shape: One sample's shape.
        num_classes: Classes the models score.
        example: A few validation samples, float32: the logged models' input example.
    """

    name: str
    digest: str
    path: str
    source: str
    splits: Mapping[str, int]
    sample_shape: tuple[int, ...]
    num_classes: int
    example: Any = None

    def dataset(self, split: str) -> Any:
        """The split as an MLflow dataset: named `<name>/<split>`, with the store's digest."""
        from mlflow.entities import Dataset

        return Dataset(name=f"{self.name}/{split}", digest=self.digest[:36],
                       source_type="local",
                       source=json.dumps({"uri": self.path, "split": split,
                                          "source": self.source}),
                       schema=json.dumps({"x": {"shape": [-1, *self.sample_shape],
                                                "dtype": "float32"},
                                          "y": {"classes": self.num_classes}}),
                       profile=json.dumps({"num_rows": int(self.splits.get(split, 0))}))

# Linked to each variant's logged model (the Models tab's columns); the test-set figures
# also name the data they were measured on (`pipeline.metrics` says which).
MODEL_METRICS = metrics.keys(metrics.MODEL)
TEST_SET_METRICS = frozenset(m.key for m in metrics.METRICS if m.test_split)


PYFUNC_FILE = Path(__file__).with_name("tflite_pyfunc.py")  # the logged models' code


# What a logged model needs to load and serve: no TensorFlow, not the lab.
MODEL_REQUIREMENTS = ("mlflow", "ai-edge-litert", "numpy")


def register_candidate(client: Any, model_name: str, variant: str, run_id: str,
                       model_id: str | None = None, alias: str = "candidate") -> str:
    """Register the variant as a new version of `model_name` and point `alias` at it: its
    logged model (`model_id`: loads and serves as a pyfunc), else its run's `model/`
    artifact (the bare `.tflite`).

    Returns:
        The new version.
    """
    from mlflow.exceptions import MlflowException

    try:
        client.create_registered_model(
            model_name, description="TFLite models chosen by the quantization lab")
    except MlflowException as exc:
        if "RESOURCE_ALREADY_EXISTS" not in str(exc.error_code):
            raise
    source = f"models:/{model_id}" if model_id else f"runs:/{run_id}/model"
    version = client.create_model_version(model_name, source=source, run_id=run_id,
                                          model_id=model_id, tags={"variant": variant}).version
    client.set_registered_model_alias(model_name, alias, version)
    log.info("MLflow registry: %s version %s (%s) is @%s", model_name, version, variant, alias)
    return str(version)


def _requirements() -> list[str]:
    from importlib.metadata import version

    return [f"{name}=={version(name)}" for name in MODEL_REQUIREMENTS]


def log_model(client: Any, experiment_id: str, run_id: str, variant: str, tflite: Path,
              data: Data, params: Mapping[str, str], tags: Mapping[str, str]) -> str:
    """Log one variant's `.tflite` as an MLflow logged model of its run: a pyfunc that takes
    float samples `(n, *sample_shape)` and returns float scores `(n, num_classes)`, quantizing
    inside (`PYFUNC_FILE`), with a signature and an input example.

    Returns:
        The logged model's id.

    Raises:
        Exception: what MLflow raised; the model is marked FAILED first.
    """
    import mlflow
    import numpy as np
    from mlflow.entities import LoggedModelOutput
    from mlflow.models import ModelSignature
    from mlflow.types.schema import Schema, TensorSpec

    model = client.create_logged_model(experiment_id=experiment_id, name=variant,
                                       source_run_id=run_id, tags=dict(tags),
                                       params=dict(params), model_type="tflite")
    try:
        signature = ModelSignature(
            inputs=Schema([TensorSpec(np.dtype(np.float32), (-1, *data.sample_shape))]),
            outputs=Schema([TensorSpec(np.dtype(np.float32), (-1, data.num_classes))]))
        with signals.deferred():  # MLflow's store calls inside it are not cut (Uncut)
            mlflow.pyfunc.log_model(name=variant, model_id=model.model_id,
                                    python_model=str(PYFUNC_FILE),
                                    artifacts={"tflite": str(tflite)}, signature=signature,
                                    input_example=data.example,
                                    pip_requirements=_requirements())
    except BaseException:
        client.finalize_logged_model(model.model_id, "FAILED")
        raise
    client.log_outputs(run_id, [LoggedModelOutput(model.model_id, step=0)])
    return model.model_id


def model_metrics(model_id: str | None, metrics: Mapping[str, float],
                   data: Data | None) -> tuple[dict[str, float], list[Any]]:
    """Split a variant's metrics into plain run metrics and those linked to its logged model
    (`MODEL_METRICS`; the test-set ones also name the data)."""
    from mlflow.entities import Metric

    if model_id is None or data is None:
        return dict(metrics), []
    now = int(time.time() * 1000)
    linked = [Metric(k, float(metrics[k]), now, 0, model_id=model_id,
                     **({"dataset_name": f"{data.name}/test", "dataset_digest": data.digest[:36]}
                        if k in TEST_SET_METRICS else {}))
              for k in MODEL_METRICS if k in metrics]
    return {k: v for k, v in metrics.items() if k not in MODEL_METRICS}, linked

