"""What every kind of variant has, and the registry of kinds (no TensorFlow here).

A kind is a dataclass subclass of `VariantSpec` with its own `BACKEND` (the value of the
config key `backend` that chooses it, as `model.arch` chooses a model schema), its own
fields, checks and `source_form` (which form of its source model its producer starts
from). Defining the class registers it. How a kind is made (TensorFlow's side) is its
producer, a class in `pipeline/produce/` registered in `pipeline.produce.producer.PRODUCERS`
(never imported from here: the TensorFlow-free stages read these classes).
"""

from __future__ import annotations

import dataclasses
import re
from typing import Any, ClassVar

from pipeline.reads import NO_RERUN
from pipeline.schema import one_of

SOURCES = ("float", "qat")  # which Keras model a variant starts from
# The forms of the source model a kind's producer starts from (`source_form`).
KERAS, SAVED_MODEL, FLOAT_TFLITE = "keras", "saved_model", "float_tflite"
TORCH_PROGRAM = "torch_program"  # a PyTorch model's exported program (litert-torch's kinds)
# What accuracy is measured against: the data's labels, or the reference model's own answers
# (label-free). evaluate.labels, and a search's labels.
LABELS = ("data", "model")
_NAME = re.compile(r"^[a-z][a-z0-9_]*$")

KINDS: dict[str, type[VariantSpec]] = {}  # backend -> kind, filled as the kinds are defined


@dataclasses.dataclass
class VariantSpec:
    """A variant: how one `.tflite` model is made. Fields every kind has:

    Attributes:
        name: Variant name, used in file names, DVC stage names, MLflow runs and the report
            (its key in `quantization.variants`).
        description: One line for the report.
        source: `float` starts from the trained float model, `qat` from the QAT fine-tuned
            one.
        backend: The kind (`KINDS`): `converter` (the default), `litert_quantizer`, `search`.
    """

    BACKEND: ClassVar[str] = ""

    name: str = dataclasses.field(default="?", metadata=NO_RERUN)  # its key in the mapping
    description: str = ""
    source: str = "???"  # required: dvc.yaml picks the Keras model to convert by it
    backend: str = "?"

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "BACKEND" in vars(cls):  # a kind of its own (not a subclass of one)
            KINDS[cls.BACKEND] = cls

    @property
    def key(self) -> str:
        """The variant's config key, for error messages."""
        return f"quantization.variants.{self.name}"

    def __post_init__(self) -> None:
        if not _NAME.match(self.name):
            raise ValueError(f"{self.key}: variant names must match {_NAME.pattern} (they "
                             "become file, stage and run names)")
        one_of(f"{self.key}.source", self.source, SOURCES)
        one_of(f"{self.key}.backend", self.backend, (self.BACKEND,))

    def require_float_source(self, what: str) -> None:
        if self.source != "float":
            raise ValueError(f"{self.key}: {what} quantizes the float model (source: float)")

    # What a kind answers; each overrides the ones that hold for it.
    @property
    def source_form(self) -> str:
        """What this variant's producer starts from: the source's Keras model (`KERAS`), its
        SavedModel (`SAVED_MODEL`), its float `.tflite` (`FLOAT_TFLITE`) or, for a PyTorch
        model, its exported program (`TORCH_PROGRAM`)."""
        return SAVED_MODEL

    @property
    def calibrated(self) -> bool:
        """True if the variant needs calibration samples (representative data)."""
        return False

    @property
    def plain(self) -> bool:
        """True if the variant is the float model itself, converted as it is (no
        quantization, no change): it carries the conversion fidelity of a model from
        another framework (`pipeline.produce.intake`)."""
        return False

    @property
    def adjusts_weights(self) -> bool:
        """True if the float Keras model's weights are changed before conversion
        (equalization, bias correction, AdaRound: `pipeline.produce.adjust`): its per-layer
        table is then its own, not the shared one."""
        return False

    @property
    def full_integer(self) -> bool:
        """True for int8-activation, calibrated conversions of the float model: the ones
        TFLite's QuantizationDebugger can measure per layer."""
        return False

    @property
    def selective(self) -> bool:
        """True if some layers are chosen by their per-layer error to stay in float."""
        return False

    @property
    def integer_only(self) -> bool:
        """True if no float fallback is allowed (only integer op sets)."""
        return False

    def validation_target(self) -> tuple[float, str] | None:
        """For a kind that measures trial models on the validation split while it is made:
        the accuracy drop they may cost and what they are scored against (`LABELS`), from
        the variant's own fields; None for the others."""
        return None

    def as_params(self) -> dict[str, str]:
        """Flat string params of this kind's own fields (for MLflow)."""
        def text(value: Any) -> str:
            if isinstance(value, list):
                return ",".join(text(v) if not dataclasses.is_dataclass(v) else
                                " ".join(f"{k}={x}" for k, x in dataclasses.asdict(v).items()
                                         if x is not None) for v in value)
            return str(value)

        return {f"variant.{f.name}": text(getattr(self, f.name))
                for f in dataclasses.fields(self)}
