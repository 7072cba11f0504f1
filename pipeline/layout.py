"""Where every stage's outputs live, written once: the stage scripts, the Hydra app and
`dvc.yaml` (generated from these paths by `pipeline.dvcfile`) all read them from here.

Paths are relative to `root`: the project for `dvc repro`, a Hydra job directory for
`python -m pipeline`.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

KERAS_MODELS = ("float", "qat")  # the Keras models a variant can be converted from


@dataclasses.dataclass(frozen=True)
class Layout:
    """The outputs of every stage under `root`."""

    root: Path = Path(".")

    def _at(self, *parts: str) -> Path:
        return self.root.joinpath(*parts)

    @property
    def dataset(self) -> Path:
        """The prepared splits: a folder of `.npy` files (`pipeline.data`)."""
        return self._at("data", "prepared")

    def keras(self, model: str) -> Path:
        """The stored Keras model's folder (`pipeline.build.model_store`); `model` is
        `float` or `qat`."""
        return self._at("models", "keras", model)

    def history(self, model: str) -> Path:
        """Per-epoch training curves of a Keras model (JSON)."""
        return self._at("models", "keras", f"{model}_history.json")

    def keras_metrics(self, model: str) -> Path:
        """Test accuracy of a Keras model (JSON)."""
        return self._at("models", "keras", f"{model}_metrics.json")

    @property
    def layer_errors(self) -> Path:
        """Per-layer error tables, one per full-integer setting (`pipeline.steps.layer_errors`)."""
        return self._at("models", "layer_errors")

    @property
    def variants(self) -> Path:
        """The folder of every variant's folder."""
        return self._at("models", "tflite")

    def variant(self, name: str) -> Path:
        """A variant's folder (`pipeline.artifacts`)."""
        return self.variants / name

    @property
    def evaluations(self) -> Path:
        return self._at("evaluation")

    @property
    def reference_outputs(self) -> Path:
        """The reference variant's outputs on the test split (`.npy`)."""
        return self.evaluations / "reference_outputs.npy"

    def evaluation(self, name: str) -> Path:
        """A variant's evaluation folder (`metrics.json`, confusion matrix)."""
        return self.evaluations / name

    @property
    def benchmarks(self) -> Path:
        return self._at("benchmark")

    def benchmark(self, name: str) -> Path:
        """A variant's benchmark (JSON)."""
        return self.benchmarks / f"{name}.json"

    @property
    def footprints(self) -> Path:
        return self._at("footprint")

    def footprint(self, name: str) -> Path:
        """A variant's device footprint folder (`footprint.json`, Vela's reports and
        compiled models under `vela/<accelerator>/`)."""
        return self.footprints / name

    @property
    def reports(self) -> Path:
        return self._at("reports")

    def report(self, name: str) -> Path:
        """One file (or `plots`) of the report folder; names in `REPORT_FILES`."""
        return self.reports / name

    @property
    def mlflow_run(self) -> Path:
        """The run ids the track stage logged (machine-local, not cached)."""
        return self.reports / "mlflow_run.json"


# Files the report stage writes into `reports/` (`pipeline.report.writer`), and the DVC
# metrics file among them.
REPORT_FILES = ("summary.md", "summary.csv", "summary.json", "recommendation.json",
                "report.html", "plots")
METRICS_FILE = "metrics.json"
FOOTPRINT_FILE = "footprint.json"  # in each variant's footprint folder
