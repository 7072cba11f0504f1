"""The prepared dataset: train / validation / test splits, stored once by the prepare stage
and read by every other stage, and the calibration draw (no TensorFlow).

Arrays: images `(n, height, width, channels)` float32 in [0, 1]; labels `(n,)` int64. Where
the splits come from is `pipeline.sources`.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np

from pipeline.io import atomic_path

SPLITS = ("train", "val", "test")


@dataclasses.dataclass(frozen=True)
class Dataset:
    """Train / validation / test splits of one image classification task."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    num_classes: int

    @property
    def input_shape(self) -> tuple[int, ...]:
        """Shape of one sample, e.g. `(8, 8, 1)`."""
        return tuple(self.x_train.shape[1:])


def save(ds: Dataset, path: str | Path) -> Path:
    """Write the splits to one `.npz` file, atomically."""
    with atomic_path(path, suffix=".npz") as tmp:
        np.savez(tmp, x_train=ds.x_train, y_train=ds.y_train, x_val=ds.x_val, y_val=ds.y_val,
                 x_test=ds.x_test, y_test=ds.y_test, num_classes=np.int64(ds.num_classes))
    return Path(path)


def load(path: str | Path) -> Dataset:
    """Read splits written by `save` (no pickle).

    Raises:
        FileNotFoundError: if the file is missing.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"prepared dataset {path} does not exist; run the prepare stage")
    with np.load(path, allow_pickle=False) as f:
        arrays = {k: f[k] for k in f.files}
    num_classes = int(arrays.pop("num_classes"))
    return Dataset(num_classes=num_classes, **arrays)


def calibration_samples(ds: Dataset, count: int, seed: int) -> np.ndarray:
    """Draw the representative samples for calibration, from the training split only.

    Raises:
        ValueError: if `count` is not between 1 and the size of the training split.
    """
    n = len(ds.x_train)
    if not 1 <= count <= n:
        raise ValueError(f"quantization.calibration_samples must be between 1 and the "
                         f"training split's size ({n}), got {count}")
    order = np.random.default_rng(seed).permutation(n)[:count]
    return ds.x_train[np.sort(order)]
