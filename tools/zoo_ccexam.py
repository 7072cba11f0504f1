"""How `pipeline/zoo/ccexam_mnist.onnx` was made (needs the torch extra: make venv
EXTRAS=torch): ccexam 1.0.0's trained MNISTNet exported by torch.onnx.export, opset 13, with
a free batch size, the way users export their models.

    .venv/bin/python tools/zoo_ccexam.py [out.onnx]
"""

from __future__ import annotations

import sys
import warnings
from pathlib import Path

import torch

from pipeline.zoo import ONNX_FILE, ccexam_mnist

OPSET = 13


def main(argv: list[str]) -> None:
    out = Path(argv[0]) if argv else Path(__file__).resolve().parents[1] / "pipeline" / "zoo" \
        / ONNX_FILE
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation, the tracer's
        torch.onnx.export(ccexam_mnist(), (torch.zeros(1, 1, 28, 28),), str(out), dynamo=False,
                          opset_version=OPSET, input_names=["input"], output_names=["logits"],
                          dynamic_axes={"input": {0: "N"}, "logits": {0: "N"}})
    print(f"wrote {out} ({out.stat().st_size:,} bytes)")


if __name__ == "__main__":
    main(sys.argv[1:])
