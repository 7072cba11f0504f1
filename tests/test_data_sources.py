"""Bring your own data: an image folder and a .npz file, made here, loaded for real; bad
input refused with a message naming the file and the problem."""

from __future__ import annotations

import dataclasses
import functools
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from pipeline import sources
from pipeline.config import DataConfig
from pipeline.params import compose

RNG = np.random.default_rng(0)


@functools.cache
def conf_data(group: str) -> dict[str, Any]:
    return compose([f"data={group}"])["data"]


def data_cfg(group: str, **kw: object) -> DataConfig:
    """conf/data/<group>.yaml (every key set there), with `kw` changed."""
    return DataConfig(**{**conf_data(group), **kw})


def image_folder(root: Path, per_class: int = 8) -> Path:
    for c, name in enumerate(("cat", "dog")):
        folder = root / name
        folder.mkdir(parents=True)
        for i in range(per_class):
            pixels = (RNG.random((12, 10, 3)) * 255).astype(np.uint8)
            pixels[..., 0] = 40 + 150 * c  # the classes differ in colour
            suffix = ".png" if i % 2 else ".jpg"
            Image.fromarray(pixels).save(folder / f"{i}{suffix}")
    return root


def folder_cfg(path: Path, **kw: object) -> DataConfig:
    return data_cfg("image_folder", path=str(path), image_size=(8, 6), channels=3,
                    test_fraction=0.25, val_fraction=0.25, **kw)


def test_image_folder_loads_resizes_and_splits(tmp_path: Path) -> None:
    ds = sources.prepare(folder_cfg(image_folder(tmp_path / "imgs")), 1, tmp_path / "out")
    assert ds.input_shape == (8, 6, 3) and ds.num_classes == 2
    assert len(ds.x_train) + len(ds.x_val) + len(ds.x_test) == 16
    x_train = np.asarray(ds.x_train)
    assert x_train.dtype == np.float32 and 0.0 <= x_train.min() <= x_train.max() <= 1
    assert np.load(tmp_path / "out" / "x_train.npy").dtype == np.uint8  # 8-bit on disk
    assert set(np.unique(ds.y_test)) == {0, 1}  # stratified: both classes tested
    # Label 1 ("dog") was drawn redder: the loader kept the classes apart.
    red = lambda x, y, c: x[y == c][..., 0].mean()  # noqa: E731
    assert red(x_train, ds.y_train, 1) > red(x_train, ds.y_train, 0) + 0.3
    grey = sources.prepare(dataclasses.replace(folder_cfg(tmp_path / "imgs"), channels=1), 1,
                           tmp_path / "grey")
    assert grey.input_shape == (8, 6, 1)


def test_image_folder_bad_input(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="image folder .*missing does not exist"):
        sources.prepare(folder_cfg(tmp_path / "missing"), 0, tmp_path / "out")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="has no class folders"):
        sources.prepare(folder_cfg(tmp_path / "empty"), 0, tmp_path / "out")
    root = image_folder(tmp_path / "imgs")
    (root / "bird").mkdir()
    (root / "bird" / "notes.txt").write_text("no images here")
    with pytest.raises(ValueError, match="class folder .*bird has no PNG or JPEG images"):
        sources.prepare(folder_cfg(root), 0, tmp_path / "out")
    (root / "bird" / "broken.png").write_bytes(b"not a png")
    with pytest.raises(ValueError, match="cannot read image .*broken.png"):
        sources.prepare(folder_cfg(root), 0, tmp_path / "out")
    assert not (tmp_path / "out").exists()  # found while streaming: nothing is left
    with pytest.raises(ValueError, match="data.path is required"):
        sources.prepare(data_cfg("image_folder", path=None), 0, tmp_path / "out")


def npz_file(path: Path, **arrays: np.ndarray) -> Path:
    np.savez(path, **arrays)
    return path


