"""Evaluation and benchmark, held to what they promise: batched equals single-sample,
streaming memory, output error against the reference, and benchmark_model's method."""

from __future__ import annotations

import dataclasses
import os
import tracemalloc
from pathlib import Path

import numpy as np
import pytest

from pipeline import data
from pipeline.measure import benchmark, evaluate, litert
from pipeline.config import Config


@pytest.mark.parametrize("name", ["float32", "int8_full", "uint8_full", "int16x8"])
def test_batched_and_single_sample_give_the_same_predictions(
        name: str, models: dict[str, Path], small_dataset: data.Dataset) -> None:
    x = small_dataset.x_test  # 60 samples: batches of 16 leave a padded remainder
    single = litert.Runner(models[name], batch_size=1)
    batched = litert.Runner(models[name], batch_size=16)
    assert (single.batch_size, batched.batch_size) == (1, 16)
    s, b = single.predict(x), batched.predict(x)
    np.testing.assert_array_equal(s.argmax(axis=1), b.argmax(axis=1))
    np.testing.assert_allclose(s, b, atol=1e-5)
    one = evaluate.evaluate(models[name], x, small_dataset.y_test, batch_size=1)
    many = evaluate.evaluate(models[name], x, small_dataset.y_test, batch_size=16)
    assert (one["batch_size"], many["batch_size"]) == (1, 16)
    for key in ("accuracy", "top_k_accuracy", "per_class_accuracy", "confusion_matrix"):
        assert one[key] == many[key], key


@pytest.mark.parametrize("name", ["float32", "int8_full"])
def test_evaluation_on_every_core_gives_the_single_threaded_results(
        name: str, models: dict[str, Path], dataset: data.Dataset) -> None:
    """Several interpreters scoring separate batches (the default: one per core) give
    exactly what one interpreter gives, on the whole stored test split."""
    x, y = dataset.x_test, dataset.y_test
    reference = litert.Runner(models["float32"], batch_size=32).predict(x)
    one = evaluate.evaluate(models[name], x, y, reference, batch_size=32, workers=1)
    many = evaluate.evaluate(models[name], x, y, reference, batch_size=32, workers=3)
    assert (one["workers"], many["workers"]) == (1, 3)
    for key in one:
        if key not in ("workers", "samples_per_second"):
            assert one[key] == many[key], key
    runner = litert.Runner(models[name], batch_size=32)
    np.testing.assert_array_equal(runner.predict(x, workers=3), runner.predict(x))


def test_every_kernel_path_runs_and_unknown_ones_are_refused(models: dict[str, Path],
                                                           small_dataset: data.Dataset) -> None:
    x = small_dataset.x_test
    scores = {k: litert.Runner(models["float32"], kernels=k).predict(x)
              for k in litert.KERNEL_PATHS}
    for k, s in scores.items():  # float32 computes the same on every path
        np.testing.assert_allclose(s, scores["xnnpack"], atol=1e-4, err_msg=k)
    with pytest.raises(ValueError, match="unknown kernel path 'gpu'; valid: xnnpack"):
        litert.Runner(models["float32"], kernels="gpu")


