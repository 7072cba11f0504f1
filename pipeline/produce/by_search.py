"""How a search variant (`pipeline.variants.SearchVariant`) is made: the accuracy-aware
search from the float model's `.tflite` (`pipeline.produce.search`, no TensorFlow). Writes
its trajectory, plot, decisions and rules into the variant's folder, its summary into the
record."""

from __future__ import annotations

import logging
import tempfile
import time
from pathlib import Path

from pipeline.artifacts import SEARCH_DECISIONS, SEARCH_PLOT, SEARCH_RULES, SEARCH_TRIALS
from pipeline.io import csv_text, write_text
from pipeline.produce import litert_quantizer, search
from pipeline.produce.producer import Folder, Inputs, Produced, Producer
from pipeline.variants import SearchVariant

log = logging.getLogger(__name__)


class SearchProducer(Producer):
    """The cheapest model within the accuracy budget, measured on the validation split."""

    KIND = SearchVariant

    def produce(self, spec: SearchVariant, inputs: Inputs, out: Folder) -> Produced:
        if inputs.validation is None:
            raise ValueError(f"variant {spec.name!r} searches: it needs the validation split")
        float_tflite = Path(inputs.source.load(spec.source_form))
        x_val, y_val, budget = inputs.validation
        if y_val is None:  # label-free: trials scored against the float model's own answers
            from pipeline.measure.litert import Runner

            y_val = Runner(float_tflite).predict(x_val).argmax(axis=1)
        started = time.perf_counter()
        with tempfile.TemporaryDirectory() as work:
            result = search.search(spec, float_tflite, inputs.calibration, x_val, y_val,
                                   budget, Path(work))
        write_text(out / SEARCH_TRIALS, csv_text([t.row() for t in result.trials]))
        write_text(out / SEARCH_DECISIONS, csv_text(result.decisions))
        layers = litert_quantizer.weight_ops(float_tflite)
        write_text(out / SEARCH_RULES, search.rules_yaml(result.decisions, layers))
        search.plot(result, budget, spec.objective, out / SEARCH_PLOT)
        out.note(search={
            "stop": result.stop, "budget_met": result.met, "budget": budget,
            "trials": len(result.trials), "found_trial": result.best.index,
            "val_accuracy": result.best.accuracy, "val_drop": result.best.drop,
            "float_val_accuracy": result.float_accuracy, "noise_floor": result.noise_floor,
            "resolvable": result.resolvable, "seconds": time.perf_counter() - started,
            "seconds_per_trial": (time.perf_counter() - started) / len(result.trials),
            "start": result.trials[0].change,
            "precisions": {d["layer"]: d["precision"] for d in result.decisions}})
        if not result.met:
            log.warning("search %s: the budget was not met (%s); the best found is kept, "
                        "flagged", spec.name, result.stop)
        if not result.resolvable:
            log.warning("search %s: a budget of %g is tighter than the validation split can "
                        "show (even a model agreeing on every sample has a drop bound of "
                        "%.4f)", spec.name, budget, result.noise_floor)
        return Produced(result.best.flatbuffer)
