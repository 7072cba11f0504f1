"""The cheapest model within the accuracy budget, found automatically: accuracy-aware
mixed-precision search with the LiteRT Quantizer, after OpenVINO NNCF's accuracy control and
Intel Neural Compressor's tuning (no TensorFlow).

1. Start with every layer that has weights at the cheapest precision (`precisions[0]`; the
   default ladder is int4, int8, dynamic8, float16, float: `RULES` says what each is).
2. Measure the trial model on the validation split; its drop is against the float model's
   validation accuracy. The test split is never used here.
3. Rank the layers by sensitivity: `error` (lowest SNR of the layer's output against the
   float model's, on validation samples), or `impact` (raise each layer alone one step and
   measure the accuracy it gains: one trial per layer, more exact).
4. Raise the most sensitive layer that can still go up one precision, with the layers that
   read its output (through pooling, reshapes and the like): they share the quantization
   of that activation, so raising one alone can gain nothing. Re-validate. A step that does
   not improve the accuracy is undone (it would cost size for nothing) and the layer set
   aside, and the rest re-ranked.
5. Stop when the budget is met, the trials or the time are used up, or no layer can go up;
   say which. The same config and seed give the same model bytes.
6. Check the uniform models too (every layer at one precision, as the fixed variants are:
   static int8, dynamic int8, float16 weights, float; a layer whose op cannot take it goes
   to the next rung its op allows, so the all-float16 model keeps the ops the quantizer
   does not cast in float): a path of single steps can end at a model one of them beats on
   both accuracy and cost (seen on a trained ResNet where int4 hurts: the search stopped at
   a model larger than dynamic range and less accurate; and on MLPerf Tiny's ResNet-8,
   where only 16-bit weights keep the budget: without float16 on the ladder, the search
   could only return the all-float model, which the float16 variant matches at half the
   size).
7. Choose among every accepted trial and these checks. First drop each dominated one
   (`undominated`): another is no larger, no less accurate on validation, no slower by its
   latency estimate (when both have one: `objective: latency`), and strictly better in
   one; so a tie on the cost or on the accuracy never goes to the worse model. The result
   is the cheapest of the rest within the budget; when none is within it, the most
   accurate.

A budget tighter than the validation split can resolve (even a model that agrees with the
float model on every validation sample has a drop interval wider than it) is reported as
such: the search then returns its best, flagged.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import logging
import re
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from pipeline import stats
from pipeline.produce import litert_quantizer
from pipeline.variants import LayerRule, QuantizerVariant, SearchVariant

log = logging.getLogger(__name__)

# What each precision means for one layer, as a LiteRT Quantizer rule.
RULES = {"int4": {"mode": "weight_only", "bits": 4},
         "int4_octav": {"mode": "weight_only", "bits": 4, "algorithm": "octav"},
         "int4_mse": {"mode": "weight_only", "bits": 4, "algorithm": "mse"},
         "int4_gptq": {"mode": "weight_only", "bits": 4, "algorithm": "gptq"},
         "int8": {"mode": "static", "bits": 8, "activation_bits": 8},
         "int8_mse": {"mode": "static", "bits": 8, "activation_bits": 8, "algorithm": "mse"},
         "dynamic8": {"mode": "dynamic", "bits": 8},
         "int16": {"mode": "static", "bits": 8, "activation_bits": 16},
         "float16": {"mode": "float16"},
         "float": {"mode": "float"}}
# The quantizer's policy entry for each precision: an op it does not list there cannot take
# that precision (it refuses the recipe: int4 weights on DEPTHWISE_CONV_2D, for one).
# float16 has none: its float casting is allowed on the ops it is registered for.
POLICY_CONFIG = {"int4": "weightonly_wi4_afp32", "int8": "static_wi8_ai8",
                 "dynamic8": "dynamic_wi8_afp32", "int16": "static_wi8_ai16"}
for _method, _rule in RULES.items():  # a method's policy is its precision's
    if "algorithm" in _rule:
        POLICY_CONFIG[_method] = POLICY_CONFIG[_method.split("_")[0]]
FLOAT_CASTING = "float_casting"  # the quantizer's algorithm key for float16 weights


@functools.cache
def _policy() -> dict[str, frozenset[str]]:
    from litert_quantizer import default_policy

    ops = json.loads(default_policy.DEFAULT_JSON_POLICY)["ops_per_config"]
    return {precision: frozenset(ops[key]) for precision, key in POLICY_CONFIG.items()}


def _registered(algorithm_key: str, op: str) -> bool:
    from litert_quantizer import algorithm_manager, qtyping

    return algorithm_manager.is_op_registered(algorithm_key, qtyping.TFLOperationName(op))


def allowed(op: str, precision: str) -> bool:
    """Whether the quantizer's policy lets `op` take `precision` (float: always; float16:
    where its float casting is registered, i.e. fully connected, conv, depthwise conv,
    transpose conv and embedding lookup), and its algorithm is one the quantizer has for
    `op` (GPTQ: fully connected layers only)."""
    if precision == "float":
        return True
    if RULES[precision]["mode"] == "float16":
        return _registered(FLOAT_CASTING, op)
    algorithm = RULES[precision].get("algorithm")
    if algorithm is not None:
        from pipeline.variants import ALGORITHMS

        if not _registered(ALGORITHMS[algorithm], op):
            return False
    return op in _policy()[precision]


def ladder_of(op: str, precisions: Sequence[str]) -> list[str]:
    """The precisions a layer of type `op` can go through, cheapest first."""
    return [p for p in precisions if allowed(op, p)]


@dataclasses.dataclass
class Trial:
    """One trial: the model the search made, what changed, how it did, what it costs."""

    index: int
    change: str
    precisions: dict[str, str]
    accuracy: float
    drop: float
    size_bytes: int
    latency_ms: float | None
    seconds: float
    accepted: bool = True
    flatbuffer: bytes = dataclasses.field(default=b"", repr=False)

    def row(self) -> dict[str, Any]:
        return {"trial": self.index, "change": self.change, "val_accuracy": self.accuracy,
                "val_drop": self.drop, "size_bytes": self.size_bytes,
                "latency_ms_estimate": self.latency_ms, "seconds": self.seconds,
                "accepted": self.accepted}


@dataclasses.dataclass
class Result:
    best: Trial
    trials: list[Trial]
    stop: str
    met: bool
    noise_floor: float  # the drop's upper bound for a model agreeing on every sample
    resolvable: bool
    decisions: list[dict[str, str]]
    float_accuracy: float


def dominates(a: Trial, b: Trial) -> bool:
    """Whether `a` beats `b`: no larger, no less accurate on validation, no slower by its
    latency estimate (compared only when both have one: `objective: latency`), and strictly
    better in one of them."""
    latency = a.latency_ms is not None and b.latency_ms is not None
    no_worse = (a.size_bytes <= b.size_bytes and a.accuracy >= b.accuracy
                and (not latency or a.latency_ms <= b.latency_ms))
    better = (a.size_bytes < b.size_bytes or a.accuracy > b.accuracy
              or (latency and a.latency_ms < b.latency_ms))
    return no_worse and better


def undominated(trials: Sequence[Trial]) -> list[Trial]:
    """The trials no other one dominates (`dominates`), in their order. Never empty when
    `trials` is not: each dominance is no worse on every axis and better on one, so no chain
    of them comes back to where it started, and where a chain ends is undominated."""
    return [t for t in trials if not any(dominates(o, t) for o in trials if o is not t)]


def choose(trials: Sequence[Trial], budget: float, cost: Callable[[Trial], float]) -> Trial:
    """The model found among the accepted `trials`: of those no other one dominates, the
    cheapest by `cost` within the budget (then the most accurate, then the earliest); when
    none is within it, the most accurate (then the cheapest, then the earliest)."""
    # A dominated model is never the answer: another is no larger, no less accurate, no
    # slower, and better in one (an all-float model that an all-float16 one matches at half
    # the size, for one). Without this, a tie on the cost or on the accuracy went to the
    # earlier trial, whatever it cost on the other axes.
    front = undominated(trials)
    kept = {t.index for t in front}
    for t in trials:
        if t.index not in kept:
            log.info("search trial %d (%s) set aside: trial %d dominates it", t.index,
                     t.change, next(o.index for o in trials if dominates(o, t)))
    within = [t for t in front if t.drop <= budget]
    if within:
        return min(within, key=lambda t: (cost(t), -t.accuracy, t.index))
    return max(front, key=lambda t: (t.accuracy, -cost(t), -t.index))


def layer_rules(layers: list[dict[str, Any]], precisions: dict[str, str]) -> list[LayerRule]:
    """One exact rule per layer (its scope as a regex) for its precision."""
    return [LayerRule(regex="^" + re.escape(layer["scope"]) + "$", op=layer["op"],
                      **RULES[precisions[layer["scope"]]]) for layer in layers]


class Search:
    """The state of one search over the float model's `.tflite`."""

    def __init__(self, spec: SearchVariant, float_tflite: Path, calibration: np.ndarray | None,
                 x_val: Any, y_val: np.ndarray, budget: float, batch_size: int = 256,
                 comparison: int = 16) -> None:
        from pipeline.measure.litert import Runner

        self.spec, self.float_tflite, self.calibration = spec, float_tflite, calibration
        self.x_val, self.y_val, self.budget = x_val, np.asarray(y_val), budget
        self.batch_size = batch_size
        self.samples = np.asarray(x_val[:comparison], np.float32)
        self.layers = litert_quantizer.weight_ops(float_tflite)
        self.ladders = {layer["scope"]: ladder_of(layer["op"], spec.precisions)
                        for layer in self.layers}
        for scope, ladder in self.ladders.items():
            if not ladder:
                raise ValueError(f"no precision of {list(spec.precisions)} is allowed for "
                                 f"{short(scope)}; add float to the search's precisions")
        self.readers = readers(float_tflite, self.layers)
        float_pred = Runner(float_tflite, batch_size=batch_size).predict(x_val).argmax(1)
        self.float_right = float_pred == self.y_val
        self.float_accuracy = float(np.mean(self.float_right))
        self.trials: list[Trial] = []

    # -- one trial -------------------------------------------------------------------------

    def quantize(self, precisions: dict[str, str]) -> bytes:
        spec = QuantizerVariant(name=self.spec.name, source="float", recipe=None,
                                rules=layer_rules(self.layers, precisions), io="float")
        flatbuffer, _ = litert_quantizer.quantize(self.float_tflite, spec, self.calibration)
        return flatbuffer

    def measure(self, flatbuffer: bytes, work: Path) -> tuple[float, float | None, Path]:
        from pipeline.measure.litert import Runner

        path = work / f"trial{len(self.trials)}.tflite"
        path.write_bytes(flatbuffer)
        runner = Runner(path, batch_size=self.batch_size)
        accuracy = float(np.mean(runner.predict(self.x_val).argmax(1) == self.y_val))
        latency = None
        if self.spec.objective == "latency":
            latency = self._latency(path)
        return accuracy, latency, path

    def _latency(self, path: Path) -> float:
        """A quick p50 estimate: 30 single-sample invokes after 5 warm-up ones (ms)."""
        from pipeline.measure.litert import Runner

        runner = Runner(path)
        runner.set_input(self.samples[:1])
        for _ in range(5):
            runner.invoke()
        times = []
        for _ in range(30):
            t0 = time.perf_counter()
            runner.invoke()
            times.append(time.perf_counter() - t0)
        return float(np.median(times) * 1e3)

    def trial(self, change: str, precisions: dict[str, str], work: Path) -> Trial:
        started = time.perf_counter()
        flatbuffer = self.quantize(precisions)
        accuracy, latency, _ = self.measure(flatbuffer, work)
        t = Trial(len(self.trials), change, dict(precisions), accuracy,
                  self.float_accuracy - accuracy, len(flatbuffer), latency,
                  time.perf_counter() - started, flatbuffer=flatbuffer)
        self.trials.append(t)
        log.info("search trial %d (%s): validation accuracy %.4f, drop %+.4f, %d bytes",
                 t.index, change, accuracy, t.drop, t.size_bytes)
        return t

    # -- ranking ---------------------------------------------------------------------------

    def rank_by_error(self, flatbuffer: bytes, work: Path, movable: list[str]) -> list[str]:
        """Movable layers, lowest SNR of their output against the float model's first."""
        path = work / "ranking.tflite"
        path.write_bytes(flatbuffer)
        try:
            rows = litert_quantizer.tensor_errors(self.float_tflite, path, self.samples)
        except Exception as exc:  # the validator cannot compare: keep the graph's order
            log.warning("ranking by error unavailable (%s); by graph order", exc)
            return movable
        snr = {r["tensor"]: r["snr_db"] for r in rows}
        def layer_snr(scope: str) -> float:
            names = [n for n in scope.split(";") if n]
            values = [snr[n] for n in (scope.rstrip(";"), *names) if n in snr]
            return min(values) if values else float("inf")
        return sorted(movable, key=lambda s: (layer_snr(s), movable.index(s)))

    def rank_by_impact(self, current: Trial, work: Path, movable: list[str],
                       budget_left: Callable[[], bool]) -> list[str]:
        """Movable layers, the largest validation gain from raising each alone first."""
        gains = {}
        for scope in movable:
            if not budget_left():
                break
            trial = self.trial(f"probe {short(scope)}", self.raised(current.precisions, scope),
                               work)
            trial.accepted = False
            gains[scope] = trial.accuracy - current.accuracy
        return sorted(movable, key=lambda s: (-gains.get(s, -1.0), movable.index(s)))

    def raised(self, precisions: dict[str, str], scope: str) -> dict[str, str]:
        """`scope` one precision up, and the layers reading its output at least as high."""
        order = list(self.spec.precisions)
        out = dict(precisions)
        ladder = self.ladders[scope]
        out[scope] = ladder[ladder.index(precisions[scope]) + 1]
        for reader in self.readers.get(scope, ()):
            if order.index(out[reader]) < order.index(out[scope]):
                out[reader] = next((p for p in self.ladders[reader]
                                    if order.index(p) >= order.index(out[scope])), out[reader])
        return out

    def uniform_alternatives(self, work: Path, budget_left: Callable[[], bool]) -> None:
        """One trial per precision above the cheapest with every layer at it (or at the
        first rung above it its op allows), unless a trial had exactly that model already,
        while `budget_left()`."""
        order = list(self.spec.precisions)
        tried = [t.precisions for t in self.trials]
        for p in order[1:]:
            if not budget_left():
                return
            uniform = {scope: next((q for q in ladder if order.index(q) >= order.index(p)),
                                   ladder[-1]) for scope, ladder in self.ladders.items()}
            if uniform not in tried:
                tried.append(uniform)
                self.trial(f"check: every layer {p}", uniform, work)

    def cost(self, t: Trial) -> float:
        return t.latency_ms if self.spec.objective == "latency" and t.latency_ms else \
            float(t.size_bytes)


