"""Where datasets come from: load a source and split it (seeded, stratified) into a
`pipeline.data.Dataset`.

Sources (`data.name`):
- `digits`: scikit-learn's bundled 8x8 digits, the default; no download.
- `image_folder`: one subfolder per class of PNG/JPEG images under `data.path`, resized to
  `data.image_size` and `data.channels`; class labels are the sorted folder names.
- `npz`: a `.npz` file at `data.path` with `x_train`, `y_train`, `x_test`, `y_test`
  (loaded without pickle); its test split is kept, validation comes from its training split.
- `mnist`, `fashion_mnist`, `cifar10`: Keras' datasets, downloaded on first use (needs the
  internet; refused with a clear message offline).

Arrays: images `(n, height, width, channels)` float32 in [0, 1]; labels `(n,)` int64.
Bad input is refused with a `ValueError` or `FileNotFoundError` naming the file and the
problem, before anything is written.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from pipeline.data import Dataset

from pipeline.config import SPLIT_SOURCES

if TYPE_CHECKING:
    from pipeline.config import DataConfig


def load_digits() -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's digits as `(1797, 8, 8, 1)` float32 in [0, 1] and int64 labels."""
    from sklearn.datasets import load_digits as sk_load_digits

    bunch = sk_load_digits()
    x = (bunch.images / 16.0).astype(np.float32)[..., np.newaxis]  # pixel values are 0..16
    return x, bunch.target.astype(np.int64)


IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")


def _to_unit_float(x: np.ndarray) -> np.ndarray:
    """Integer pixels to [0, 1]; float pixels as they are; a channel axis added if missing."""
    x = np.asarray(x)
    if np.issubdtype(x.dtype, np.integer):  # 8-bit pixels (16-bit for uint16 images)
        x = x.astype(np.float32) / (65535.0 if x.dtype == np.uint16 else 255.0)
    x = x.astype(np.float32)
    return x[..., np.newaxis] if x.ndim == 3 else x


def load_image_folder(cfg: DataConfig) -> tuple[np.ndarray, np.ndarray]:
    """Images from `cfg.path/<class>/*.png|jpg`, resized, as float32 in [0, 1].

    Raises:
        FileNotFoundError: if the folder does not exist.
        ValueError: if it has no class folders, a class folder has no images, or an image
            cannot be read.
    """
    from PIL import Image, UnidentifiedImageError

    root = _path(cfg)
    if not root.is_dir():
        raise FileNotFoundError(f"data.path: image folder {root} does not exist")
    classes = sorted(p for p in root.iterdir() if p.is_dir())
    if not classes:
        raise ValueError(f"data.path: {root} has no class folders (expected one subfolder "
                         "of images per class)")
    mode = "L" if cfg.channels == 1 else "RGB"
    height, width = cfg.image_size
    images, labels = [], []
    for label, folder in enumerate(classes):
        files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if not files:
            raise ValueError(f"data.path: class folder {folder} has no PNG or JPEG images")
        for file in files:
            try:
                with Image.open(file) as img:
                    img = img.convert(mode).resize((width, height), Image.BILINEAR)
                    images.append(np.asarray(img, dtype=np.uint8))
            except (UnidentifiedImageError, OSError) as exc:
                raise ValueError(f"data.path: cannot read image {file}: {exc}") from None
            labels.append(label)
    return _to_unit_float(np.stack(images)), np.array(labels, dtype=np.int64)


def load_npz(cfg: DataConfig, seed: int) -> Dataset:
    """Splits from a `.npz` file; validation is carved from its training split.

    Raises:
        FileNotFoundError: if the file does not exist.
        ValueError: if it is not a readable `.npz`, keys are missing, lengths or shapes
            disagree, or labels are out of range.
    """
    path = _path(cfg)
    if not path.is_file():
        raise FileNotFoundError(f"data.path: {path} does not exist")
    try:
        with np.load(path, allow_pickle=False) as f:
            arrays = {k: f[k] for k in f.files}
    except (ValueError, OSError) as exc:
        raise ValueError(f"data.path: {path} is not a readable .npz file "
                         f"(object arrays are refused: no pickle): {exc}") from None
    missing = [k for k in ("x_train", "y_train", "x_test", "y_test") if k not in arrays]
    if missing:
        raise ValueError(f"data.path: {path} lacks {', '.join(missing)}; it needs x_train, "
                         f"y_train, x_test, y_test (found: {', '.join(sorted(arrays))})")
    for split in ("train", "test"):
        x, y = arrays[f"x_{split}"], arrays[f"y_{split}"]
        if len(x) != len(y):
            raise ValueError(f"data.path: {path}: x_{split} has {len(x)} samples but "
                             f"y_{split} has {len(y)} labels")
    if arrays["x_train"].shape[1:] != arrays["x_test"].shape[1:]:
        raise ValueError(f"data.path: {path}: x_train samples are "
                         f"{arrays['x_train'].shape[1:]}, x_test samples "
                         f"{arrays['x_test'].shape[1:]}")
    y_train = _labels(arrays["y_train"], path, "y_train")
    y_test = _labels(arrays["y_test"], path, "y_test")
    num_classes = int(y_train.max()) + 1
    if y_test.max() >= num_classes:
        raise ValueError(f"data.path: {path}: y_test has label {int(y_test.max())}, which "
                         f"y_train never uses (its labels are 0..{num_classes - 1})")
    return _with_validation(_to_unit_float(arrays["x_train"]), y_train,
                            _to_unit_float(arrays["x_test"]), y_test, cfg.val_fraction,
                            num_classes, seed)


