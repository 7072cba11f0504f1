"""Where every stage's outputs live, written once: the stage scripts, the Hydra app and
`dvc.yaml` (generated from these paths by `pipeline.dvcfile`) all read them from here.

Paths are relative to `root`: the project for `dvc repro`, a Hydra job directory for
`python -m pipeline`.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

KERAS_MODELS = ("float", "qat")  # the Keras models a variant can be converted from
# Inside a variant's footprint folder: Vela's outputs per accelerator, and its compiled model.
VELA_DIR, VELA_MODEL = "vela", "model_vela.tflite"


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

    @property
    def intake(self) -> Path:
        """A model from another framework, converted (`pipeline.produce.intake`): its
        `intake.json` (what was converted, how, and its fidelity) and the converted model;
        for a model built or loaded as Keras, only `intake.json`."""
        return self._at("models", "intake")

    def keras(self, model: str) -> Path:
        """The stored Keras model's folder (`pipeline.produce.model_store`); `model` is
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
        """A variant's evaluation folder (`EVALUATION_FILE`, confusion matrix)."""
        return self.evaluations / name

    def evaluation_metrics(self, name: str) -> Path:
        """A variant's evaluation metrics (JSON)."""
        return self.evaluation(name) / EVALUATION_FILE

    @property
    def benchmarks(self) -> Path:
        return self._at("benchmark")

    def benchmark(self, name: str) -> Path:
        """A variant's benchmark (JSON)."""
        return self.benchmarks / f"{name}.json"

    def profile(self, name: str) -> Path:
        """A variant's per-operator times, one row per operator and profiled setting (CSV)."""
        return self.benchmarks / f"{name}.ops.csv"

    @property
    def footprints(self) -> Path:
        return self._at("footprint")

    def footprint(self, name: str) -> Path:
        """A variant's device footprint folder (`footprint.json`, Vela's reports and
        compiled models under `vela/<accelerator>/`)."""
        return self.footprints / name

    @property
    def packages(self) -> Path:
        """The device packages (`pipeline.ship`): `<variant>/` each, and `index.json`."""
        return self._at("deploy")

    def package(self, name: str) -> Path:
        return self.packages / name

    def vela_model(self, name: str, accelerator: str) -> Path:
        """Vela's compiled model of a variant for one Ethos-U (the footprint stage's)."""
        return self.footprint(name) / VELA_DIR / accelerator / VELA_MODEL

    @property
    def calibration(self) -> Path:
        """The calibration study (`pipeline.produce.calibration`): `study.json`,
        `points.csv`, `origins.npz`."""
        return self._at("calibration")

    @property
    def calibration_cache(self) -> Path:
        """The study's points by content key, kept across runs (outside DVC's outputs)."""
        return self._at(".cache", "calibration")

    @property
    def reports(self) -> Path:
        return self._at("reports")

    def report(self, name: str) -> Path:
        """One file (or `plots`) of the report folder; names in `REPORT_FILES`."""
        return self.reports / name

    def plot(self, name: str) -> Path:
        """One file of the report's plots folder."""
        return self.reports / PLOTS / name

    @property
    def mlflow_run(self) -> Path:
        """The run ids the track stage logged (machine-local, not cached)."""
        return self.reports / "mlflow_run.json"


# Files the report stage writes into `reports/` (`pipeline.report.writer`), and the DVC
# metrics file among them.
SUMMARY_MD, SUMMARY_CSV, SUMMARY_JSON = "summary.md", "summary.csv", "summary.json"
RECOMMENDATION = "recommendation.json"  # the candidate (`pipeline.report.recommend`)
REPORT_HTML, PLOTS = "report.html", "plots"
REPORT_FILES = (SUMMARY_MD, SUMMARY_CSV, SUMMARY_JSON, RECOMMENDATION, REPORT_HTML, PLOTS)
EVALUATION_FILE = "metrics.json"  # in each variant's evaluation folder
# Files of the report's `PLOTS` folder that DVC's plots section shows (`pipeline.dvcfile`).
VARIANTS_CSV, TRAINING_CSV = "variants.csv", "training.csv"
SIZE_PNG, LATENCY_PNG = "accuracy_vs_size.png", "accuracy_vs_latency.png"
TIME_PNG = "time_per_op_type.png"  # the reference and the variants slower than it, per op type
CALIBRATION_PNG = "calibration.png"  # accuracy against calibration size, per selection
# The calibration study's folder (`Layout.calibration`): its results, one row per point, and
# per point its samples' positions in the source
CALIBRATION_STUDY, CALIBRATION_POINTS, CALIBRATION_ORIGINS = ("study.json", "points.csv",
                                                              "origins.npz")
SIZE_BARS_PNG, TRAINING_PNG = "size.png", "training.png"
METRICS_FILE = "metrics.json"
FOOTPRINT_FILE = "footprint.json"  # in each variant's footprint folder
