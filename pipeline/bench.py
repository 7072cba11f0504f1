"""Performance figures of the lab itself, printed, not asserted (`make bench`):

1. Evaluation throughput against the raw interpreter: `pipeline.evaluate.evaluate` (with
   quantization, dequantization and every metric) vs a bare set_tensor/invoke/get_tensor loop
   over the same pre-quantized batches, same model and data, measured interleaved.
2. Repeat stability: the benchmark stage run twice on the same model (two processes); the
   ratio of their p50 latencies, and each run's own spread (coefficient of variation).

    python -m pipeline.bench          # after `make repro` (needs the pipeline's outputs)
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from pipeline import data
from pipeline.artifacts import tflite_path
from pipeline.config import load_params
from pipeline.io import read_json
from pipeline.layout import Layout
from pipeline.measure import evaluate
from pipeline.measure.litert import Runner, quantize_input

ROOT = Path(__file__).resolve().parent.parent
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


def eval_throughput(model: Path, ds: data.Dataset, reference: np.ndarray,
                    batch_size: int) -> float:
    t0 = time.perf_counter()
    evaluate.evaluate(model, ds.x_test, ds.y_test, reference, batch_size)
    return len(ds.y_test) / (time.perf_counter() - t0)


def throughput_ratio(variants: list[str], ds: data.Dataset, batch_size: int,
                     repeats: int) -> None:
    reference = np.load(LAYOUT.reference_outputs)
    # The test split is small: tile it so each timing lasts long enough to be stable.
    tiles = max(1, 20000 // len(ds.y_test))
    big = data.Dataset(ds.x_train, ds.y_train, ds.x_val, ds.y_val,
                       np.tile(ds.x_test, (tiles, 1, 1, 1)), np.tile(ds.y_test, tiles),
                       ds.num_classes)
    big_ref = np.tile(reference, (tiles, 1))
    print(f"1. evaluation throughput vs raw interpreter ({len(big.y_test)} samples, batch "
          f"{batch_size}, median of {repeats} interleaved repeats)")
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
    print("2. benchmark stage run twice per model (separate processes)")
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variants", nargs="+", default=None,
                        help="default: the reference, int8 and int8_full")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    cfg, _ = load_params(ROOT / "params.yaml")
    args.variants = args.variants or [cfg.report.reference, "int8", "int8_full"]
    missing = [v for v in args.variants if not tflite_path(LAYOUT.variant(v), v).exists()]
    if missing or not LAYOUT.reference_outputs.exists():
        sys.exit(f"error: pipeline outputs missing ({', '.join(missing) or 'reference'}); "
                 "run `make repro` first")
    ds = data.load(LAYOUT.dataset)
    throughput_ratio(args.variants, ds, cfg.evaluate.batch_size, args.repeats)
    repeat_stability(args.variants)


if __name__ == "__main__":
    main()
