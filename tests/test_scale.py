"""Real-size data in bounded memory: the stages that need a few samples (quantize: the
calibration draw; benchmark: one sample) or stream the test split (evaluate) do not read the
whole dataset. Each stage script runs twice, as `dvc repro` runs it, on a small store and on
one with 30 times the samples (about 180 MB more on disk), and its peak RSS (the kernel's
count for that process) must stay nearly the same.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from conftest import ROOT
from pipeline import data
from pipeline.params import render_params
from pipeline.layout import Layout

SHAPE = (32, 32, 3)  # one sample: 3 KiB of 8-bit pixels
SMALL, BIG = 1_000, 30_000  # samples per split (train and test)


def store(path: Path, n: int) -> None:
    """A prepared store with `n` training and `n` test samples of random 8-bit pixels,
    written in chunks (the test itself must not hold it in memory)."""
    rng = np.random.default_rng(0)
    counts = {"train": n, "val": 100, "test": n}
    with data.writer(path, num_classes=10, sample_shape=SHAPE, dtype=np.uint8,
                     divide_by=255.0, source="test", counts=counts) as writers:
        for split, count in counts.items():
            for start in range(0, count, 2000):
                m = min(2000, count - start)
                writers[split].write(rng.integers(0, 256, (m, *SHAPE), dtype=np.uint8))
            writers[split].close(np.arange(count) % 10, np.arange(count))


def peak_rss_mb(cmd: list[str], cwd: Path) -> float:
    """Run `cmd`; return its peak resident set size (MiB) as the kernel counted it."""
    proc = subprocess.Popen(cmd, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            env={**os.environ, "PYTHONPATH": str(ROOT)})
    output = proc.stdout.read().decode(errors="replace") if proc.stdout else ""
    _, status, usage = os.wait4(proc.pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0, output[-3000:]
    return usage.ru_maxrss / 1024


def workspace(root: Path, n: int, raw: dict[str, Any], model_dir: Path) -> Layout:
    lay = Layout(root)
    store(lay.dataset, n)
    shutil.copytree(model_dir, lay.keras("float"))
    (root / "params.yaml").write_text(render_params(raw))
    return lay


@pytest.mark.slow
def test_quantize_evaluate_and_benchmark_read_only_what_they_need(
        tmp_path: Path, tiny_raw: dict[str, Any]) -> None:
    from pipeline.produce import model_store
    from pipeline.tfcompat import import_tf

    _, keras = import_tf(seed=0)
    inputs = keras.Input(SHAPE)
    x = keras.layers.Conv2D(8, 3, strides=2, activation="relu")(inputs)
    outputs = keras.layers.Dense(10, activation="softmax")(keras.layers.Flatten()(x))
    model_dir = model_store.save(keras.Model(inputs, outputs), tmp_path / "model",
                                 {"origin": "test"})
    raw = {**tiny_raw, "quantization": {**tiny_raw["quantization"], "variants": {
        v: tiny_raw["quantization"]["variants"][v] for v in ("float32", "int8")}}}
    peaks: dict[str, dict[int, float]] = {}
    for n in (SMALL, BIG):
        lay = workspace(tmp_path / str(n), n, raw, model_dir)
        stage = lambda *args: [sys.executable, str(ROOT / "stages" / f"{args[0]}.py"),  # noqa
                               *args[1:], "--root", str(lay.root)]
        for name, cmd in (("quantize", stage("quantize", "int8")),
                          ("float32", stage("quantize", "float32")),
                          ("reference_outputs", stage("reference_outputs")),
                          ("evaluate", stage("evaluate", "int8")),
                          ("benchmark", stage("benchmark", "int8"))):
            peaks.setdefault(name, {})[n] = peak_rss_mb(cmd, lay.root)
    on_disk = sum(f.stat().st_size for f in (tmp_path / str(BIG) / "data" / "prepared").iterdir())
    grown = (BIG - SMALL) * 2 * np.prod(SHAPE) / 2**20  # MiB more pixels in the big store
    assert on_disk > grown  # the big store really is bigger than the difference we allow
    report = {k: f"{v[SMALL]:.0f} -> {v[BIG]:.0f} MiB" for k, v in peaks.items()}
    for name in ("quantize", "reference_outputs", "evaluate", "benchmark"):
        # 30x the samples, about 170 MiB more data: a stage that read it all would grow by
        # that much (or by four times that as float32); these grow by a few MiB at most.
        assert peaks[name][BIG] - peaks[name][SMALL] < 0.15 * grown, report