def test_metrics_agree_with_a_direct_computation(models: dict[str, Path],
                                                 small_dataset: data.Dataset) -> None:
    x, y = small_dataset.x_test, small_dataset.y_test
    ref = litert.Runner(models["float32"]).predict(x)
    out = litert.Runner(models["int8"]).predict(x)
    result = evaluate.evaluate(models["int8"], x, y, ref, batch_size=7, top_k=3)
    pred = out.argmax(axis=1)
    assert result["accuracy"] == pytest.approx(np.mean(pred == y))
    assert result["agreement"] == pytest.approx(np.mean(pred == ref.argmax(axis=1)))
    top3 = np.argsort(-out, axis=1)[:, :3]
    assert result["top_k_accuracy"] == pytest.approx(np.mean((top3 == y[:, None]).any(axis=1)))
    noise = np.sum((out.astype(np.float64) - ref) ** 2)
    assert result["output_sqnr_db"] == pytest.approx(10 * np.log10(np.sum(ref ** 2.0) / noise),
                                                     rel=1e-4)
    assert result["output_mae"] == pytest.approx(np.mean(np.abs(out - ref)), rel=1e-4)
    p, q = np.clip(ref.astype(np.float64), 1e-7, None), np.clip(out.astype(np.float64), 1e-7,
                                                               None)
    p, q = p / p.sum(1, keepdims=True), q / q.sum(1, keepdims=True)
    assert result["output_kl"] == pytest.approx(np.mean(np.sum(p * np.log(p / q), 1)),
                                                rel=1e-6)
    assert result["output_kl"] > 0
    matrix = np.array(result["confusion_matrix"])
    assert matrix.sum() == len(y) and np.trace(matrix) == np.sum(pred == y)
    for c, acc in enumerate(result["per_class_accuracy"]):
        assert acc == pytest.approx(matrix[c, c] / matrix[c].sum())
    # Against itself: identical outputs, so the SQNR cap and no error.
    same = evaluate.evaluate(models["float32"], x, y, ref)
    assert same["output_sqnr_db"] == evaluate.SQNR_CAP_DB and same["output_mae"] == 0
    assert same["output_kl"] == 0
    assert same["agreement"] == 1.0
    everything = evaluate.evaluate(models["int8"], x, y, top_k=10)
    assert everything["top_k_accuracy"] == 1.0 and "agreement" not in everything
    assert evaluate.evaluate(models["int8"], x, y, top_k=1)["top_k_accuracy"] == \
        result["accuracy"]


