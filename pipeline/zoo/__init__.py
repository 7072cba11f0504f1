"""Trained models nobody here wrote, to try the lab's intakes on (`docs/models.md`):

- `ccexam_mnist.onnx`: `MNISTNet` of the `ccexam` package 1.0.0 (MIT, `LICENSE.ccexam`; two
  3x3 convolutions with 32 and 64 filters and max-pooling, a 128-unit dense layer; NCHW
  1x28x28 inputs normalised with mean 0.1307 and std 0.3081) with the package's trained
  MNIST weights, exported by `torch.onnx.export` (opset 13, free batch size) with
  `tools/zoo_ccexam.py`. 0.9905 on the 10,000 MNIST test images in PyTorch.
- `ccexam_mnist()`: the same PyTorch module with its weights, for `model=torch
  model.path=pipeline.zoo:ccexam_mnist` (needs the torch extra: `ccexam` comes with it).
"""

from __future__ import annotations

from typing import Any

ONNX_FILE = "ccexam_mnist.onnx"


def ccexam_mnist() -> Any:
    """ccexam's `MNISTNet` with its trained MNIST weights (`ccexam/weights/mnist.pth`)."""
    import importlib.resources

    import torch
    from ccexam.models import MNISTNet

    model = MNISTNet(input_size=28)
    weights = importlib.resources.files("ccexam") / "weights" / "mnist.pth"
    with importlib.resources.as_file(weights) as path:
        model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
    return model.eval()
