"""Quantization methods against plain min/max (`conf/quantization/methods.yaml`): the whole
pipeline with `quantization=methods`, on the default model and on a MobileNetV2 (alpha
0.35, 32x32) trained on the default data, each in its own Hydra job directory. For each
method: its accuracy, its drop against float32 with the interval, the paired difference
against its min/max counterpart on the same test samples (Newcombe interval, McNemar p),
its size, and the seconds the method took (conversion or quantization, the method
included).

    python -m tools.bench --only methods
    python -m tools.bench.methods --models default   # one of them
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.artifacts import RECORD
from pipeline.layout import SUMMARY_JSON, Layout
from tools.bench.common import ROOT

# Each model: the overrides it adds to `quantization=methods`.
MODELS = {"default": [], "mobilenet_v2": ["model=mobilenet_v2"]}
# Each method -> its plain min/max counterpart.
PAIRS = {"int8_per_tensor": "int8", "int8_per_tensor_eq": "int8_per_tensor",
         "int8_per_tensor_cle": "int8_per_tensor", "int4_octav": "int4_weight_only",
         "int4_gptq": "int4_weight_only", "int4_adaround": "int4_weight_only",
         "int4_hadamard": "int4_weight_only",
         "int8_mse": "aeq_int8_static"}


def run(model: str, out: Path) -> float:
    """The pipeline with the methods on `model`, into `out`; returns its wall seconds."""
    cmd = [sys.executable, "-m", "pipeline", "quantization=methods", *MODELS[model],
           f"hydra.run.dir={out}", f"tracking.uri=sqlite:///{out}/mlflow.db"]
    print(f"[{model}] {' '.join(cmd[1:])}", flush=True)
    start = time.perf_counter()
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    with (out.parent / f"{model}.log").open("w") as log:
        proc = subprocess.run(cmd, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, env=env)
    if proc.returncode:
        raise RuntimeError(f"{model}: the pipeline failed; see {out.parent / f'{model}.log'}")
    return time.perf_counter() - start


def correct(out: Path, name: str, x: np.ndarray, y: np.ndarray) -> np.ndarray | None:
    from pipeline.artifacts import tflite_path
    from pipeline.measure.litert import Runner

    path = tflite_path(out / "models" / "tflite" / name, name)
    if not path.is_file():
        return None
    return Runner(path).predict(x).argmax(1) == y


def table(out: Path) -> list[dict[str, Any]]:
    """One row per method: its figures and the paired difference against its counterpart."""
    from pipeline import data, stats

    rows = json.loads(Layout(out).report(SUMMARY_JSON).read_text())
    ds = data.load(out / "data" / "prepared")  # pixels scaled as the pipeline feeds them
    x, y = ds.x_test, np.asarray(ds.y_test)
    known: dict[str, np.ndarray | None] = {}  # each variant's per-sample correctness, once
    result = []
    for method, plain in PAIRS.items():
        row = rows.get(method)
        if row is None:  # not in this run's config
            continue
        record = json.loads((Layout(out).variant(method) / RECORD).read_text())
        entry: dict[str, Any] = {"method": method, "against": plain, "status": row["status"],
                                 "seconds": record.get("seconds")}
        if row["status"] != "ok":
            entry["error"] = row.get("error") or record.get("error")
            result.append(entry)
            continue
        entry.update({k: row[k] for k in ("accuracy", "accuracy_drop", "accuracy_drop_ci_low",
                                          "accuracy_drop_ci_high", "size_bytes")})
        entry["preparation"] = record.get("preparation")
        for name in (plain, method):
            if name not in known:
                known[name] = correct(out, name, x, y)
        a, b = known[plain], known[method]
        if a is not None and b is not None:
            paired = stats.Paired.from_correct(a, b)  # plain as the reference
            low, high = stats.drop_interval(paired)
            entry.update(gain=-paired.drop, gain_low=-high, gain_high=-low,
                         p_value=stats.mcnemar_exact(paired),
                         against_accuracy=float(np.mean(a)))
        result.append(entry)
    return result


def show(model: str, rows: list[dict[str, Any]], seconds: float) -> None:
    print(f"\n== methods on {model} (pipeline {seconds:.0f} s) ==")
    print(f"{'method':22} {'against':18} {'accuracy':>8} {'drop vs float [95%]':>27} "
          f"{'gain vs plain [95%], p':>34} {'KB':>7} {'s':>6}")
    for r in rows:
        if r["status"] != "ok":
            print(f"{r['method']:22} {r['against']:18} failed: {str(r.get('error'))[:90]}")
            continue
        drop = (f"{r['accuracy_drop']:+.4f} [{r['accuracy_drop_ci_low']:+.4f}, "
                f"{r['accuracy_drop_ci_high']:+.4f}]")
        gain = (f"{r['gain']:+.4f} [{r['gain_low']:+.4f}, {r['gain_high']:+.4f}], "
                f"p={r['p_value']:.3g}" if "gain" in r else "-")
        print(f"{r['method']:22} {r['against']:18} {r['accuracy']:8.4f} {drop:>27} "
              f"{gain:>34} {r['size_bytes'] / 1024:7.1f} {r['seconds'] or 0:6.1f}")
        if r.get("preparation"):
            p = r["preparation"]
            print(f"{'':22} folded {p['batch_norms_folded']}, pairs {p['pairs_equalized']}, "
                  f"ReLU6->ReLU {p['relu6_replaced']}, biases {p['biases_corrected']}, "
                  f"median channel-range spread {p.get('spread_median_before', 0):.1f} -> "
                  f"{p.get('spread_median_after', 0):.1f}, {p['seconds']:.1f} s"
                  + (f"; AdaRound on {p['adaround_layers']} layers, output error x"
                     f"{p['adaround_error_ratio_median']:.2f} (median)"
                     if "adaround_layers" in p else ""))


def markdown(rows: list[dict[str, Any]]) -> str:
    """The table as Markdown, for docs/methods.md."""
    lines = ["| method | against | accuracy | drop vs float32 [95%] | gain vs plain [95%] | "
             "McNemar p | KB | s |", "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        if r["status"] != "ok":
            lines.append(f"| `{r['method']}` | `{r['against']}` | failed: "
                         f"{str(r.get('error'))[:80]} | | | | | |")
            continue
        gain = (f"{r['gain']:+.4f} [{r['gain_low']:+.4f}, {r['gain_high']:+.4f}]"
                if "gain" in r else "-")
        lines.append(
            f"| `{r['method']}` | `{r['against']}` | {r['accuracy']:.4f} | "
            f"{r['accuracy_drop']:+.4f} [{r['accuracy_drop_ci_low']:+.4f}, "
            f"{r['accuracy_drop_ci_high']:+.4f}] | {gain} | "
            f"{r.get('p_value', float('nan')):.3g} | {r['size_bytes'] / 1024:.0f} | "
            f"{r['seconds'] or 0:.1f} |")
    return "\n".join(lines)


def main(models: list[str] | None = None, keep: Path | None = None) -> dict[str, Any]:
    results = {}
    with tempfile.TemporaryDirectory(prefix="bench-methods-") as tmp:
        root = keep or Path(tmp)
        for model in models or list(MODELS):
            out = root / model
            out.parent.mkdir(parents=True, exist_ok=True)
            seconds = run(model, out)
            results[model] = table(out)
            show(model, results[model], seconds)
            print(markdown(results[model]))
    return results


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", choices=list(MODELS), default=list(MODELS))
    parser.add_argument("--keep", type=Path, help="keep the job directories here")
    parser.add_argument("--json", type=Path, help="write the table here too")
    args = parser.parse_args()
    found = main(args.models, args.keep)
    if args.json:
        args.json.write_text(json.dumps(found, indent=1, default=str))
