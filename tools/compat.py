"""The compatibility matrix (`make compat`): Keras' own architectures through every variant,
QAT included, written to `docs/compatibility.md`.

Each architecture is built by `tf_keras.applications` at 32x32x3 (the smallest input they
all take), 10 classes, and trained for real on the default data: MNIST digits padded to
32x32 and repeated over 3 channels (`TRAIN` images, `EPOCHS` epochs, then batch-norm
statistics re-estimated on `RECALIBRATE` of them; `TEST` test images), in [0, 1], or 0..255
for a model that rescales its input itself (a preprocessing layer inside: `data.scale=255`).
It is saved as a file and run through the whole pipeline as a user's model (`model=file`,
`data=npz`), in its own process: a crash there is a crash of the lab, and the matrix says
so. Each cell is `ok` with the accuracy drop, its 95% interval, the budget verdict and the
size ratio against float32, or the failure's one-line reason; the float model's accuracy,
the QAT coverage and the conversion seconds are beside them. A float model that did not
learn (accuracy below `LEARNED`) is marked so: its drops say nothing. Rows are kept in `docs/compatibility.json`: `--only`
reruns some architectures and keeps the others' rows.

    python -m tools.compat [--only MobileNetV3Small EfficientNetB0] [--timeout 3600]
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

from pipeline.io import read_json, write_json, write_text
from pipeline.layout import SUMMARY_JSON, Layout
from pipeline.report.summary import first_line

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "compatibility.md"
ARCHITECTURES = ("MobileNet", "MobileNetV2", "MobileNetV3Small", "MobileNetV3Large",
                 "EfficientNetB0", "EfficientNetV2B0", "ResNet50", "DenseNet121",
                 "NASNetMobile", "ConvNeXtTiny", "RegNetX002", "keras3:MobileNetV3Small")
TRAIN, TEST, EPOCHS = 3000, 1000, 5  # MNIST images the model is trained and scored on
RECALIBRATE = 1000  # training images batch-norm statistics are re-estimated on
LEARNED = 0.5  # float accuracy below which a row is "did not learn" (chance: 0.1)
OVERRIDES = ("train.epochs=1", "qat.epochs=1", "quantization.calibration_samples=50",
             "benchmark.num_threads=[1]", "benchmark.min_runs=20", "benchmark.min_seconds=0.2",
             "benchmark.warmup_seconds=0.05", "benchmark.memory=false",
             # The search is bounded: a row of the matrix should take minutes, not hours.
             "quantization.variants.auto.max_trials=6", "quantization.variants.auto.time_limit=120",
             # no calibration study per row: `make calibration` on a row's model runs one
             "calibration=off")
# What the variants are converted from (rows measured before it have no `export`: their
# conversions loaded a SavedModel of the whole Keras model, about 3x slower).
EXPORT = "forward pass"

# What a user of an architecture has to tell the lab: ConvNeXt's .h5 names a layer class
# tf_keras does not register.
EXTRA = {"ConvNeXtTiny": (
    "model.custom_objects=[tf_keras.src.applications.convnext:LayerScale]",)}

BUILD = r'''
import sys, numpy as np
name, out, data = sys.argv[1], sys.argv[2], sys.argv[3]
if name.startswith("keras3:"):  # Keras 3, as a user of today's Keras would save it
    import keras
    model = getattr(keras.applications, name.split(":")[1])(
        input_shape=(32, 32, 3), weights=None, classes=10)
else:
    from pipeline.tfcompat import import_tf
    _, keras = import_tf(seed=0)
    model = getattr(keras.applications, name)(input_shape=(32, 32, 3), weights=None,
                                              classes=10)
# A model with a preprocessing layer inside rescales its input itself (MobileNetV3,
# EfficientNet, ConvNeXt, RegNet): it gets the 0..255 pixels it expects, the others [0, 1].
import json
layers = list(model._flatten_layers(include_self=False))  # nested ones too
rescales = any(type(l).__name__ in ("Rescaling", "Normalization") for l in layers)
scale = 255.0 if rescales else 1.0
with np.load(data) as f:
    x, y = f["x_train"] * np.float32(scale / 255), f["y_train"]
with open(out + ".json", "w") as info:
    json.dump({"scale": scale}, info)
model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
model.fit(x, y, epochs=int(sys.argv[4]), batch_size=32, verbose=0)
# Batch-norm re-estimation: after a few epochs the moving statistics lag behind the weights
# (MobileNet: 0.90 accuracy on its training batches, 0.10 on the test set with them). One
# pass over RECALIBRATE training images in training mode with momentum 0 sets them to the
# trained weights' own statistics; the saved layers keep their momentum.
norms = [l for l in layers if type(l).__name__ == "BatchNormalization"]
momenta = [l.momentum for l in norms]
for layer in norms:
    layer.momentum = 0.0
model(x[:int(sys.argv[5])], training=True)
for layer, momentum in zip(norms, momenta):
    layer.momentum = momentum
model.save(out)
'''


def mnist32(path: Path, train: int = TRAIN, test: int = TEST) -> Path:
    """The default data at the architectures' smallest input: MNIST digits (seeded draws of
    its training and test splits) zero-padded from 28x28 to 32x32, repeated over 3 channels,
    pixels 0..255 (.npz)."""
    import numpy as np

    from pipeline.sources import load_mnist_package

    loaded = load_mnist_package()
    if loaded is None:
        raise RuntimeError("the compatibility matrix trains on MNIST: install "
                           "requirements-nodeps.lock (make venv does)")
    (x_train, _), y_train, (x_test, _), y_test = loaded
    rng = np.random.default_rng(0)
    arrays = {}
    for split, x, y, n in (("train", x_train, y_train, train), ("test", x_test, y_test, test)):
        pick = np.sort(rng.choice(len(y), n, replace=False))
        padded = np.pad(x[pick], ((0, 0), (2, 2), (2, 2), (0, 0)))
        arrays[f"x_{split}"] = np.repeat(padded, 3, axis=-1)
        arrays[f"y_{split}"] = y[pick]
    np.savez(path, **arrays)
    return path


def synthetic(path: Path, classes: int = 10, train: int = 320, test: int = 160) -> Path:
    """32x32 RGB images whose class is their colour and a stripe, with noise (.npz)."""
    import numpy as np

    rng = np.random.default_rng(0)
    base = rng.integers(30, 220, (classes, 3))

    def images(n: int) -> tuple[Any, Any]:
        y = np.arange(n) % classes
        x = rng.normal(base[y][:, None, None, :], 25, (n, 32, 32, 3))
        for i, c in enumerate(y):
            x[i, :, (3 * c) % 32:(3 * c) % 32 + 3] = 255
        return np.clip(x, 0, 255).astype(np.uint8), y

    (x_train, y_train), (x_test, y_test) = images(train), images(test)
    np.savez(path, x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test)
    return path


def _tail(text: str) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return lines[-1][:200] if lines else "no output"


def _commit() -> str | None:
    """The code a row was measured with (`+dirty` when the tree had changes)."""
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT,
                              capture_output=True, text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                               cwd=ROOT, capture_output=True, text=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None
    return head + ("+dirty" if dirty else "")


def run_one(name: str, work: Path, data: Path, timeout: float) -> dict[str, Any]:
    """Build, then run the pipeline on one architecture: its row of the matrix."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "MLFLOW_TRACKING_URI":
           f"sqlite:///{work / 'mlflow.db'}"}
    model = work / f"{name.replace(':', '_')}.{'keras' if name.startswith('keras3') else 'h5'}"
    row: dict[str, Any] = {"arch": name, "commit": _commit(), "export": EXPORT,
                           "date": time.strftime("%Y-%m-%d", time.gmtime())}
    started = time.perf_counter()
    build = subprocess.run([sys.executable, "-c", BUILD, name, str(model), str(data),
                            str(EPOCHS), str(RECALIBRATE)],
                           env=env, capture_output=True, text=True, timeout=timeout)
    if build.returncode != 0:
        return {**row, "crash": f"building the model failed: {_tail(build.stderr)}"}
    scale = read_json(Path(f"{model}.json"))["scale"]  # the input range it was trained on
    row["input"] = "0..255 (it rescales itself)" if scale != 1 else "[0, 1]"
    job = work / "job"
    try:
        proc = subprocess.run([sys.executable, "-m", "pipeline", "model=file",
                               f"model.path={model}", "data=npz", f"data.path={data}",
                               f"data.scale={scale}",
                               *OVERRIDES, *EXTRA.get(name, ()), f"hydra.run.dir={job}"],
                              cwd=ROOT, env=env,
                              capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {**row, "crash": f"timed out after {timeout:.0f} s"}
    seconds = time.perf_counter() - started
    if proc.returncode != 0:
        return {**row, "crash": f"exit {proc.returncode}: {_tail(proc.stderr)}",
                "seconds": seconds}
    lay = Layout(job)
    summary = read_json(lay.report(SUMMARY_JSON))
    qat = read_json(lay.keras_metrics("qat"))
    return {**row, "seconds": seconds,
            "conversion_seconds": sum(read_json(lay.variant(v) / "conversion.json")["seconds"]
                                      for v in summary),
            "data": f"mnist32: {TRAIN} train, {TEST} test, {EPOCHS} epochs, batch norm "
                    f"re-estimated on {RECALIBRATE}",
            "float_accuracy": summary.get("float32", {}).get("accuracy"),
            "variants": {v: {k: s.get(k) for k in ("status", "error", "accuracy_drop",
                                                   "accuracy_drop_ci_low",
                                                   "accuracy_drop_ci_high", "budget_verdict",
                                                   "compression_ratio")}
                         for v, s in summary.items()},
            "qat": {"coverage": qat.get("coverage"), "error": qat.get("error")}}


def cell(row: dict[str, Any]) -> str:
    if row["status"] != "ok":
        first = first_line(row.get("error") or "no reason recorded", 10_000)
        return "failed: " + (first[:160] + "..." if len(first) > 160 else first).replace("|",
                                                                                     "/")
    if row.get("accuracy_drop_ci_low") is None:  # a row measured on random weights
        return f"ok {row['accuracy_drop']:+.3f}, {row['compression_ratio']:.1f}x"
    return (f"ok {row['accuracy_drop']:+.3f} [{row['accuracy_drop_ci_low']:+.3f}, "
            f"{row['accuracy_drop_ci_high']:+.3f}] {row['budget_verdict']}, "
            f"{row['compression_ratio']:.1f}x")


def merge(old: list[dict[str, Any]], new: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """`old` rows with `new` ones in place of the same architecture, in ARCHITECTURES order
    (others after them, in the order first seen)."""
    by_arch = {r["arch"]: r for r in old} | {r["arch"]: r for r in new}
    order = [a for a in ARCHITECTURES if a in by_arch]
    return [by_arch[a] for a in order + [a for a in by_arch if a not in order]]


def render(results: list[dict[str, Any]]) -> str:
    """`docs/compatibility.md`."""
    variants: list[str] = []
    for r in results:
        variants += [v for v in r.get("variants", {}) if v not in variants]
    variants.sort()
    lines = [
        "# Compatibility matrix", "",
        "Generated by `make compat` (`python -m tools.compat`) from "
        "`docs/compatibility.json`; do not edit by hand. Keras' "
        "own architectures (`tf_keras.applications`, and one Keras 3 model) at 32x32x3, 10 "
        f"classes, trained on MNIST digits padded to 32x32x3 ({TRAIN} training images, "
        f"{EPOCHS} epochs with Adam, then batch-norm statistics re-estimated on "
        f"{RECALIBRATE} of them; pixels in [0, 1], or 0..255 for a model with a preprocessing "
        "layer inside, which rescales its input itself) and scored on "
        f"{TEST} MNIST test images, run through the whole "
        "pipeline as a user's model (`model=file`, `data=npz`), each in its own process. A "
        "cell is `ok` with the accuracy drop against float32, its 95% interval (Newcombe, "
        "paired), the verdict on the default budget (1 point) and the size ratio (float32 "
        "size / this size), or the variant's failure with its reason. A row marked *random "
        "weights* was measured before the matrix trained its models (one epoch on a "
        "synthetic set, no interval): it shows that the variants run, not what they cost. "
        "Settings: " + ", ".join(f"`{o}`" for o in OVERRIDES)
        + ". ConvNeXtTiny's file needs "
        + ", ".join(f"`{o}`" for o in EXTRA["ConvNeXtTiny"]) + " (its `LayerScale` layer is not "
        "registered with Keras, so loading it back needs the class named).", "",
        "| architecture | float accuracy | " + " | ".join(f"`{v}`" for v in variants)
        + " | QAT coverage | conversion s (all variants) | pipeline s |",
        "|---|" + "---|" * (len(variants) + 4)]
    for r in results:
        if "crash" in r:
            lines.append(f"| {r['arch']} | | **crash**: {r['crash']} |"
                         + " |" * (len(variants) + 2))
            continue
        qat = r["qat"]
        if qat.get("coverage"):
            c = qat["coverage"]
            cover = (f"{c['mode']}: {c['annotated_layers']}/{c['layers']} layers, "
                     f"{100 * c['coverage']:.1f}% of weights")
        else:
            cover = "none: " + " ".join((qat.get("error") or "").split())[:90]
        cells = [cell(r["variants"][v]) if v in r["variants"] else "" for v in variants]
        old = "" if r.get("export") == EXPORT else "\\*"
        acc = r.get("float_accuracy")
        learned = ("*random weights*" if acc is None else f"{acc:.3f}" if acc >= LEARNED
                   else f"**did not learn** ({acc:.3f}): its drops say nothing")
        lines.append(f"| {r['arch']} | {learned} | " + " | ".join(cells) + f" | {cover} | "
                     f"{r['conversion_seconds']:.0f}{old} | {r['seconds']:.0f}{old} |")
    crashes = [r["arch"] for r in results if "crash" in r]
    missing = [a for a in ARCHITECTURES if a not in {r["arch"] for r in results}]
    runs = sorted({(r.get("date") or "?", r.get("commit") or "?") for r in results})
    before = any(r.get("export") != EXPORT and "crash" not in r for r in results)
    lines += ["", f"{len(results)} architectures, {len(crashes)} crashes"
              + (f" ({', '.join(crashes)})" if crashes else "") + "."
              + (f" Not run yet: {', '.join(missing)} (`python -m tools.compat --only "
                 f"{' '.join(missing)}` adds them)." if missing else ""),
              "", "Measured " + "; ".join(d + (f" at {c}" if c != "?" else
                                                (" (commit not recorded)")) for d, c in runs)
              + " (each row's date and commit are in the JSON file). The seconds come from a "
              "shared 2-core machine, often with other work beside it: compare rows measured "
              "together, not with other machines."
              + (" \\* Measured before the variants were converted from a SavedModel of the "
                 "forward pass only: each conversion then loaded back the whole Keras model's "
                 "SavedModel, about 3x slower (see docs/models.md)." if before else ""), ""]
    return "\n".join(lines)


def row(name: str, timeout: float, data: Path | None = None) -> dict[str, Any]:
    """One architecture's row in a temporary directory of its own, on the data given, or on
    data built there (a Ray task on another machine cannot read the launcher's)."""
    with tempfile.TemporaryDirectory(prefix=f"compat-{name.replace(':', '_')}-") as tmp:
        work = Path(tmp) / "work"
        work.mkdir()
        return run_one(name, work, data or mnist32(Path(tmp) / "data.npz"), timeout)


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    from pipeline.cluster import add_launcher_arguments, run_rows

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="+", default=list(ARCHITECTURES),
                        help="run these; the other rows of --out are kept")
    parser.add_argument("--timeout", type=float, default=3600.0, help="seconds per step")
    parser.add_argument("--out", type=Path, default=DOC, help="the page; its rows are kept "
                        "in the .json file beside it")
    add_launcher_arguments(parser)
    args = parser.parse_args(argv)
    store = args.out.with_suffix(".json")
    results = read_json(store) if store.exists() else []
    with tempfile.TemporaryDirectory(prefix="compat-") as tmp:
        # Here, the rows share one copy of the data; on Ray, each task builds its own.
        data = mnist32(Path(tmp) / "data.npz") if args.launcher == "local" else None
        print(f"{len(args.only)} architectures ({args.launcher}): {', '.join(args.only)}",
              flush=True)
        for (name, *_), result, error in run_rows(
                row, [(name, args.timeout, data) for name in args.only], args.launcher,
                args.cpus):
            result = result or {"arch": name, "crash": f"its job failed: {error}",
                                "date": time.strftime("%Y-%m-%d", time.gmtime())}
            print(f"{name}: {result.get('crash') or 'done'} "
                  f"({result.get('seconds', 0):.0f} s)", flush=True)
            results = merge(results, [result])
            write_json(store, results)  # row by row: a long run keeps what it has done
            write_text(args.out, render(results))
    return results


if __name__ == "__main__":
    main()