def test_evaluation_streams_memory_does_not_grow_with_samples(
        models: dict[str, Path], small_dataset: data.Dataset, tmp_path: Path) -> None:
    def peak_bytes(n: int) -> int:
        reps = -(-n // len(small_dataset.x_test))
        x_file, y_file = tmp_path / f"x{n}.npy", tmp_path / f"y{n}.npy"
        x = np.lib.format.open_memmap(x_file, mode="w+", dtype=np.float32,
                                      shape=(n, *small_dataset.input_shape))
        x[:] = np.tile(small_dataset.x_test, (reps, 1, 1, 1))[:n]
        x.flush()
        np.save(y_file, np.tile(small_dataset.y_test, reps)[:n])
        del x
        x, y = np.load(x_file, mmap_mode="r"), np.load(y_file, mmap_mode="r")
        tracemalloc.start()
        evaluate.evaluate(models["int8_full"], x, y, batch_size=64)
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        return peak

    small, large = peak_bytes(5_000), peak_bytes(50_000)
    # Ten times the samples: the images alone would add 11.5 MB if they were all read.
    assert large < small * 1.5 + 200_000, (small, large)


def test_evaluation_refuses_mismatched_inputs(models: dict[str, Path],
                                              small_dataset: data.Dataset) -> None:
    x, y = small_dataset.x_test, small_dataset.y_test
    with pytest.raises(ValueError, match="60 samples, 59 labels"):
        evaluate.evaluate(models["int8"], x, y[:-1])
    with pytest.raises(ValueError, match=r"takes samples of shape \(8, 8, 1\), got \(4, 4, 1\)"):
        evaluate.evaluate(models["int8"], x[:, :4, :4], y)


def test_reference_outputs_are_written_batch_by_batch(models: dict[str, Path],
                                                      small_dataset: data.Dataset,
                                                      tmp_path: Path) -> None:
    out = evaluate.reference_outputs(models["float32"], small_dataset.x_test,
                                     tmp_path / "ref.npy", batch_size=16)
    np.testing.assert_allclose(np.load(out), litert.Runner(models["float32"]).predict(
        small_dataset.x_test), atol=1e-5)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ref.npy"]


def test_benchmark_meets_both_minimums_in_every_setting(models: dict[str, Path],
                                                        tiny_cfg: Config,
                                                        small_dataset: data.Dataset) -> None:
    cfg = dataclasses.replace(tiny_cfg.benchmark, min_runs=30, min_seconds=0.2,
                              num_threads=(1, 2), xnnpack=(True, False))
    result = benchmark.benchmark(models["int8"], small_dataset.x_test[:1], cfg,
                                 reference_path=models["float32"], progress=False)
    assert list(result["settings"]) == ["t1", "t1_noxnnpack", "t2", "t2_noxnnpack"]
    assert result["headline"] == "t1" and result["latency_ms_p50"] == \
        result["settings"]["t1"]["latency_ms_p50"]
    for key, fig in result["settings"].items():
        assert fig["runs"] >= 30, key
        assert fig["runs"] * fig["latency_ms_mean"] / 1e3 <= 0.2 + 1.0
        stats = [fig[k] for k in ("latency_ms_min", "latency_ms_p50", "latency_ms_p90",
                                  "latency_ms_p99", "latency_ms_max")]
        assert stats == sorted(stats) and stats[0] > 0, key
        assert fig["latency_cv"] == pytest.approx(fig["latency_ms_std"] / fig["latency_ms_mean"])
        assert fig["init_ms"] > 0 and fig["first_inference_ms"] > 0 and fig["warmup_ms_mean"] > 0
        assert fig["speedup_vs_float32"] > 0
        assert fig["latency_ms_p50_ci_low"] <= fig["latency_ms_p50"] <= fig["latency_ms_p50_ci_high"]
    assert result["settings"]["t2"]["num_threads"] == 2
    assert result["settings"]["t1_noxnnpack"]["xnnpack"] is False
    assert result["machine"]["cores"] == str(os.cpu_count()) and result["machine"]["cpu"]
    assert result["memory"] == {}  # memory off in the tiny config
    # Few runs but a long minimum time: the time bound wins.
    slow = dataclasses.replace(cfg, min_runs=1, min_seconds=0.3, num_threads=(1,),
                               xnnpack=(True,))
    timed = benchmark.benchmark(models["float32"], small_dataset.x_test[:1], slow,
                                progress=False)
    assert timed["runs"] * timed["latency_ms_mean"] / 1e3 >= 0.3 * 0.5  # timing overhead aside
    assert timed["speedup_vs_float32"] == 1.0  # no reference: it is the reference


def test_interleaved_speedup_sees_a_real_difference(models: dict[str, Path], tiny_cfg: Config,
                                                    small_dataset: data.Dataset) -> None:
    cfg = dataclasses.replace(tiny_cfg.benchmark, min_runs=20, min_seconds=0.2)
    sample = small_dataset.x_test[:1]
    # 16x8 runs on reference kernels: several times slower than float32 with XNNPACK.
    slower = benchmark.interleaved_speedup(models["float32"], models["int16x8"], sample, cfg,
                                           1, True)
    same = benchmark.interleaved_speedup(models["float32"], models["float32"], sample, cfg,
                                         1, True)
    assert slower["speedup_ci_high"] < 0.8  # measurably slower: the interval excludes 1
    assert slower["speedup_ci_low"] <= slower["speedup_vs_float32"] <= slower["speedup_ci_high"]
    # A model against itself is about 1.0; the bounds are wide because the machines are
    # shared (a CI run with two pipelines beside it measured 0.39).
    assert 0.25 < same["speedup_vs_float32"] < 4.0
    assert same["speedup_ci_low"] < same["speedup_ci_high"]


def big_model(path: Path, units: int) -> Path:
    """A float32 model whose one dense layer holds `64 * units` weights (4 bytes each)."""
    from pipeline.tfcompat import import_tf

    tf, keras = import_tf()
    model = keras.Sequential([keras.Input((8, 8, 1)), keras.layers.Flatten(),
                              keras.layers.Dense(units), keras.layers.Dense(10)])
    path.write_bytes(tf.lite.TFLiteConverter.from_keras_model(model).convert())
    return path


def test_peak_memory_grows_with_the_model_and_is_measured_in_another_process(
        models: dict[str, Path], tmp_path: Path) -> None:
    small = benchmark.peak_rss(models["float32"])
    big = benchmark.peak_rss(big_model(tmp_path / "big.tflite", 80_000))  # 20 MB of weights
    assert small["pid"] != os.getpid() and big["pid"] != os.getpid() != small["pid"]
    # The model's share of the peak: about its 20 MB of weights more for the big one.
    assert big["peak_rss_delta_mb"] - small["peak_rss_delta_mb"] > 15, (small, big)
    assert big["peak_rss_mb"] > small["peak_rss_mb"] + 15
    with pytest.raises(RuntimeError, match="memory measurement of .* failed"):
        benchmark.peak_rss(Path("/nonexistent/model.tflite"))
