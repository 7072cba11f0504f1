"""Which data each number touched: training and calibration read the training split,
per-layer choices the validation split, and only evaluation (of the variants on LiteRT and on
TFLite Micro's kernels, of the Keras models) reads the test split. The real
steps run on the tiny config with the test images watched: every read is traced to the step
that made it and to whether an evaluation function was running (in whatever thread).
"""

from __future__ import annotations

import dataclasses
import functools
from pathlib import Path
from typing import Any

import pytest

from pipeline import data
from pipeline.config import Config
from pipeline.layout import Layout

# Evaluation: of a .tflite model, or of a Keras model (the float and QAT models' own test
# accuracy, reported beside the variants'). (module, name) as the code calls them.
EVALUATION = (("pipeline.measure.evaluate", "evaluate"),
              ("pipeline.measure.evaluate", "reference_outputs"),
              ("pipeline.produce.train", "test_accuracy"),
              ("pipeline.produce.qat", "test_accuracy"),
              ("pipeline.produce.model_store", "accuracy"),
              ("pipeline.measure.footprint", "measure"))  # the TFLM kernel path


class Watch:
    """Which step runs, whether an evaluation function runs, and every test-image read."""

    def __init__(self) -> None:
        self.step = "?"
        self.evaluating = 0
        self.reads: list[tuple[str, bool]] = []

    def evaluation(self, fn: Any) -> Any:
        @functools.wraps(fn)
        def wrapped(*args: Any, **kwargs: Any) -> Any:
            self.evaluating += 1
            try:
                return fn(*args, **kwargs)
            finally:
                self.evaluating -= 1
        return wrapped


class Watched:
    """The test images; every read is recorded with the step and evaluation state."""

    def __init__(self, images: Any, watch: Watch) -> None:
        self._images, self._watch = images, watch
        self.shape, self.dtype, self.ndim = images.shape, images.dtype, images.ndim

    def __len__(self) -> int:
        return len(self._images)

    def __getitem__(self, key: Any) -> Any:
        self._watch.reads.append((self._watch.step, self._watch.evaluating > 0))
        return self._images[key]

    def __array__(self, dtype: Any = None, copy: Any = None) -> Any:
        self._watch.reads.append((self._watch.step, self._watch.evaluating > 0))
        return self._images.__array__(dtype)


@pytest.mark.slow
def test_only_evaluation_reads_the_test_split(tmp_path: Path, tiny_cfg: Config,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib

    from pipeline.steps import (benchmark, evaluate, footprint, prepare, qat, quantize,
                                reference_outputs, train)

    watch = Watch()
    load = data.load
    monkeypatch.setattr(data, "load", lambda path: dataclasses.replace(
        load(path), x_test=Watched(load(path).x_test, watch)))
    for module, name in EVALUATION:
        mod = importlib.import_module(module)
        monkeypatch.setattr(mod, name, watch.evaluation(getattr(mod, name)))
    lay = Layout(tmp_path)

    def run(step: Any, *args: Any, **kwargs: Any) -> None:
        watch.step = step.__name__.rsplit(".", 1)[1]
        step.run(tiny_cfg, lay, *args, **kwargs)

    run(prepare)
    run(train)
    run(qat)
    for variant in ("float32", "int8", "int8_selective", "qat_int8"):
        run(quantize, variant)
    run(reference_outputs)
    for variant in ("float32", "int8"):
        run(evaluate, variant)
        run(benchmark, variant, progress=False)
    watch.step = "footprint"
    for variant in ("float32", "int8"):
        footprint.run_variant(tiny_cfg, lay, variant)

    steps = {step for step, _ in watch.reads}
    assert steps == {"train", "qat", "reference_outputs", "evaluate", "footprint"}, steps
    outside = [step for step, evaluating in watch.reads if not evaluating]
    assert not outside, f"test images read outside evaluation, in: {sorted(set(outside))}"