def readers(path: Path, layers: list[dict[str, Any]]) -> dict[str, list[str]]:
    """For each layer with weights, the layers with weights that read its output, directly
    or through ops without weights (pooling, reshape, add, ...)."""
    from litert_quantizer.utils import tfl_flatbuffer_utils as fbu

    graph = fbu.read_model(path).subgraphs[0]
    consumers: dict[int, list[int]] = {}
    for index, op in enumerate(graph.operators):
        for tensor in op.inputs:
            if tensor >= 0:
                consumers.setdefault(tensor, []).append(index)
    scope_of = {layer["index"]: layer["scope"] for layer in layers}
    out: dict[str, list[str]] = {}
    for layer in layers:
        found, todo, seen = [], list(graph.operators[layer["index"]].outputs), set()
        while todo:
            tensor = todo.pop()
            for op in consumers.get(tensor, []):
                if op in seen:
                    continue
                seen.add(op)
                if op in scope_of:
                    found.append(scope_of[op])
                else:
                    todo.extend(graph.operators[op].outputs)
        out[layer["scope"]] = found
    return out


def short(scope: str) -> str:
    return scope.split(";")[0]


def noise_floor(float_right: np.ndarray) -> float:
    """The drop's upper bound for a model that agrees with the float model on every
    validation sample: the smallest budget this validation split can show a model within."""
    n, right = len(float_right), int(np.sum(float_right))
    return stats.drop_interval(stats.Paired(right, 0, 0, n - right))[1]


