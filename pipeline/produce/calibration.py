"""The calibration study: what the number and the choice of representative samples cost each
calibrated variant (imports TensorFlow where a variant's producer needs it).

A point is one variant calibrated on one draw of training samples: a selection (how the
samples are chosen), a size and a draw number. Each point is made by its kind's own producer
(`pipeline.produce.producer`, as the quantize step makes the variant, with the per-layer
table left out), evaluated on the test split, compared with the float model (top-1 agreement,
every tensor on validation samples: the worst layer), and its activation ranges read from the
file, so that the report can say how much they move between draws
(`pipeline.report.calibration`).

Selections, all from the training split (never validation or test):
- `random`: a seeded draw, the main pipeline's own (draw 0 is its draw at that size);
- `balanced`: the same number of samples from each class (fewer samples than classes: one
  from each of that many classes);
- `one_class`: every sample from one class (draw `d` takes class `(seed + d) % classes`);
- `confident` / `unconfident`: the samples the float model is most / least sure of (its top
  probability), one draw;
- `misscaled`: the random draw with its inputs multiplied by `misscale` (pixels left in
  0..255 where the model takes [0, 1]: the most common user error).

Every point's result is cached by the content it depends on (the float model, the data, the
variant's fields, the draw and this code), so a study extended by a size computes only the
new points.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import io
import json
import logging
import tempfile
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path
from typing import Any

import numpy as np

from pipeline import data, stats
from pipeline.closure import ROOT, closure
from pipeline.io import read_json, write_json
from pipeline.layout import CALIBRATION_ORIGINS, CALIBRATION_POINTS, CALIBRATION_STUDY

log = logging.getLogger(__name__)

SELECTIONS = ("random", "balanced", "one_class", "confident", "unconfident", "misscaled")
SEEDED = ("random", "balanced", "one_class", "misscaled")  # the others are one draw
WHOLE = "whole"  # a point's `size_label` when it is the whole training split
SCRIPT = "stages/calibration.py"  # its import closure keys the cache


@dataclasses.dataclass(frozen=True)
class Point:
    """One variant calibrated on one draw: `selection`, `size` samples, draw `draw`."""

    variant: str
    selection: str
    size: int
    draw: int
    whole: bool = False  # the whole training split

    @property
    def name(self) -> str:
        size = WHOLE if self.whole else f"n={self.size}"
        return f"{self.variant} {self.selection} {size} draw {self.draw}"


def grid(variants: Sequence[str], selections: Sequence[str], sizes: Sequence[int], draws: int,
         train_size: int, whole_split: bool) -> list[Point]:
    """Every point of the study: each variant, selection, size (sizes above the training
    split's are left out) and draw (one for `confident` and `unconfident`); with
    `whole_split`, the whole training split once (random)."""
    usable = sorted({s for s in sizes if 1 <= s < train_size})
    points = [Point(v, sel, size, d) for v in variants for sel in selections for size in usable
              for d in range(draws if sel in SEEDED else 1)]
    if whole_split:
        points += [Point(v, "random", train_size, 0, whole=True) for v in variants]
    return points


def indices(selection: str, size: int, draw: int, seed: int, labels: np.ndarray,
            confidence: np.ndarray | None) -> np.ndarray:
    """Which training samples a draw takes (positions in the training split, sorted).

    Args:
        labels: The training split's classes (or the float model's answers, unlabelled).
        confidence: The float model's top probability per training sample (`confident`,
            `unconfident`).
    """
    n = len(labels)
    rng = np.random.default_rng([seed, draw])
    if selection in ("random", "misscaled"):
        return data.calibration_indices(n, size, seed + draw)
    if selection in ("confident", "unconfident"):
        if confidence is None:
            raise ValueError(f"selection {selection} needs the float model's confidence")
        order = np.argsort(-confidence if selection == "confident" else confidence,
                           kind="stable")
        return np.sort(order[:size])
    classes = np.unique(labels)
    if selection == "one_class":
        pool = np.flatnonzero(labels == classes[(seed + draw) % len(classes)])
        return np.sort(rng.permutation(pool)[:size])
    if selection == "balanced":
        chosen = rng.permutation(classes)
        per = np.full(len(classes), size // len(classes))
        per[:size % len(classes)] += 1
        taken = [rng.permutation(np.flatnonzero(labels == c))[:k] for c, k in zip(chosen, per)]
        return np.sort(np.concatenate(taken))
    raise ValueError(f"unknown calibration selection {selection!r}; valid: "
                     f"{', '.join(SELECTIONS)}")


def activation_ranges(path: Path) -> dict[str, list[float]]:
    """Each quantized activation tensor's real range `[min, max]` as the file holds it
    (`(q - zero_point) * scale` at the type's ends; per-tensor scales only)."""
    from pipeline.measure import graph, litert

    g = graph.read(path)
    interpreter = litert.load_interpreter(path, kernels="builtin")
    ranges: dict[str, list[float]] = {}
    for t in interpreter.get_tensor_details():
        q = t["quantization_parameters"]
        if len(q["scales"]) != 1 or g.tensors[t["index"]].constant:
            continue
        info = np.iinfo(t["dtype"])
        scale, zero = float(q["scales"][0]), int(q["zero_points"][0])
        ranges[t["name"]] = [(info.min - zero) * scale, (info.max - zero) * scale]
    return ranges


# --- one point, in a worker ---------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class Setting:
    """What every point of a study shares (sent once to each worker process)."""

    dataset: Path
    model_dir: Path  # the float model stored by the train step
    float_tflite: Path
    specs: Mapping[str, Any]  # variant -> VariantSpec
    misscale: float
    comparison_samples: int
    label_free: bool = False  # scored against the float model's answers (`evaluate.labels`)
    batch_size: int = 256


_WORKER: dict[str, Any] = {}


def _start(setting: Setting) -> None:
    """A worker's one-time set-up: the splits it reads, the float model's test answers."""
    from pipeline import quiet
    from pipeline.measure import litert

    quiet.setup()
    ds = data.load(setting.dataset)
    x_test = np.asarray(ds.x_test)
    float_scores = litert.Runner(setting.float_tflite, batch_size=setting.batch_size
                                 ).predict(x_test)
    _WORKER.update(setting=setting, ds=ds, x_test=x_test,
                   float_answers=float_scores.argmax(axis=1),
                   comparison=np.asarray(ds.x_val[:setting.comparison_samples]))


def _measure(point: Point, rows: np.ndarray) -> dict[str, Any]:
    """Make, evaluate and inspect one point (in a worker set up by `_start`)."""
    from pipeline.measure import litert
    from pipeline.produce import litert_quantizer
    # the producers, one per kind: importing them registers them
    from pipeline.produce import by_converter, by_quantizer, by_search, by_torch  # noqa: F401
    from pipeline.produce.layer_errors import LayerTable
    from pipeline.produce.producer import Folder, Inputs, Source, producer_for

    w = _WORKER
    setting: Setting = w["setting"]
    spec = setting.specs[point.variant]
    start = time.perf_counter()
    samples = w["ds"].x_train[rows]
    if point.selection == "misscaled":
        samples = samples * np.float32(setting.misscale)
    result: dict[str, Any] = {"samples": int(len(rows))}
    try:
        with tempfile.TemporaryDirectory() as tmp:
            folder = Folder(Path(tmp) / "out", Path(tmp) / "scratch")
            folder.path.mkdir()
            folder.scratch.mkdir()
            no_table = LayerTable(None, "not computed in the calibration study")
            inputs = Inputs(Source.stored(setting.model_dir), calibration=samples,
                            stored_table=lambda _: no_table)
            chatter = io.StringIO()  # the quantizer's prints and progress bars, per point
            with contextlib.redirect_stdout(chatter), contextlib.redirect_stderr(chatter):
                produced = producer_for(spec).produce(spec, inputs, folder)
            path = Path(tmp) / f"{point.variant}.tflite"
            path.write_bytes(produced.flatbuffer)
            answers = litert.Runner(path, batch_size=setting.batch_size
                                    ).predict(w["x_test"]).argmax(axis=1)
            y = w["float_answers"] if setting.label_free else w["ds"].y_test
            correct = int((answers == y).sum())
            low, high = stats.wilson(correct, len(y))
            result.update(status="ok", accuracy=correct / len(y), accuracy_ci_low=low,
                          accuracy_ci_high=high,
                          agreement=float((answers == w["float_answers"]).mean()),
                          ranges=activation_ranges(path), size_bytes=len(produced.flatbuffer))
            if len(w["comparison"]):
                try:
                    layers = [r for r in litert_quantizer.tensor_errors(
                        setting.float_tflite, path, w["comparison"])
                        if r["kind"] == "intermediate"]
                except Exception as exc:  # the validator's limit on this pair, not the point's
                    result["worst_layer_error"] = f"{type(exc).__name__}: {exc}"[:300]
                else:
                    if layers:
                        result.update(worst_layer=layers[0]["tensor"],
                                      worst_layer_snr_db=layers[0]["snr_db"])
    except Exception as exc:  # what a converter raises on one draw fails that point alone
        result.update(status="failed", error=f"{type(exc).__name__}: {exc}".strip()[:1000])
    result["seconds"] = time.perf_counter() - start
    return result


# --- the study ------------------------------------------------------------------------------

def file_md5(path: Path) -> str:
    md5 = hashlib.md5()
    with Path(path).open("rb") as f:
        while block := f.read(1 << 20):
            md5.update(block)
    return md5.hexdigest()


def code_digest() -> str:
    """The digest of the code the study runs (its stage's import closure, as `dvc.yaml`
    lists it): a point computed by other code is computed again, and a change elsewhere
    (the report, say) keeps the cache."""
    md5 = hashlib.md5()
    for rel in closure(ROOT / SCRIPT):
        path = ROOT / rel
        files = sorted(path.rglob("*")) if path.is_dir() else [path]
        for file in (f for f in files if f.is_file() and "__pycache__" not in f.parts):
            md5.update(file.relative_to(ROOT).as_posix().encode())
            md5.update(file_md5(file).encode())
    return md5.hexdigest()


def point_key(point: Point, rows: np.ndarray, setting: Setting, shared: str) -> str:
    """The cache key of a point: what its result depends on."""
    spec = setting.specs[point.variant]
    body = {"point": dataclasses.asdict(point), "spec": spec.as_params(),
            "rows": hashlib.md5(np.ascontiguousarray(rows, dtype=np.int64)).hexdigest(),
            "misscale": setting.misscale if point.selection == "misscaled" else None,
            "comparison": setting.comparison_samples, "shared": shared}
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()[:32]


def float_model(setting: Setting) -> tuple[dict[str, Any], np.ndarray, np.ndarray]:
    """The float model's test accuracy (with its interval; 1 when the points are scored
    against its own answers), its top probability on every training sample, and its answers
    there (the classes of unlabelled data)."""
    from pipeline.measure import litert

    ds = data.load(setting.dataset)
    runner = litert.Runner(setting.float_tflite, batch_size=setting.batch_size)
    test = runner.predict(np.asarray(ds.x_test)).argmax(axis=1)
    correct = int((test == (test if setting.label_free else ds.y_test)).sum())
    low, high = stats.wilson(correct, len(ds.y_test))
    top = np.empty(len(ds.x_train), np.float32)
    answers = np.empty(len(ds.x_train), np.int64)
    for a in range(0, len(ds.x_train), 8192):
        scores = runner.predict(ds.x_train[a:a + 8192])
        e = np.exp(scores - scores.max(axis=1, keepdims=True))  # logits or probabilities
        probs = e / e.sum(axis=1, keepdims=True) if not _probabilities(scores) else scores
        top[a:a + len(scores)] = probs.max(axis=1)
        answers[a:a + len(scores)] = scores.argmax(axis=1)
    return ({"accuracy": correct / len(ds.y_test), "accuracy_ci_low": low,
             "accuracy_ci_high": high, "samples": len(ds.y_test)}, top, answers)


def _probabilities(scores: np.ndarray) -> bool:
    return bool(scores.min() >= 0 and np.allclose(scores.sum(axis=1), 1, atol=1e-3))


def run(setting: Setting, points: Sequence[Point], seed: int, out_dir: Path, cache_dir: Path,
        workers: int = 1, main_size: int | None = None) -> dict[str, Any]:
    """Measure every point (cached ones are read back), and write `study.json`,
    `points.csv` and `origins.npz` into `out_dir`.

    The step's outputs: `study.json`, `points.csv` and `origins.npz` (`pipeline.layout`).

    Returns:
        The study: `float` (the float model's accuracy), `points` (one record each: the
        point's fields, `train_samples` and its results), `train_size`, `main_size` (the
        pipeline's own calibration size), `cached` (how many points were read back),
        `seconds`.
    """
    from pipeline.io import atomic_dir, csv_text, write_text

    start = time.perf_counter()
    ds = data.load(setting.dataset)
    float_metrics, confidence, answers = float_model(setting)
    labels = ds.y_train if ds.labelled else answers
    shared = json.dumps({"data": data.content_digest(setting.dataset),
                         "model": file_md5(setting.float_tflite), "code": code_digest()})
    cache_dir.mkdir(parents=True, exist_ok=True)
    draws = {p: indices(p.selection, p.size, p.draw, seed, labels, confidence) for p in points}
    keys = {p: point_key(p, draws[p], setting, shared) for p in points}
    results: dict[Point, dict[str, Any]] = {}
    for p in points:
        cached = cache_dir / f"{keys[p]}.json"
        if cached.is_file():
            results[p] = read_json(cached)
    todo = [p for p in points if p not in results]
    cached_count = len(results)
    log.info("calibration study: %d points (%d variants), %d cached, %d to measure on %d "
             "worker(s)", len(points), len({p.variant for p in points}), cached_count,
             len(todo), workers)

    def done(p: Point, result: dict[str, Any]) -> None:
        results[p] = result
        if result["status"] == "ok":  # a failure is measured again next time
            write_json(cache_dir / f"{keys[p]}.json", result)
        what = (f"accuracy {result['accuracy']:.4f}, agreement {result['agreement']:.4f}"
                if result["status"] == "ok" else f"failed: {result['error'][:120]}")
        log.info("[%d/%d] %s: %s (%.1f s)", len(results) - cached_count, len(todo), p.name,
                 what, result["seconds"])

    if todo and workers <= 1:
        _start(setting)
        for p in todo:
            done(p, _measure(p, draws[p]))
    elif todo:
        import multiprocessing

        with ProcessPoolExecutor(max_workers=workers, initializer=_start, initargs=(setting,),
                                 mp_context=multiprocessing.get_context("spawn")) as pool:
            # the largest draws first: the pool ends on short points
            futures = {pool.submit(_measure, p, draws[p]): p
                       for p in sorted(todo, key=lambda p: -p.size)}
            for future in as_completed(futures):
                done(futures[future], future.result())
    origins = data.origins(setting.dataset)["train"]
    records = [{**dataclasses.asdict(p), "name": p.name, "train_samples": int(len(draws[p])),
                **results[p]} for p in points]
    study = {"float": float_metrics, "train_size": len(ds.x_train), "seed": seed,
             "main_size": main_size, "label_free": setting.label_free,
             "misscale": setting.misscale, "points": records, "cached": cached_count,
             "seconds": time.perf_counter() - start}
    columns = ("variant", "selection", "size", "draw", "whole", "train_samples", "status",
               "accuracy", "accuracy_ci_low", "accuracy_ci_high", "agreement",
               "worst_layer", "worst_layer_snr_db", "size_bytes", "seconds", "error")
    with atomic_dir(out_dir) as folder:
        write_json(folder / CALIBRATION_STUDY, study)
        write_text(folder / CALIBRATION_POINTS, csv_text(
            [{c: r.get(c, "") for c in columns} for r in records], columns))
        np.savez_compressed(folder / CALIBRATION_ORIGINS, **{f"point_{i}": origins[draws[p]]
                                                 for i, p in enumerate(points)})
    return study
