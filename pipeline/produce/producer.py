"""What every kind's producer shares: what it is given (`Inputs`), where it writes
(`Folder`), what it returns (`Produced`), and the registry of producers by kind.

A kind of variant is declared in `pipeline.variants` (TensorFlow-free: its fields and
checks); how it is made lives here, one module per kind: `by_converter`, `by_quantizer`,
`by_search`. Each is a `Producer` subclass naming its `KIND`; defining the class registers
it in `PRODUCERS`. The quantize step calls `pipeline.produce.quantize.variant`, which asks
the kind's producer for the flatbuffer and does the rest (the file, the checks, the record)
the same way for every kind.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar, NamedTuple

import numpy as np

from pipeline.produce import model_store
from pipeline.produce.layer_errors import LayerTable
from pipeline.variants import FLOAT_TFLITE, KERAS, SAVED_MODEL, TORCH_PROGRAM, VariantSpec

WORST_LAYERS = 3  # how many of the worst layers the record (and the report) lists


@dataclasses.dataclass(frozen=True)
class Source:
    """The model a variant starts from (its `source`: the float or the QAT model), in each
    form a producer may ask for (`spec.source_form`), each loaded only when asked.

    Each loader raises `model_store.ModelUnavailable` when the model, or that form of it,
    could not be made: the variant then fails alone, with the reason.

    Attributes:
        keras: The `tf_keras` model (a Keras 3 file stored as a SavedModel only: its path).
        saved_model: What the converter converts: the SavedModel folder (in hand: the Keras
            model itself).
        float_tflite: Its plain float32 `.tflite` (what the LiteRT Quantizer starts from).
        torch_program: A PyTorch model's exported program (`program.pt2`).
        intake: What the intake step found when the model came from another framework
            (its conversion and fidelity, `pipeline.produce.intake`), else None.
    """

    keras: Callable[[], Any]
    saved_model: Callable[[], Any]
    float_tflite: Callable[[], Path]
    torch_program: Callable[[], Path] = dataclasses.field(
        default=lambda: model_store.torch_program_missing())
    intake: dict[str, Any] | None = None

    def load(self, form: str) -> Any:
        """The model in `form` (`KERAS`, `SAVED_MODEL`, `FLOAT_TFLITE`, `TORCH_PROGRAM`)."""
        return {KERAS: self.keras, SAVED_MODEL: self.saved_model,
                FLOAT_TFLITE: self.float_tflite, TORCH_PROGRAM: self.torch_program}[form]()

    @classmethod
    def stored(cls, model_dir: Path) -> Source:
        """A model stored by the train or qat step (`pipeline.produce.model_store`).

        Raises:
            FileNotFoundError: if the folder holds no stored model (its stage has not run).
        """
        info = model_store.read_info(model_dir)  # now: no stored model stops the stage
        return cls(keras=lambda: model_store.load(model_dir),
                   saved_model=lambda: model_store.conversion_source(model_dir),
                   float_tflite=lambda: model_store.float_tflite(model_dir),
                   torch_program=lambda: model_store.torch_program(model_dir),
                   intake=info.get("intake"))

    @classmethod
    def given(cls, keras: Any = None, float_tflite: Path | None = None) -> Source:
        """A model in hand (tests, tools): a `tf_keras` model (or a SavedModel's path),
        converted as it is, and/or its float `.tflite`."""
        def missing(what: str) -> Callable[[], Any]:
            def load() -> Any:
                raise model_store.ModelUnavailable(f"no {what} was given for this variant")
            return load

        return cls(keras=(lambda: keras) if keras is not None else missing("Keras model"),
                   saved_model=(lambda: keras) if keras is not None else missing("model"),
                   float_tflite=((lambda: Path(float_tflite)) if float_tflite is not None
                                 else missing("float .tflite")))


class Validation(NamedTuple):
    """The validation split a kind measures its trial models on while it is made (the
    search), and the accuracy drop they may cost."""

    x: Any  # the validation inputs
    y: np.ndarray | None  # their labels; None: the float model's own answers (label-free)
    budget: float


def _no_table(spec: VariantSpec) -> LayerTable | None:
    return None


@dataclasses.dataclass(frozen=True)
class Inputs:
    """What the quantize step hands a variant's producer.

    Attributes:
        source: The model the variant starts from, in each form (`Source`).
        calibration: Representative samples from the training split (calibrated variants).
        selection: Samples from the validation split that per-layer error (and so the
            choice of layers kept in float) is measured on; default: the calibration samples.
        stored_table: The per-layer table the layer_errors step stored for a full-integer
            variant's setting, or None when it has not run (its producer then computes it).
        validation: For a kind that measures trial models while it is made (the search).
        comparison: Validation samples every tensor is compared on, with `float_tflite`.
        float_tflite: The float model's `.tflite`, which every tensor of the variant is
            compared with; None: no comparison.
    """

    source: Source
    calibration: np.ndarray | None = None
    selection: np.ndarray | None = None
    stored_table: Callable[[VariantSpec], LayerTable | None] = _no_table
    validation: Validation | None = None
    comparison: np.ndarray | None = None
    float_tflite: Path | None = None


@dataclasses.dataclass(frozen=True)
class Folder:
    """The variant's folder while it is written (swapped in whole at the end), a scratch
    folder deleted after, and the facts for its record (`conversion.json`) noted as they
    are found: a step that fails later keeps what the earlier ones found, as a file written
    into the folder is kept."""

    path: Path
    scratch: Path
    facts: dict[str, Any] = dataclasses.field(default_factory=dict)

    def __truediv__(self, name: str) -> Path:
        return self.path / name

    def note(self, **facts: Any) -> None:
        """Record facts for `conversion.json` (`pipeline.artifacts`)."""
        self.facts.update(facts)


@dataclasses.dataclass(frozen=True)
class AppliedRecipe:
    """What the LiteRT Quantizer was given and applied: each layer's asked precision is
    then compared with what the model holds (`precision.csv`)."""

    quantized: Path  # the float .tflite it quantized
    recipe: list[dict[str, Any]]  # the recipe it applied (JSON-ready)


@dataclasses.dataclass(frozen=True)
class Produced:
    """What a producer made: the model's bytes, and the quantizer's recipe if it ran one."""

    flatbuffer: bytes
    recipe: AppliedRecipe | None = None


# Each kind of variant (`pipeline.variants.KINDS`) -> its producer; filled as the producer
# classes are defined (`pipeline.produce.quantize` imports every producer module).
PRODUCERS: dict[type[VariantSpec], type[Producer]] = {}


class Producer:
    """How one kind of variant (`KIND`) is made: `produce` returns its flatbuffer."""

    KIND: ClassVar[type[VariantSpec]]

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        PRODUCERS[cls.KIND] = cls

    def produce(self, spec: Any, inputs: Inputs, out: Folder) -> Produced:
        """Make the variant `spec` from `inputs`; write its own files into `out` and note
        its facts there. Whatever it raises fails this variant alone."""
        raise NotImplementedError


def producer_for(spec: VariantSpec) -> Producer:
    """The producer of `spec`'s kind, by the kind's class (the config may be a recording
    view, whose sections are subclasses of the config's classes: `pipeline.reads`).

    Raises:
        LookupError: if no producer is registered for the kind.
    """
    kind = next((k for k in type(spec).__mro__ if k in PRODUCERS), None)
    if kind is None:
        raise LookupError(f"no producer for the kind {type(spec).__name__} (backend "
                          f"{spec.backend!r}): add one in pipeline/produce/ and import it in "
                          "pipeline/produce/quantize.py")
    return PRODUCERS[kind]()