def search(spec: SearchVariant, float_tflite: Path, calibration: np.ndarray | None,
           x_val: Any, y_val: np.ndarray, budget: float, work: Path,
           batch_size: int = 256) -> Result:
    """Run the search; `work` holds the trial models meanwhile.

    Returns:
        The best model found (`choose`: of the models no other trial dominates, the
        cheapest within the budget, else the most accurate), every trial, the stop reason
        and whether the budget was met (on validation).
    """
    s = Search(spec, float_tflite, calibration, x_val, y_val, budget, batch_size)
    started = time.monotonic()

    # The uniform checks (step 6) come last; the steps leave them room in max_trials.
    checks = len(spec.precisions) - 1

    def budget_left(reserve: int = checks) -> bool:
        return (len(s.trials) < spec.max_trials - reserve
                and time.monotonic() - started < spec.time_limit)

    cheapest = spec.precisions[0]
    start = {scope: ladder[0] for scope, ladder in s.ladders.items()}
    held = sorted({f"{layer['op']} at {start[layer['scope']]}" for layer in s.layers
                   if start[layer["scope"]] != cheapest})
    current = s.trial(f"start: every layer {cheapest}"
                      + (f" ({', '.join(held)}: the quantizer's cheapest for them)"
                         if held else ""), start, work)
    set_aside: set[str] = set()
    stop = None
    while current.drop > budget:
        movable = [layer["scope"] for layer in s.layers
                   if current.precisions[layer["scope"]] != s.ladders[layer["scope"]][-1]
                   and layer["scope"] not in set_aside]
        if not movable:
            stop = "no layer can go up"
            break
        if not budget_left():
            stop = "max_trials" if len(s.trials) >= spec.max_trials - checks else "time limit"
            break
        ranked = (s.rank_by_impact(current, work, movable, budget_left) if spec.rank == "impact"
                  else s.rank_by_error(current.flatbuffer, work, movable))
        if not budget_left():
            stop = "max_trials" if len(s.trials) >= spec.max_trials - checks else "time limit"
            break
        scope = ranked[0]
        new = s.raised(current.precisions, scope)
        also = [short(r) for r in s.readers.get(scope, ()) if new[r] != current.precisions[r]]
        step = s.trial(f"{short(scope)}: {current.precisions[scope]} -> {new[scope]}"
                       + (f" (with {', '.join(also)}, which read it)" if also else ""), new,
                       work)
        if step.accuracy <= current.accuracy:  # no gain: undo, set the layer aside, re-rank
            step.accepted = False
            set_aside.add(scope)
            log.info("undone: %s gained nothing", short(scope))
            continue
        current = step
        set_aside.clear()  # the model changed: every layer may help again
    stepped = current.drop <= budget
    s.uniform_alternatives(work, lambda: budget_left(0))
    accepted = [t for t in s.trials if t.accepted]
    met = any(t.drop <= budget for t in accepted)
    if stepped:
        stop = "budget met"
    elif met:
        stop = f"{stop}; a uniform check met the budget"
    best = choose(accepted, budget, s.cost)
    floor = noise_floor(s.float_right)
    decisions = decisions_for(s.layers, best, s.trials, spec.precisions[0])
    return Result(best, s.trials, stop or "budget met", met, floor, floor <= budget,
                  decisions, s.float_accuracy)


