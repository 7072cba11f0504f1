"""The prepared dataset: seeded, stratified, disjoint splits, the store, the calibration draw,
and atomic writes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from pipeline import data, sources
from pipeline.config import Config
from pipeline.io import atomic_path, read_json, write_json


def test_split_is_stratified_disjoint_and_seeded(tiny_cfg: Config, dataset: data.Dataset) -> None:
    n = len(dataset.x_train) + len(dataset.x_val) + len(dataset.x_test)
    assert n == 1797  # every digit, once
    assert len(dataset.x_test) == pytest.approx(0.2 * n, abs=1)
    assert len(dataset.x_val) == pytest.approx(0.1 * n, abs=2)
    assert dataset.input_shape == (8, 8, 1)
    assert dataset.x_train.dtype == np.float32 and 0 <= dataset.x_train.min() <= 1.0
    # Stratified: every class's share of the test split is within 1 sample of its overall share.
    for c in range(10):
        share = np.mean(np.concatenate([dataset.y_train, dataset.y_val, dataset.y_test]) == c)
        assert abs(np.sum(dataset.y_test == c) - share * len(dataset.y_test)) <= 1
    # Disjoint: no test image also appears in training.
    train_rows = {x.tobytes() for x in dataset.x_train}
    overlap = sum(x.tobytes() in train_rows for x in dataset.x_test)
    assert overlap <= 5  # digits has a handful of duplicate images, nothing more
    again = sources.prepare(tiny_cfg.data, tiny_cfg.seed)
    np.testing.assert_array_equal(again.y_test, dataset.y_test)
    other = sources.prepare(tiny_cfg.data, tiny_cfg.seed + 1)
    assert not np.array_equal(other.y_test, dataset.y_test)


def test_calibration_comes_from_the_training_split(dataset: data.Dataset) -> None:
    calib = data.calibration_samples(dataset, 50, seed=3)
    train_rows = {x.tobytes() for x in dataset.x_train}
    assert len(calib) == 50 and all(x.tobytes() in train_rows for x in calib)
    np.testing.assert_array_equal(calib, data.calibration_samples(dataset, 50, seed=3))
    for bad in (0, len(dataset.x_train) + 1):
        with pytest.raises(ValueError, match="calibration_samples must be between 1 and"):
            data.calibration_samples(dataset, bad, seed=3)


def test_dataset_round_trips_through_npz(dataset: data.Dataset, tmp_path: Path) -> None:
    path = data.save(dataset, tmp_path / "d.npz")
    loaded = data.load(path)
    np.testing.assert_array_equal(loaded.x_test, dataset.x_test)
    assert loaded.num_classes == 10
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d.npz"]
    with pytest.raises(FileNotFoundError, match="run the prepare stage"):
        data.load(tmp_path / "missing.npz")


def test_unknown_dataset_is_refused() -> None:
    from pipeline.config import DataConfig

    with pytest.raises(ValueError, match="data.name: unknown value 'imagenet'; valid: digits"):
        DataConfig(name="imagenet")


def test_atomic_write_keeps_the_old_file_on_failure(tmp_path: Path) -> None:
    target = write_json(tmp_path / "out.json", {"v": 1})
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("killed mid-write")
    assert read_json(target) == {"v": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["out.json"]
