"""The prepared dataset: seeded, stratified, disjoint splits, the store (source dtype on disk,
read lazily), the calibration draw, and atomic writes."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest

from pipeline import data, sources
from pipeline.config import Config
from pipeline.io import atomic_path, read_json, write_json


def test_split_is_stratified_disjoint_and_seeded(tiny_cfg: Config, dataset: data.Dataset,
                                                 tmp_path: Path) -> None:
    n = len(dataset.x_train) + len(dataset.x_val) + len(dataset.x_test)
    assert n == 1797  # every digit, once
    assert len(dataset.x_test) == pytest.approx(0.2 * n, abs=1)
    assert len(dataset.x_val) == pytest.approx(0.1 * n, abs=2)
    assert dataset.input_shape == (8, 8, 1)
    x_train = np.asarray(dataset.x_train)
    assert x_train.dtype == np.float32 and 0 <= x_train.min() < x_train.max() <= 1.0
    # Stratified: every class's share of the test split is within 1 sample of its overall share.
    for c in range(10):
        share = np.mean(np.concatenate([dataset.y_train, dataset.y_val, dataset.y_test]) == c)
        assert abs(np.sum(dataset.y_test == c) - share * len(dataset.y_test)) <= 1
    # Disjoint: no test image also appears in training.
    train_rows = {x.tobytes() for x in x_train}
    overlap = sum(x.tobytes() in train_rows for x in np.asarray(dataset.x_test))
    assert overlap <= 5  # digits has a handful of duplicate images, nothing more
    other = sources.prepare(tiny_cfg.data, tiny_cfg.seed + 1, tmp_path / "other")
    assert not np.array_equal(other.y_test, dataset.y_test)


def test_split_indices_partition_every_sample() -> None:
    y = np.repeat(np.arange(5), 40)
    idx = sources.split_indices(y, 0.2, 0.1, seed=0)
    every = np.concatenate([idx["train"], idx["val"], idx["test"]])
    assert sorted(every) == list(range(len(y)))  # disjoint by index, nothing lost
    assert (len(idx["test"]), len(idx["val"])) == (40, 20)


def test_the_store_is_stable_in_the_source_dtype_and_scaled_when_read(
        tiny_cfg: Config, dataset: data.Dataset, tmp_path: Path) -> None:
    from sklearn.datasets import load_digits

    again = sources.prepare(tiny_cfg.data, tiny_cfg.seed, tmp_path / "again")
    first = dataset.x_train.path.parent
    for name in sorted(p.name for p in first.iterdir()):  # byte for byte: DVC's hash holds
        assert (first / name).read_bytes() == (tmp_path / "again" / name).read_bytes(), name
    raw = np.load(first / "x_train.npy", mmap_mode="r")
    assert raw.dtype == np.uint8 and raw.max() == 16  # the digits' own 0..16, 1 byte each
    assert (first / "x_train.npy").stat().st_size < raw.size + 200
    # Read back exactly as the float computation the lab has always used.
    images = load_digits().images
    expected = (images / 16.0).astype(np.float32)[..., np.newaxis]
    rows = {x.tobytes() for x in expected}
    assert all(x.tobytes() in rows for x in again.x_test[:50])
    np.testing.assert_array_equal(again.x_test[:], np.asarray(dataset.x_test))


@pytest.mark.parametrize("key", [slice(3, 9), slice(None, None, 5), -1, 7, [5, 1, 5],
                                 np.array([True] * 3 + [False] * 357), slice(355, 400)])
def test_stored_images_index_like_arrays(dataset: data.Dataset, key: object) -> None:
    whole = np.asarray(dataset.x_test)
    assert isinstance(dataset.x_test, data.Images) and len(dataset.x_test) == len(whole)
    np.testing.assert_array_equal(dataset.x_test[key], whole[key])
    with pytest.raises(IndexError):
        dataset.x_test[len(whole)]


def test_calibration_and_test_samples_are_disjoint_by_index(dataset: data.Dataset,
                                                            tiny_cfg: Config) -> None:
    origins = data.origins(dataset.x_train.path.parent)
    calibration = data.calibration_indices(len(dataset.x_train),
                                           tiny_cfg.quantization.calibration_samples,
                                           tiny_cfg.seed)
    drawn = set(origins["train"][calibration])  # positions in the source (sklearn's digits)
    assert len(drawn) == tiny_cfg.quantization.calibration_samples
    assert not drawn & set(origins["test"]) and not drawn & set(origins["val"])
    assert sorted(np.concatenate(list(origins.values()))) == list(range(1797))


def test_calibration_comes_from_the_training_split(dataset: data.Dataset) -> None:
    calib = data.calibration_samples(dataset, 50, seed=3)
    train_rows = {x.tobytes() for x in np.asarray(dataset.x_train)}
    assert len(calib) == 50 and all(x.tobytes() in train_rows for x in calib)
    np.testing.assert_array_equal(calib, data.calibration_samples(dataset, 50, seed=3))
    for bad in (0, len(dataset.x_train) + 1):
        with pytest.raises(ValueError, match="calibration_samples must be between 1 and"):
            data.calibration_samples(dataset, bad, seed=3)


def test_dataset_round_trips_through_the_store(dataset: data.Dataset, tmp_path: Path) -> None:
    path = data.save(dataset, tmp_path / "d")
    loaded = data.load(path)
    np.testing.assert_array_equal(loaded.x_test[:], dataset.x_test[:])
    np.testing.assert_array_equal(loaded.y_val, dataset.y_val)
    assert loaded.num_classes == 10 and loaded.input_shape == (8, 8, 1)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d"]
    assert sorted(p.name for p in path.iterdir()) == sorted(
        [data.META] + [f"{a}_{s}.npy" for a in "xyi" for s in data.SPLITS])
    with pytest.raises(FileNotFoundError, match="run the prepare stage"):
        data.load(tmp_path / "missing")


def test_unknown_dataset_is_refused(tiny_cfg: Config) -> None:
    with pytest.raises(ValueError, match="data.name: unknown value 'imagenet'; valid: digits"):
        dataclasses.replace(tiny_cfg.data, name="imagenet")


def test_atomic_write_keeps_the_old_file_on_failure(tmp_path: Path) -> None:
    target = write_json(tmp_path / "out.json", {"v": 1})
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("killed mid-write")
    assert read_json(target) == {"v": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["out.json"]


def test_a_failed_write_leaves_no_folder_it_created(tmp_path: Path) -> None:
    from pipeline.io import atomic_dir

    with pytest.raises(ValueError), atomic_dir(tmp_path / "data" / "prepared") as tmp:
        (tmp / "x.npy").write_bytes(b"half")
        raise ValueError("unreadable image")
    assert list(tmp_path.iterdir()) == []  # not even data/