def good_arrays() -> dict[str, np.ndarray]:
    return {"x_train": RNG.integers(0, 256, (40, 5, 5), dtype=np.uint8),
            "y_train": np.arange(40) % 4, "x_test": RNG.integers(0, 256, (12, 5, 5),
                                                               dtype=np.uint8),
            "y_test": np.arange(12) % 4}


def test_npz_keeps_its_test_split(tmp_path: Path) -> None:
    arrays = good_arrays()
    path = npz_file(tmp_path / "d.npz", **arrays)
    ds = sources.prepare(data_cfg("npz", path=str(path), val_fraction=0.25), 3,
                         tmp_path / "out")
    np.testing.assert_array_equal(ds.y_test, arrays["y_test"])
    np.testing.assert_allclose(ds.x_test[:][..., 0], arrays["x_test"] / 255.0, rtol=1e-6)
    assert (len(ds.x_train), len(ds.x_val)) == (30, 10) and ds.num_classes == 4
    assert ds.input_shape == (5, 5, 1)


@pytest.mark.parametrize(("change", "message"), [
    ({"y_test": None}, "lacks y_test; it needs x_train, y_train, x_test, y_test"),
    ({"y_train": np.arange(39) % 4}, "x_train has 40 samples but y_train has 39 labels"),
    ({"y_train": np.r_[-1, np.arange(39) % 4]}, "y_train has negative label -1"),
    ({"y_test": np.r_[7, np.arange(11) % 4]}, "y_test has label 7, which y_train never uses"),
    ({"x_test": np.zeros((12, 6, 5))}, "x_train samples are \\(5, 5\\), x_test samples"),
    ({"y_train": np.array([{"a": 1}] * 40, dtype=object)}, "not a readable .npz file"),
])
def test_npz_bad_input(tmp_path: Path, change: dict, message: str) -> None:
    arrays = {**good_arrays(), **change}
    arrays = {k: v for k, v in arrays.items() if v is not None}
    path = npz_file(tmp_path / "bad.npz", **arrays)
    with pytest.raises(ValueError, match=message):
        sources.prepare(data_cfg("npz", path=str(path)), 0, tmp_path / "out")


def test_npz_missing_file_and_unknown_source(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="missing.npz does not exist"):
        sources.prepare(data_cfg("npz", path=str(tmp_path / "missing.npz")), 0,
                        tmp_path / "out")
    with pytest.raises(ValueError, match="data.name: unknown value 'imagenet'; valid: digits, "
                                         "image_folder, npz, mnist"):
        data_cfg("npz", name="imagenet")


def test_keras_dataset_needs_the_internet_and_says_so() -> None:
    try:  # this machine and CI have no internet beyond package registries
        (x_train, _), y_train, _, _ = sources.load_keras("mnist")
    except ValueError as exc:
        assert "Keras could not download the dataset" in str(exc)
        assert "Offline, use data.name=mnist (packaged), digits, npz or image_folder" in str(exc)
    else:  # online: the real dataset
        assert x_train.shape[1:] == (28, 28, 1) and int(y_train.max()) == 9


def test_mnist_is_read_offline_from_the_pinned_package(tmp_path: Path) -> None:
    """The default data: the real MNIST (its published class counts), its own 10,000 test
    images kept, validation carved from its 60,000 training images, pixels in [0, 1]."""
    ds = sources.prepare(data_cfg("mnist", val_fraction=0.1), 0, tmp_path / "out")
    assert ds.x_test.shape == (10_000, 28, 28, 1) and ds.x_train.shape[1:] == (28, 28, 1)
    assert (len(ds.x_train), len(ds.x_val)) == (54_000, 6_000)
    assert np.bincount(ds.y_test).tolist() == [980, 1135, 1032, 1010, 982, 892, 958, 1028,
                                               974, 1009]
    assert np.bincount(np.concatenate([ds.y_train, ds.y_val])).tolist() == [
        5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
    first = ds.x_test[:100]
    assert first.dtype == np.float32 and first.min() == 0.0 and first.max() == 1.0
