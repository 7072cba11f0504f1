"""The stage functions of pipeline/ on the shrunk config: data, evaluate, benchmark, report."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from pipeline import data, report
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
    again = data.prepare(tiny_cfg.data, tiny_cfg.seed)
    np.testing.assert_array_equal(again.y_test, dataset.y_test)
    other = data.prepare(tiny_cfg.data, tiny_cfg.seed + 1)
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


def test_unknown_dataset_is_refused(tiny_cfg: Config) -> None:
    with pytest.raises(ValueError, match="unknown dataset 'imagenet'; valid: digits"):
        data.prepare(dataclasses.replace(tiny_cfg.data, name="imagenet"), 0)


def test_summary_and_recommendation_on_real_results(stage_results: dict, tiny_cfg: Config,
                                                    tmp_path: Path) -> None:
    evaluations = stage_results["evaluations"]
    rows = report.summarize(tiny_cfg.variants, stage_results["records"], evaluations,
                            stage_results["benchmarks"], "float32")
    assert list(rows) == list(tiny_cfg.variants)
    ref = rows["float32"]
    assert ref["accuracy_drop"] == 0 and ref["agreement"] == 1 and ref["compression_ratio"] == 1
    for name, row in rows.items():
        assert row["status"] == "ok" and set(report.ALL_METRICS) <= set(row), name
        assert row["accuracy_drop"] == pytest.approx(ref["accuracy"] - row["accuracy"])
        assert row["compression_ratio"] == pytest.approx(ref["size_bytes"] / row["size_bytes"])
        assert row["agreement"] == evaluations[name]["agreement"]
        # Every benchmark setting's figures are metrics too, under the setting's name.
        assert row["t2.latency_ms_p50"] == row["settings"]["t2"]["latency_ms_p50"]
        assert row["class_accuracy_3"] == evaluations[name]["per_class_accuracy"][3]
        assert set(report.metrics_of(row)) == set(report.metrics_of(ref))
    rec = report.recommend(rows, max_accuracy_drop=1.0)  # everything fits
    assert rec["smallest"] == min(rows, key=lambda n: rows[n]["size_bytes"])
    assert rec["fastest"] == min(rows, key=lambda n: rows[n]["latency_ms_p50"])
    assert rec["misses"] == {} and rec["failed"] == []
    # A failed variant is reported, never recommended, and kept out of the DVC metrics.
    rows["int16x8"] = {"status": "failed", "error": "ValueError: no kernel\ndetails"}
    rec = report.recommend(rows, max_accuracy_drop=1.0)
    assert rec["failed"] == ["int16x8"] and "int16x8" not in (rec["smallest"], rec["fastest"])
    paths = report.write_report(tmp_path, rows, tiny_cfg.variants, rec, 0.9)
    metrics = read_json(paths["metrics"])
    assert set(metrics) == set(tiny_cfg.variants) - {"int16x8"}
    assert metrics["int8"] == report.metrics_of(rows["int8"])
    md = paths["markdown"].read_text()
    assert f"Smallest within budget: `{rec['smallest']}`" in md
    assert all(f"| `{v}` |" in md for v in tiny_cfg.variants)
    assert "`int16x8` **failed**: ValueError: no kernel" in md
    assert "## Worst-quantized layers" in md and "keeps 1 layer(s) in float" in md
    assert "## Latency per setting" in md and "| t2 p50 |" in md
    assert "## Per-class accuracy" in md
    lines = paths["csv"].read_text().splitlines()
    header = lines[0].split(",")
    assert header[:2] == ["variant", "status"] and header[-1] == "error"
    assert set(report.ALL_METRICS) <= set(header) and "t2.latency_ms_p99" in header
    by_variant = {line.split(",")[0]: line for line in lines[1:]}
    assert by_variant["int16x8"].startswith("int16x8,failed,")
    assert by_variant["int16x8"].endswith(",ValueError: no kernel")
    assert by_variant["uint8_full"].startswith("uint8_full,ok,")


def test_recommendation_reports_misses() -> None:
    rows = {"a": {"accuracy_drop": 0.0, "size_bytes": 100, "latency_ms_p50": 2.0},
            "b": {"accuracy_drop": 0.05, "size_bytes": 10, "latency_ms_p50": 1.0},
            "c": {"accuracy_drop": 0.01, "size_bytes": 50, "latency_ms_p50": 3.0}}
    rec = report.recommend(rows, max_accuracy_drop=0.01)
    assert (rec["smallest"], rec["fastest"]) == ("c", "a")
    assert rec["misses"] == {"b": pytest.approx(0.04)}
    none = report.recommend(rows, max_accuracy_drop=-1)
    assert none["smallest"] is None and set(none["misses"]) == {"a", "b", "c"}


def test_summary_refuses_missing_variant_or_failed_reference(tiny_cfg: Config) -> None:
    with pytest.raises(ValueError, match="no conversion, evaluation or benchmark for variant"):
        report.summarize(tiny_cfg.variants, {}, {}, {}, "float32")
    failed = {v: {"status": "failed", "error": "boom"} for v in tiny_cfg.variants}
    with pytest.raises(ValueError, match="reference variant 'float32' failed.*boom"):
        report.summarize(tiny_cfg.variants, failed, failed, failed, "float32")


def test_atomic_write_keeps_the_old_file_on_failure(tmp_path: Path) -> None:
    target = write_json(tmp_path / "out.json", {"v": 1})
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("killed mid-write")
    assert read_json(target) == {"v": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["out.json"]


def test_runtime_modules_do_not_import_tensorflow(models: dict[str, Path], tmp_path: Path) -> None:
    code = (
        "import sys\n"
        "from pipeline import evaluate, benchmark, litert, report, tracking, data, config\n"
        "import numpy as np\n"
        f"r = litert.Runner({str(models['int8'])!r})\n"
        "r.predict(np.zeros((2, 8, 8, 1), np.float32))\n"
        "assert 'tensorflow' not in sys.modules, 'tensorflow was imported'\n"
        "assert 'tf_keras' not in sys.modules\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=tmp_path)
