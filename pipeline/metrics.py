"""Every per-variant metric, declared once: its key, what it means, its unit (and so its
format), which way is better, the stage that measures it, and where it appears. The summary,
the report, MLflow, the search's and the report's Pareto checks and `dvc metrics` read these
declarations; `docs/metrics.md`'s table is made from them (`python -m pipeline.dvcfile`).

Adding a metric is its `Metric(...)` line here and the code that measures it: a stage's
result carrying the key (`evaluate`, `benchmark`, `quantize`'s inspection, `footprint`) is
copied into the summary row by its declaration. A key written into a row and not declared
here, or declared and never written, fails `tests/test_metrics.py`.

A key may be a family with one placeholder in angle brackets: `class_accuracy_<class>`,
`<setting>.latency_ms_p50` (one per benchmark setting), `<accelerator>.sram_bytes`.
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Iterable, Mapping
from typing import Any

# Where a metric appears beyond the summary files, `dvc metrics` and the MLflow runs (where
# every metric goes):
SUMMARY = "summary"  # a column of the report's table of every variant
MODEL = "model"  # linked to the variant's logged model in MLflow (the Models tab's columns)
VIEW = "view"  # a column of the lab's saved view of the MLflow experiment
SEEDS = "seeds"  # spread over the seeds of a sweep (`sweep_seeds.csv`)
PLACES = (SUMMARY, MODEL, VIEW, SEEDS)

HIGHER, LOWER = "higher", "lower"  # which way is better; "" for a fact, neither way
# Stages that measure metrics (the report computes the relative ones from theirs).
STAGES = ("quantize", "evaluate", "benchmark", "footprint", "report")
# What a placeholder may stand for.
_PLACEHOLDERS = {"<class>": r"\d+", "<dtype>": r"[a-z0-9]+", "<setting>": r"[a-z0-9_]+",
                 "<path>": r"[a-z]+", "<accelerator>": r"ethos-u[0-9]+-[0-9]+",
                 "<op>": r"[A-Za-z0-9_]+"}


@dataclasses.dataclass(frozen=True)
class Metric:
    """One metric (or family of metrics).

    Attributes:
        key: The key in summary rows, `metrics.json` and MLflow (a family: one placeholder).
        meaning: One line, for the docs table and MLflow.
        stage: The stage that measures it (`STAGES`).
        unit: `B` (bytes), `ms`, `dB`, `x` (a ratio), `MB`, `nats`, `share` (0..1), `count`,
            or "" for a plain number. It sets the format (`fmt`).
        better: `higher`, `lower`, or "" (a fact, neither way).
        where: The places beyond every metric's (`PLACES`).
        interval: The keys of its 95% interval and the digits to show them with.
        signed: Shown with its sign (a difference).
        device: A device tool's figure: absent, not 0, where the tool did not run the variant.
        test_split: Measured on the test split (MLflow names the data with it).
        when: The condition it is written under, if not always (a device figure: where the
            tool runs the variant).
    """

    key: str
    meaning: str
    stage: str
    unit: str = ""
    better: str = ""
    where: frozenset[str] = frozenset()
    interval: tuple[str, str, int] | None = None
    signed: bool = False
    device: bool = False
    test_split: bool = False
    when: str = ""

    def __post_init__(self) -> None:
        assert self.stage in STAGES, self.key
        assert self.better in (HIGHER, LOWER, ""), self.key
        assert self.where <= set(PLACES), self.key

    @property
    def family(self) -> bool:
        return "<" in self.key

    @property
    def pattern(self) -> re.Pattern[str]:
        text = re.escape(self.key)
        for placeholder, regex in _PLACEHOLDERS.items():
            text = text.replace(re.escape(placeholder), regex)
        return re.compile(f"^{text}$")


def _m(key: str, meaning: str, stage: str, unit: str = "", better: str = "",
       where: Iterable[str] = (), **kw: Any) -> Metric:
    return Metric(key, meaning, stage, unit, better, frozenset(where), **kw)


_ACC = ("accuracy_ci_low", "accuracy_ci_high", 3)
_DROP = ("accuracy_drop_ci_low", "accuracy_drop_ci_high", 4)
_SPEEDUP = ("speedup_ci_low", "speedup_ci_high", 2)
_LATENCY = ("latency_ms_p50_ci_low", "latency_ms_p50_ci_high", 3)
_SETTING = "in every benchmark setting (`t1`, `t2`, `t1_noxnnpack`, ...)"

# In the order the report's table and docs/metrics.md show them.
METRICS: tuple[Metric, ...] = (
    # -- accuracy (evaluate, on the whole test split; relative ones by the report) ---------
    _m("accuracy", "top-1 accuracy on the whole test split, run with the LiteRT interpreter",
       "evaluate", "share", HIGHER, where=(SUMMARY, MODEL, VIEW, SEEDS), interval=_ACC,
       test_split=True),
    _m("accuracy_ci_low", "the accuracy's 95% Wilson score interval, low end", "report",
       "share", HIGHER, where=(MODEL,), test_split=True),
    _m("accuracy_ci_high", "the accuracy's 95% Wilson score interval, high end", "report",
       "share", HIGHER, where=(MODEL,), test_split=True),
    _m("accuracy_drop", "reference (`float32`) accuracy minus this variant's accuracy",
       "report", better=LOWER, where=(SUMMARY, MODEL, VIEW, SEEDS), interval=_DROP,
       signed=True, test_split=True),
    _m("accuracy_drop_ci_low", "the drop's 95% interval for paired samples (Newcombe's "
       "hybrid score, method 10), low end", "report", better=LOWER, where=(MODEL,),
       signed=True, test_split=True),
    _m("accuracy_drop_ci_high", "the drop's 95% interval for paired samples, high end (the "
       "budget verdict's bound)", "report", better=LOWER, where=(MODEL, VIEW), signed=True,
       test_split=True),
    _m("p_value_vs_reference", "exact McNemar test of the drop on the discordant test "
       "samples", "report", where=(MODEL,), test_split=True),
    _m("test_samples_to_resolve", "test samples that would, at the observed proportions, "
       "put the drop's interval on one side of the budget", "report", "count",
       when="the drop's interval straddles the budget and more samples would resolve it"),
    _m("agreement", "share of test samples whose top-1 equals the reference's", "evaluate",
       "share", HIGHER, where=(SUMMARY, MODEL), test_split=True),
    _m("top_k_accuracy", "the true class among the k best scores (`evaluate.top_k`)",
       "evaluate", "share", HIGHER, where=(SUMMARY, MODEL), test_split=True),
    _m("class_accuracy_<class>", "accuracy on the test samples of one class", "evaluate",
       "share", HIGHER),
    _m("output_sqnr_db", "signal-to-quantization-noise ratio of the dequantized outputs "
       "against the reference's, on the same inputs (300 dB: identical)", "evaluate", "dB",
       HIGHER, where=(SUMMARY,)),
    _m("output_mae", "mean absolute error of the outputs against the reference's",
       "evaluate", better=LOWER),
    _m("output_kl", "mean KL divergence of the reference's scores from the variant's",
       "evaluate", "nats", LOWER, where=(SUMMARY,)),
    _m("accuracy.<path>", "the accuracy on another kernel path of `evaluate.kernel_paths` "
       "(`builtin`, `reference`)", "evaluate", "share", HIGHER),
    _m("kernel_path_agreement.<path>", "share of test samples whose top-1 on that kernel "
       "path equals the first path's", "evaluate", "share", HIGHER),
    # -- size and what the model is (quantize's inspection) --------------------------------
    _m("size_bytes", "the `.tflite` file's size", "evaluate", "B", LOWER,
       where=(SUMMARY, MODEL, VIEW)),
    _m("compression_ratio", "reference size / this size", "report", "x", HIGHER,
       where=(SUMMARY, MODEL, VIEW)),
    _m("float_compute_ops", "operators that compute in float (see \"What each model really "
       "is\")", "quantize", "count", where=(SUMMARY,)),
    _m("weight_bytes", "bytes of constant weight tensors", "quantize", "B", LOWER),
    _m("conversion_max_abs_diff", "largest absolute output difference between the converted "
       "float model and the original runtime (onnxruntime, torch) on the test split",
       "quantize", better=LOWER, where=(MODEL,), test_split=True,
       when="the model came from ONNX or PyTorch; on the plain float variant"),
    _m("conversion_agreement", "share of test samples whose top-1 the conversion kept (the "
       "converted float model against the original runtime)", "quantize", "share", HIGHER,
       where=(MODEL,), test_split=True,
       when="the model came from ONNX or PyTorch; on the plain float variant"),
    _m("weight_bytes_<dtype>", "bytes of constant weight tensors of one type (0 where "
       "absent)", "quantize", "B"),
    # -- latency (benchmark: the first setting, one thread, XNNPACK) -----------------------
    _m("latency_ms_p50", "median single-sample `invoke()`, first benchmark setting",
       "benchmark", "ms", LOWER, where=(SUMMARY, MODEL, VIEW, SEEDS), interval=_LATENCY),
    _m("latency_ms_p50_ci_low", "the p50's 95% bootstrap interval over the timed runs, low "
       "end", "benchmark", "ms", LOWER, where=(MODEL,)),
    _m("latency_ms_p50_ci_high", "the p50's 95% bootstrap interval, high end", "benchmark",
       "ms", LOWER, where=(MODEL,)),
    _m("latency_ms_mean", "mean single-sample `invoke()`", "benchmark", "ms", LOWER),
    _m("latency_ms_p90", "90th percentile of `invoke()`", "benchmark", "ms", LOWER),
    _m("latency_ms_p95", "95th percentile of `invoke()`", "benchmark", "ms", LOWER),
    _m("latency_ms_p99", "99th percentile of `invoke()`", "benchmark", "ms", LOWER),
    _m("latency_ms_std", "standard deviation of `invoke()`", "benchmark", "ms"),
    _m("latency_ms_min", "fastest `invoke()`", "benchmark", "ms", LOWER),
    _m("latency_ms_max", "slowest `invoke()`", "benchmark", "ms", LOWER),
    _m("latency_cv", "coefficient of variation of `invoke()`", "benchmark"),
    _m("speedup_vs_float32", "reference latency / this latency, measured interleaved",
       "benchmark", "x", HIGHER, where=(SUMMARY, MODEL), interval=_SPEEDUP),
    _m("speedup_ci_low", "the speed-up's 95% bootstrap interval over the interleaved rounds, "
       "low end", "benchmark", "x", HIGHER),
    _m("speedup_ci_high", "the speed-up's 95% bootstrap interval, high end", "benchmark",
       "x", HIGHER),
    _m("init_ms", "interpreter creation", "benchmark", "ms", LOWER),
    _m("first_inference_ms", "the first `invoke()`", "benchmark", "ms", LOWER),
    _m("warmup_ms_mean", "the warm-up's mean `invoke()`", "benchmark", "ms", LOWER),
    *(_m(f"<setting>.{k}", f"`{k}` {_SETTING}", "benchmark", unit, better)
      for k, unit, better in (
          ("latency_ms_mean", "ms", LOWER), ("latency_ms_p50", "ms", LOWER),
          ("latency_ms_p50_ci_low", "ms", LOWER), ("latency_ms_p50_ci_high", "ms", LOWER),
          ("latency_ms_p90", "ms", LOWER), ("latency_ms_p99", "ms", LOWER),
          ("latency_ms_std", "ms", ""), ("latency_cv", "", ""),
          ("speedup_vs_float32", "x", HIGHER), ("speedup_ci_low", "x", HIGHER),
          ("speedup_ci_high", "x", HIGHER))),
    # -- where the time goes (benchmark's per-operator profile, first setting) -------------
    _m("op_ms.<op>", "time of one op type's operators in one inference, each operator timed "
       "as its own model on the first setting's kernel path", "benchmark", "ms", LOWER,
       when="benchmark.profile: true"),
    _m("profile_explained", "the per-operator times plus an invoke's fixed cost, over the "
       "whole model's time (1: they add up)", "benchmark", "share",
       when="benchmark.profile: true"),
    _m("xnnpack_delegated_ops", "operators the XNNPACK delegate took", "benchmark", "count",
       HIGHER, when="benchmark.profile: true and the first setting uses XNNPACK"),
    _m("xnnpack_left_ops", "operators XNNPACK left to the built-in kernels", "benchmark",
       "count", LOWER, when="benchmark.profile: true and the first setting uses XNNPACK"),
    _m("peak_rss_mb", "peak memory of loading and running the model, in a fresh process",
       "benchmark", "MB", LOWER, where=(MODEL,), when="benchmark.memory: true"),
    _m("peak_rss_delta_mb", "the same, less the interpreter library's own baseline",
       "benchmark", "MB", LOWER, when="benchmark.memory: true"),
    # -- on the device (footprint) --------------------------------------------------------
    _m("macs", "multiply-accumulates of one inference, counted from the graph", "footprint",
       "count", LOWER),
    _m("gpu_incompatible_ops", "ops LiteRT's analyzer finds the GPU delegate cannot take "
       "(0: compatible)", "footprint", "count", LOWER),
    *(_m(k, meaning, "footprint", "B", LOWER, device=True) for k, meaning in (
        ("arena_bytes", "TensorFlow Lite for Microcontrollers' tensor arena, as allocated"),
        ("arena_persistent_bytes", "the arena's persistent part"),
        ("arena_nonpersistent_bytes", "the arena's non-persistent part"),
        ("smallest_arena_bytes", "the smallest arena the model runs in on TFLM"))),
    _m("micro.accuracy", "accuracy on TFLM's reference kernels, on a seeded subset of the "
       "test split (`footprint.micro_samples`)", "footprint", "share", HIGHER, device=True),
    _m("micro.accuracy_ci_low", "its 95% Wilson interval, low end", "footprint", "share",
       HIGHER, device=True),
    _m("micro.accuracy_ci_high", "its 95% Wilson interval, high end", "footprint", "share",
       HIGHER, device=True),
    _m("micro.builtin_accuracy", "LiteRT's built-in kernels' accuracy on the same samples",
       "footprint", "share", HIGHER, device=True),
    _m("micro.agreement", "share of those samples whose top-1 is the same on both",
       "footprint", "share", HIGHER, device=True),
    _m("micro.bit_identical", "1 if TFLM's raw outputs equal the built-in kernels' bit for "
       "bit", "footprint", device=True),
    _m("micro.max_abs_diff", "largest difference of the raw outputs between the two",
       "footprint", better=LOWER, device=True),
    _m("micro.samples", "test samples run on TFLM", "footprint", "count", device=True),
    *(_m(f"<accelerator>.{k}", f"{meaning}, by Arm Vela for each Ethos-U of "
         "`footprint.npu` (integer variants only)", "footprint", unit, better, device=True)
      for k, meaning, unit, better in (
          ("sram_bytes", "SRAM used", "B", LOWER), ("flash_bytes", "flash used", "B", LOWER),
          ("macs", "MACs", "count", ""), ("cycles", "cycles of one inference", "count", LOWER),
          ("npu_cycles", "of them on the NPU", "count", ""),
          ("inference_ms", "estimated inference time", "ms", LOWER),
          ("npu_ops", "operators on the NPU", "count", HIGHER),
          ("cpu_ops", "operators left on the CPU", "count", LOWER),
          ("npu_ops_share", "share of operators on the NPU", "share", HIGHER))),
)

_BY_KEY = {m.key: m for m in METRICS if not m.family}
_FAMILIES = [m for m in METRICS if m.family]
assert len(_BY_KEY) + len(_FAMILIES) == len(METRICS), "a metric is declared twice"


def find(key: str) -> Metric | None:
    """The declaration of `key` (itself, or the family it belongs to), or None."""
    if key in _BY_KEY:
        return _BY_KEY[key]
    return next((m for m in _FAMILIES if m.pattern.match(key)), None)


def declared(key: str) -> bool:
    return find(key) is not None


def keys(place: str | None = None, stage: str | None = None) -> tuple[str, ...]:
    """The plain (not family) keys, in order: all, or those shown in `place`, or measured by
    `stage`."""
    return tuple(m.key for m in METRICS if not m.family
                 and (place is None or place in m.where)
                 and (stage is None or m.stage == stage))


def family_keys(prefix: str) -> tuple[str, ...]:
    """The families whose key starts with `prefix` (`<setting>.`: the per-setting ones)."""
    return tuple(m.key for m in METRICS if m.family and m.key.startswith(prefix))


def every_variant(stages: Iterable[str] = STAGES) -> tuple[str, ...]:
    """The plain keys every measured variant carries (of the metrics these `stages`
    measure): not a device tool's, not one written only `when` something holds."""
    stages = set(stages)
    return tuple(k for k in keys() if not _BY_KEY[k].device and not _BY_KEY[k].when
                 and _BY_KEY[k].stage in stages)


