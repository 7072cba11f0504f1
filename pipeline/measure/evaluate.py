"""Evaluate one `.tflite` variant on the whole test split, streaming (no TensorFlow).

Samples are read and scored one batch at a time and every metric is accumulated as it goes,
so memory does not grow with the number of test samples. Output error is measured against
the reference variant's outputs on the same inputs (`reference_outputs`, written once).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.io import atomic_path
from pipeline.measure.litert import Runner, io_dtypes

log = logging.getLogger(__name__)

SQNR_CAP_DB = 300.0  # identical outputs have infinite SQNR; JSON and MLflow need a number
# Metrics are accumulated over chunks of this many samples: numpy's per-call overhead on one
# small batch would otherwise rival the interpreter's own time. Memory stays bounded by it.
METRIC_CHUNK = 4096


def reference_outputs(tflite_path: str | Path, x: Any, out: str | Path,
                      batch_size: int = 64, workers: int = 1) -> Path:
    """Run the reference model over `x` and write its outputs `(n, num_classes)` to `.npy`,
    batch by batch (a memory-mapped file, written atomically); `workers` interpreters score
    separate batches at once."""
    runner = Runner(tflite_path, batch_size=batch_size)
    runner.check_shape(x)  # before the output file is created
    num_classes = int(np.prod(runner.output["shape"][1:]))
    with atomic_path(out, suffix=".npy") as tmp:
        mm = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.float32,
                                       shape=(len(x), num_classes))
        start = 0
        for scores in runner.predict_batches(x, workers):
            mm[start:start + len(scores)] = scores.reshape(len(scores), -1)
            start += len(scores)
        mm.flush()
        del mm
    return Path(out)


def kl_divergence(p: np.ndarray, q: np.ndarray, eps: float = 1e-7) -> np.ndarray:
    """KL(p || q) per row, in nats, of two score arrays `(n, classes)` read as probability
    distributions (clipped at `eps` and renormalised; softmax outputs are already ones)."""
    p = np.clip(np.asarray(p, np.float64), eps, None)
    q = np.clip(np.asarray(q, np.float64), eps, None)
    p /= p.sum(axis=1, keepdims=True)
    q /= q.sum(axis=1, keepdims=True)
    return np.sum(p * np.log(p / q), axis=1)


class _Totals:
    """Running sums of every metric over the batches seen so far."""

    def __init__(self, num_classes: int, top_k: int) -> None:
        self.k = min(top_k, num_classes)
        self.confusion = np.zeros((num_classes, num_classes), np.int64)  # (true, predicted)
        self.n = self.top_k_hits = self.agree = 0
        self.signal = self.noise = self.abs_error = 0.0  # sums over every output element
        self.kl = 0.0  # sum over samples of KL(reference || variant), in nats
        # Paired with the reference, sample by sample: (reference right, variant right).
        self.paired = {"both": 0, "only_reference": 0, "only_variant": 0, "neither": 0}

    def add(self, scores: np.ndarray, labels: np.ndarray, ref: np.ndarray | None) -> None:
        classes = self.confusion.shape[0]
        pred = scores.argmax(axis=1)
        self.confusion += np.bincount(labels * classes + pred, minlength=classes * classes
                                      ).reshape(classes, classes)
        # In the top k when fewer than k classes rank above the true one: score higher, or
        # tie with a lower index (argmax's tie-break, so top-1 is exactly the accuracy).
        true_score = scores[np.arange(len(labels)), labels][:, None]
        earlier = np.arange(classes)[None, :] < labels[:, None]
        above = (scores > true_score) | ((scores == true_score) & earlier)
        self.top_k_hits += int((above.sum(axis=1) < self.k).sum())
        self.n += len(labels)
        if ref is not None:
            ref_pred = ref.argmax(axis=1)
            self.agree += int((ref_pred == pred).sum())
            ref_right, right = ref_pred == labels, pred == labels
            self.paired["both"] += int((ref_right & right).sum())
            self.paired["only_reference"] += int((ref_right & ~right).sum())
            self.paired["only_variant"] += int((~ref_right & right).sum())
            self.paired["neither"] += int((~ref_right & ~right).sum())
            err = (scores - ref).ravel()
            flat = ref.ravel()
            self.signal += float(np.dot(flat, flat))
            self.noise += float(np.dot(err, err))
            self.abs_error += float(np.abs(err).sum())
            self.kl += float(kl_divergence(ref, scores).sum())

    def metrics(self, has_reference: bool) -> dict[str, Any]:
        per_class_total = self.confusion.sum(axis=1)
        per_class = np.divide(np.diag(self.confusion), per_class_total,
                              out=np.zeros(len(per_class_total)), where=per_class_total > 0)
        result: dict[str, Any] = {
            "accuracy": float(np.trace(self.confusion) / self.n),
            "correct": int(np.trace(self.confusion)),
            "top_k": self.k,
            "top_k_accuracy": self.top_k_hits / self.n,
            "per_class_accuracy": [float(a) for a in per_class],
            "confusion_matrix": self.confusion.tolist(),
            "num_samples": self.n,
        }
        if has_reference:
            elements = self.n * self.confusion.shape[0]
            sqnr = (SQNR_CAP_DB if self.noise <= self.signal * 10 ** (-SQNR_CAP_DB / 10)
                    else 10 * math.log10(self.signal / self.noise))
            result.update(agreement=self.agree / self.n, output_sqnr_db=sqnr,
                          output_mae=self.abs_error / elements, output_kl=self.kl / self.n,
                          paired=dict(self.paired))
        return result


def evaluate(tflite_path: str | Path, x: Any, y: np.ndarray,
             reference: np.ndarray | None = None, batch_size: int = 64, top_k: int = 3,
             num_classes: int | None = None, workers: int = 1,
             kernels: str = "xnnpack", predictions: bool = False) -> dict[str, Any]:
    """Run the model over every test sample, batch by batch.

    Args:
        tflite_path: The variant's `.tflite` file.
        x: `(n, *input_shape)` float32 images (an array or a memory map).
        y: `(n,)` integer labels.
        reference: The reference variant's outputs `(n, num_classes)` on the same `x`, for
            `agreement`, `output_sqnr_db` and `output_mae`; None leaves those out.
        batch_size: Samples per invoke (falls back to 1 if the model cannot be resized).
        top_k: k of `top_k_accuracy`.
        num_classes: Classes of the task; the model's output width when that is more.
        workers: Interpreters scoring separate batches at once (one per core uses the
            machine; the scores are the same as with one).
        kernels: The kernel path (`pipeline.measure.litert.KERNEL_PATHS`).
        predictions: Also return every sample's top-1 class (`predictions`, an int array,
            n values: to compare kernel paths sample by sample).

    Returns:
        `accuracy`, `top_k`, `top_k_accuracy`, `per_class_accuracy`, `confusion_matrix`
        (rows: true class, columns: predicted), `num_samples`, `size_bytes`, `input_dtype`,
        `output_dtype`, `batch_size`, `workers`, `samples_per_second`, and with a reference
        `agreement`, `output_sqnr_db`, `output_mae`, `output_kl` (mean KL divergence of the
        reference's scores from this model's, nats) and `paired` (how many test samples both,
        only the reference, only this model, or neither classify right: the 2x2 table of the
        paired comparison, `pipeline.stats.Paired`).

    Raises:
        ValueError: if the samples, labels and reference disagree in count or shape.
    """
    path = Path(tflite_path)
    if len(x) != len(y) or (reference is not None and len(reference) != len(y)):
        raise ValueError(f"{len(x)} samples, {len(y)} labels"
                         + ("" if reference is None else f", {len(reference)} reference rows"))
    runner = Runner(path, batch_size=batch_size, kernels=kernels)
    width = int(np.prod(runner.output["shape"][1:]))
    # The model's classes, when the data's labels use fewer of them (a split may lack some).
    totals = _Totals(max(num_classes or 0, width), top_k)
    pending: list[np.ndarray] = []  # scores of batches not yet added to the totals
    done = seen = 0

    top1: list[np.ndarray] = []

    def flush() -> None:
        nonlocal done
        scores = np.concatenate(pending)
        end = done + len(scores)
        if predictions:
            top1.append(scores.argmax(axis=1).astype(np.int32))
        ref = None if reference is None else np.asarray(reference[done:end], np.float32)
        totals.add(scores, np.asarray(y[done:end]), ref)
        pending.clear()
        done = end

    t0 = time.perf_counter()
    for scores in runner.predict_batches(x, workers):
        pending.append(scores.reshape(len(scores), -1))
        seen += len(scores)
        if seen - done >= METRIC_CHUNK:
            flush()
    if pending:
        flush()
    seconds = time.perf_counter() - t0
    input_dtype, output_dtype = io_dtypes(runner.interpreter)
    result = {
        **totals.metrics(reference is not None),
        "size_bytes": path.stat().st_size,
        "input_dtype": input_dtype,
        "output_dtype": output_dtype,
        "batch_size": runner.batch_size,
        "workers": workers,
        "samples_per_second": len(y) / seconds if seconds > 0 else math.inf,
        "kernels": kernels,
    }
    if predictions:
        result["predictions"] = np.concatenate(top1) if top1 else np.zeros(0, np.int32)
    log.info("%s: accuracy %.4f, top-%d %.4f on %d test samples (%.0f samples/s)", path.stem,
             result["accuracy"], result["top_k"], result["top_k_accuracy"], len(y),
             result["samples_per_second"])
    return result


def on_kernel_paths(tflite_path: str | Path, x: Any, y: np.ndarray, reference: Any,
                    paths: Sequence[str], tolerance: float, **kwargs: Any) -> dict[str, Any]:
    """`evaluate` on every kernel path; the first path's figures are the model's.

    Args:
        paths: Kernel paths (`pipeline.config.KERNEL_PATHS`), the first one primary.
        tolerance: An accuracy difference between paths above this flags the model.
        kwargs: More arguments of `evaluate`.

    Returns:
        The first path's result, plus `kernel_paths` (`{path: {accuracy, correct,
        agreement}}` for the others; agreement: the share of samples whose top-1 is the same
        as on the first path) and `kernel_paths_disagree`.
    """
    results = {k: evaluate(tflite_path, x, y, reference, kernels=k, predictions=True, **kwargs)
               for k in paths}
    result = results[paths[0]]
    primary = result.pop("predictions")
    result["kernel_paths"] = {}
    for k in paths[1:]:
        other = results[k]
        result["kernel_paths"][k] = {
            "accuracy": other["accuracy"], "correct": other["correct"],
            "agreement": float(np.mean(other.pop("predictions") == primary))}
    result["kernel_paths_disagree"] = any(
        abs(v["accuracy"] - result["accuracy"]) > tolerance
        for v in result["kernel_paths"].values())
    if result["kernel_paths_disagree"]:
        log.warning("%s: accuracy depends on the kernel path: %s", Path(tflite_path).stem,
                    ", ".join(f"{k} {r['accuracy']:.4f}" for k, r in results.items()))
    return result