def decisions_for(layers: list[dict[str, Any]], best: Trial, trials: list[Trial],
                  cheapest: str) -> list[dict[str, str]]:
    """Per layer of the model found: its precision and why."""
    out = []
    for layer in layers:
        scope = layer["scope"]
        precision = best.precisions[scope]
        raised = [t for t in trials[1:best.index + 1]
                  if t.accepted and t.change.startswith(f"{short(scope)}:")]
        first = trials[0].precisions[scope]
        if best.change.startswith("check:"):
            out.append({"layer": short(scope), "op": layer["op"], "precision": precision,
                        "why": f"trial {best.index} ({best.change}) was the cheapest model "
                               "within the budget"})
            continue
        why = (f"raised in trial {', '.join(str(t.index) for t in raised)}: the most "
               "sensitive layer while the budget was missed" if raised else
               f"{first} kept: the budget held without raising it")
        if first != cheapest:
            why += f" ({cheapest} is not allowed for {layer['op']} by the quantizer's policy)"
        out.append({"layer": short(scope), "op": layer["op"], "precision": precision,
                    "why": why})
    return out


def rules_yaml(decisions: list[dict[str, str]], layers: list[dict[str, Any]]) -> str:
    """The found model as a litert_quantizer variant's rules, to paste into conf/ and get
    the same model without searching again."""
    import yaml

    rules = [{"regex": "^" + re.escape(layer["scope"]) + "$", "op": layer["op"],
              **RULES[d["precision"]]} for d, layer in zip(decisions, layers)]
    return ("# The search's per-layer decisions as a litert_quantizer variant: paste under\n"
            "# quantization.variants.<name> in conf/ to get this model without searching.\n"
            + yaml.safe_dump({"source": "float", "backend": "litert_quantizer",
                              "rules": rules}, sort_keys=False, width=200))