def device_metric(key: str) -> bool:
    """Whether a metric is a device tool's figure that exists only where the tool ran the
    variant (TFLM's arena and kernels, Vela's per accelerator): absent, not 0, elsewhere."""
    m = find(key)
    return bool(m and m.device)


def better(key: str) -> str:
    """`higher`, `lower` or "" for the metric `key`."""
    m = find(key)
    return m.better if m else ""


def dominates(a: Mapping[str, Any], b: Mapping[str, Any], keys: Iterable[str]) -> bool:
    """Whether row `a` beats row `b` on the metrics `keys`: no worse on each (by its declared
    direction) and strictly better on one."""
    no_worse, strictly = True, False
    for key in keys:
        sign = {HIGHER: 1, LOWER: -1}[better(key)]  # a metric without a direction: an error
        diff = sign * (a[key] - b[key])
        no_worse = no_worse and diff >= 0
        strictly = strictly or diff > 0
    return no_worse and strictly


def fmt(key: str, value: Any) -> str:
    """A metric's value as the report shows it, units included (by its declaration)."""
    if isinstance(value, str):
        return value
    m = find(key)
    unit = m.unit if m else ""
    if unit == "dB":
        return f"{value:.1f} dB"
    if unit == "nats":
        return f"{value:.3g}"
    if unit == "x":
        return f"{value:.2f}x"
    if unit == "B":
        return f"{value / 1024:.1f} KiB"
    if unit == "ms":
        return f"{value * 1000:.1f} us" if value < 1 else f"{value:.3f} ms"
    if unit == "MB":
        return f"{value:.1f} MB"
    if isinstance(value, int):
        return str(value)
    if math.isfinite(value):
        return f"{value:+.4f}" if m and m.signed else f"{value:.4f}"
    return str(value)


def copied(result: Mapping[str, Any], stage: str) -> dict[str, Any]:
    """The plain metrics of `stage` that its result carries, as they are (the summary row's
    share of that stage: a new metric there needs nothing more than its declaration)."""
    return {k: result[k] for k in keys(stage=stage) if k in result}


def docs_table() -> str:
    """The Markdown table of `docs/metrics.md`: every metric, its unit, which way is better,
    the stage that measures it and what it means."""
    units = {"B": "bytes", "ms": "ms", "dB": "dB", "x": "ratio", "MB": "MB", "nats": "nats",
             "share": "0..1", "count": "count", "": ""}
    lines = ["| metric | unit | better | stage | meaning |", "|---|---|---|---|---|"]
    for m in METRICS:
        when = f" (when {m.when})" if m.when else ""
        lines.append(f"| `{m.key}` | {units[m.unit]} | {m.better} | {m.stage} | "
                     f"{m.meaning}{when} |")
    return "\n".join(lines) + "\n"