def _labels(y: np.ndarray, path: Path, key: str) -> np.ndarray:
    y = np.asarray(y).reshape(len(y), -1)
    if y.shape[1] != 1 or not np.issubdtype(y.dtype, np.integer):
        raise ValueError(f"data.path: {path}: {key} must hold one integer class per sample")
    y = y[:, 0].astype(np.int64)
    if len(y) and y.min() < 0:
        raise ValueError(f"data.path: {path}: {key} has negative label {int(y.min())}")
    return y


def _path(cfg: DataConfig) -> Path:
    if not cfg.path:
        raise ValueError(f"data.path is required for data.name={cfg.name}")
    return Path(cfg.path).expanduser()


def _split(x: np.ndarray, y: np.ndarray, share: float, seed: int
           ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Seeded split, stratified when every class has enough samples for it."""
    from sklearn.model_selection import train_test_split

    try:
        return train_test_split(x, y, test_size=share, stratify=y, random_state=seed)
    except ValueError:  # a class too small to appear on both sides: plain random split
        return train_test_split(x, y, test_size=share, random_state=seed)


def _with_validation(x: np.ndarray, y: np.ndarray, x_test: np.ndarray, y_test: np.ndarray,
                     val_fraction: float, num_classes: int, seed: int) -> Dataset:
    x_train, x_val, y_train, y_val = _split(x, y, val_fraction, seed)
    return Dataset(x_train, y_train, x_val, y_val, x_test, y_test, num_classes)


def load_keras(name: str, val_fraction: float, seed: int) -> Dataset:
    """One of Keras' datasets (downloaded on first use into ~/.keras/datasets).

    Raises:
        ValueError: saying so when the download fails (offline).
    """
    from pipeline.build.tfcompat import import_tf

    _, keras = import_tf()
    try:
        (x_train, y_train), (x_test, y_test) = getattr(keras.datasets, name).load_data()
    except Exception as exc:  # urllib, SSL, HTTP: all mean "could not download"
        raise ValueError(f"data.name={name}: Keras could not download the dataset "
                         f"({type(exc).__name__}: {exc}); it needs the internet on first "
                         "use. Offline, use data.name=digits, npz or image_folder") from None
    return _with_validation(_to_unit_float(x_train), np.asarray(y_train).reshape(-1),
                            _to_unit_float(x_test), np.asarray(y_test).reshape(-1),
                            val_fraction, int(np.max(y_train)) + 1, seed)


LOADERS = {"digits": load_digits}


def prepare(cfg: DataConfig, seed: int) -> Dataset:
    """Load the configured dataset and split it, stratified and seeded.

    `cfg.name` is one of `DATA_SOURCES` (`pipeline.config.DataConfig` checks it).
    """
    if cfg.name == "npz":
        return load_npz(cfg, seed)
    if cfg.name in SPLIT_SOURCES:
        return load_keras(cfg.name, cfg.val_fraction, seed)
    x, y = load_image_folder(cfg) if cfg.name == "image_folder" else LOADERS[cfg.name]()
    x_rest, x_test, y_rest, y_test = _split(x, y, cfg.test_fraction, seed)
    val_share = cfg.val_fraction / (1.0 - cfg.test_fraction)  # of what is left after test
    x_train, x_val, y_train, y_val = _split(x_rest, y_rest, val_share, seed)
    return Dataset(x_train, y_train, x_val, y_val, x_test, y_test,
                   num_classes=int(y.max()) + 1)
