"""Evaluation and benchmark figures:

- `overhead`: evaluation throughput against the raw interpreter on the pipeline's own
  variants: `pipeline.measure.evaluate.evaluate` (quantization, dequantization, every metric)
  with one interpreter vs a bare set_tensor/invoke/get_tensor loop over the same
  pre-quantized batches, measured interleaved (goal >= 0.80).
- `cores`: evaluation of MobileNetV2 (alpha 0.35, 96x96, random init) with one interpreter
  per core on separate batches (the default) against the single-thread raw loop (goal
  >= 1.6x on 2 cores).
- `stability`: the benchmark stage run twice on the same model (two processes); the
  difference of their p50 latencies, and each run's own spread.

    python -m tools.bench --only overhead cores stability   # after `make repro`
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from pipeline import data
from pipeline.artifacts import tflite_path
from pipeline.params import load_params
from pipeline.io import read_json
from pipeline.layout import Layout
from pipeline.measure import evaluate
from pipeline.measure.litert import Runner, quantize_input

from tools.bench.common import ROOT

LAYOUT = Layout(ROOT)


def raw_throughput(model: Path, x: np.ndarray, batch_size: int) -> float:
    """Samples/s of the bare interpreter loop on pre-quantized, pre-padded batches."""
    runner = Runner(model, batch_size=batch_size)
    b = runner.batch_size
    pad = (-len(x)) % b
    padded = np.concatenate([x, np.zeros((pad, *x.shape[1:]), np.float32)])
    batches = [quantize_input(padded[i:i + b], runner.input) for i in range(0, len(padded), b)]
    interp, inp, out = runner.interpreter, runner.input["index"], runner.output["index"]
    t0 = time.perf_counter()
    for batch in batches:
        interp.set_tensor(inp, batch)
        interp.invoke()
        interp.get_tensor(out)
    return len(x) / (time.perf_counter() - t0)


def eval_throughput(model: Path, ds: data.Dataset, reference: np.ndarray | None,
                    batch_size: int, workers: int = 1) -> float:
    t0 = time.perf_counter()
    evaluate.evaluate(model, ds.x_test, ds.y_test, reference, batch_size, workers=workers)
    return len(ds.y_test) / (time.perf_counter() - t0)


def throughput_ratio(variants: list[str], ds: data.Dataset, batch_size: int,
                     repeats: int) -> None:
    reference = np.load(LAYOUT.reference_outputs)
    # The test split is small: tile it so each timing lasts long enough to be stable.
    tiles = max(1, 20000 // len(ds.y_test))
    big = data.Dataset(ds.x_train, ds.y_train, ds.x_val, ds.y_val,
                       np.tile(np.asarray(ds.x_test), (tiles, 1, 1, 1)),
                       np.tile(ds.y_test, tiles), ds.num_classes)
    big_ref = np.tile(reference, (tiles, 1))
    print(f"evaluation overhead: evaluate (1 interpreter) vs the raw interpreter loop "
          f"({len(big.y_test)} samples, batch {batch_size}, median of {repeats} interleaved "
          "repeats)")
    for name in variants:
        model = tflite_path(LAYOUT.variant(name), name)
        raw, ev = [], []
        for _ in range(repeats):
            raw.append(raw_throughput(model, big.x_test, batch_size))
            ev.append(eval_throughput(model, big, big_ref, batch_size))
        r, e = float(np.median(raw)), float(np.median(ev))
        print(f"   {name:15s} raw {r:10.0f} samples/s   evaluate {e:10.0f} samples/s   "
              f"ratio {e / r:.3f} (target >= 0.80)")


def repeat_stability(variants: list[str]) -> None:
    """The benchmark step in two fresh processes, on outputs linked into a scratch root."""
    print("benchmark stability: the benchmark stage run twice per model (separate processes)")
    for name in variants:
        p50s, cvs = [], []
        for _ in range(2):
            with tempfile.TemporaryDirectory() as tmp:
                scratch = Layout(Path(tmp))
                for src, dst in ((LAYOUT.dataset, scratch.dataset),
                                 (LAYOUT.variants, scratch.variants)):
                    dst.parent.mkdir(parents=True, exist_ok=True)
                    dst.symlink_to(src)
                subprocess.run([sys.executable, str(ROOT / "stages" / "benchmark.py"), name,
                                "--root", tmp, "--params", str(ROOT / "params.yaml")],
                               check=True, capture_output=True)
                result = read_json(scratch.benchmark(name))
            p50s.append(result["latency_ms_p50"])
            cvs.append(result["latency_cv"])
        change = abs(p50s[1] / p50s[0] - 1)
        print(f"   {name:15s} p50 {p50s[0] * 1e3:8.2f} us then {p50s[1] * 1e3:8.2f} us   "
              f"difference {change:6.1%} (target <= 10%)   cv {cvs[0]:.2f}, {cvs[1]:.2f}")


def mobilenet_models(work: Path) -> dict[str, Path]:
    """MobileNetV2 (alpha 0.35, 96x96x3, random init, 10 classes) as float32 and int8."""
    from pipeline.produce import convert
    from pipeline.tfcompat import import_tf
    from pipeline.variants import ConverterVariant

    _, keras = import_tf(seed=0)
    model = keras.applications.MobileNetV2(input_shape=(96, 96, 3), alpha=0.35,
                                           weights=None, classes=10)
    calibration = np.random.default_rng(0).random((32, 96, 96, 3), np.float32)
    paths = {}
    for name, kw in (("float32", {}), ("int8", {"optimizations": ["DEFAULT"],
                                               "representative_data": True})):
        paths[name] = work / f"{name}.tflite"
        paths[name].write_bytes(convert.convert(
            model, ConverterVariant(name=name, source="float", **kw), calibration))
    return paths


def cores(batch_size: int, samples: int = 4096, repeats: int = 3) -> None:
    """Evaluation on every core against the single-thread raw loop, MobileNetV2."""
    import os

    workers = os.cpu_count() or 1
    x = np.random.default_rng(1).random((samples, 96, 96, 3), np.float32)
    ds = data.Dataset(x[:1], np.zeros(1, np.int64), x[:1], np.zeros(1, np.int64), x,
                      np.arange(samples) % 10, 10)
    with tempfile.TemporaryDirectory() as tmp:
        models = mobilenet_models(Path(tmp))
        print(f"evaluation on every core: MobileNetV2 alpha 0.35 96x96, {samples} samples, "
              f"batch {batch_size}, {workers} interpreters vs the 1-thread raw loop "
              f"(median of {repeats} interleaved repeats; goal >= 1.6x on 2 cores)")
        for name, model in models.items():
            raw, par = [], []
            for _ in range(repeats):
                raw.append(raw_throughput(model, x, batch_size))
                par.append(eval_throughput(model, ds, None, batch_size, workers))
            r, p = float(np.median(raw)), float(np.median(par))
            print(f"   {name:8s} raw loop {r:8.0f} samples/s   evaluate ({workers} "
                  f"interpreters) {p:8.0f} samples/s   {p / r:.2f}x")


def main(sections: list[str], variants: list[str] | None = None, repeats: int = 5) -> None:
    cfg, _ = load_params(ROOT / "params.yaml")
    if "cores" in sections:
        cores(cfg.evaluate.batch_size)
    if not {"overhead", "stability"} & set(sections):
        return
    variants = variants or [cfg.report.reference, "int8", "int8_full"]
    missing = [v for v in variants if not tflite_path(LAYOUT.variant(v), v).exists()]
    if missing or not LAYOUT.reference_outputs.exists():
        sys.exit(f"error: pipeline outputs missing ({', '.join(missing) or 'reference'}); "
                 "run `make repro` first")
    if "overhead" in sections:
        throughput_ratio(variants, data.load(LAYOUT.dataset), cfg.evaluate.batch_size, repeats)
    if "stability" in sections:
        repeat_stability(variants)