def plot(result: Result, budget: float, objective: str, path: Path) -> Path:
    """Validation accuracy against cost for every trial, the budget line, and the path the
    accepted steps took."""
    from pipeline import plots
    from pipeline.plots import pyplot

    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.5))
    cost = (lambda t: t.latency_ms) if objective == "latency" and all(
        t.latency_ms for t in result.trials) else (lambda t: t.size_bytes / 1024)
    for t in result.trials:
        ax.scatter(cost(t), t.accuracy, s=30, zorder=3,
                   color="tab:blue" if t.accepted else "0.7")
        ax.annotate(str(t.index), (cost(t), t.accuracy), textcoords="offset points",
                    xytext=(4, 4), fontsize=7)
    path_trials = [t for t in result.trials if t.accepted]
    ax.plot([cost(t) for t in path_trials], [t.accuracy for t in path_trials], "-",
            color="tab:blue", label="path taken", zorder=2)
    ax.axhline(result.float_accuracy - budget, color="tab:red", linestyle="--",
               label=f"budget (float {result.float_accuracy:.3f} - {budget:g})")
    ax.scatter(cost(result.best), result.best.accuracy, s=120, facecolors="none",
               edgecolors="tab:green", linewidths=2, label="found", zorder=4)
    ax.set(xlabel="latency estimate (ms)" if objective == "latency" else "size (KiB)",
           ylabel="validation accuracy", title=f"search: {result.stop}")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    return plots.save(fig, path)
