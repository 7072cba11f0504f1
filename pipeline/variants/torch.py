"""litert-torch's own kind (`backend: litert_torch`): PyTorch 2 Export (PT2E) quantization of
a PyTorch model (`model=torch`), then litert-torch's conversion of the quantized program.
Made by `pipeline.produce.by_torch` from the program the intake stage exported; for a model
that did not come from PyTorch, the variant fails with that reason."""

from __future__ import annotations

import dataclasses
from typing import ClassVar

from pipeline.schema import one_of
from pipeline.variants.base import TORCH_PROGRAM, VariantSpec

PT2E_MODES = ("static", "dynamic")


@dataclasses.dataclass
class TorchVariant(VariantSpec):
    """A PT2E-quantized variant.

    Attributes:
        mode: `static` (int8 weights and activations, activation ranges from the calibration
            samples: litert-torch's symmetric config with histogram observers) or `dynamic`
            (int8 weights, activations quantized at run time).
        per_channel: one weight scale per output channel (else per tensor).
    """

    BACKEND: ClassVar[str] = "litert_torch"

    backend: str = "litert_torch"
    mode: str = "static"
    per_channel: bool = True

    def __post_init__(self) -> None:
        super().__post_init__()
        one_of(f"{self.key}.mode", self.mode, PT2E_MODES)
        self.require_float_source("litert-torch's PT2E quantization")

    @property
    def source_form(self) -> str:
        return TORCH_PROGRAM

    @property
    def calibrated(self) -> bool:
        return self.mode == "static"
