"""How sure the numbers are: confidence intervals for accuracies and for paired accuracy
differences, the exact McNemar test, the three-level budget verdict, the test-set size a
budget needs, and bootstrap intervals for latencies (scipy.stats; no TensorFlow).

- Accuracy: Wilson score interval (`scipy.stats.binomtest(...).proportion_ci`).
- A variant against the reference, on the same test samples: the exact McNemar test on the
  discordant pairs (a binomial test of b against b + c), and Newcombe's hybrid score interval
  for the paired difference (Newcombe 1998, "Improved confidence intervals for the difference
  between binomial proportions based on paired data", method 10: the two Wilson intervals
  combined with the correlation of the pairs).
- Latency: percentile bootstrap (`scipy.stats.bootstrap`) of the median over the timed runs,
  and of the ratio of medians over the interleaved blocks of a speed-up.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence

import numpy as np

CONFIDENCE = 0.95
VERDICTS = ("within", "unresolved", "misses")  # the budget verdicts, best first
BOOTSTRAP_RESAMPLES = 2000


def wilson(successes: int, n: int, confidence: float = CONFIDENCE) -> tuple[float, float]:
    """The Wilson score interval of a proportion `successes / n`.

    Raises:
        ValueError: if `n` is 0 or `successes` is not in `0..n`.
    """
    from scipy.stats import binomtest

    if n <= 0 or not 0 <= successes <= n:
        raise ValueError(f"a proportion needs 0 <= successes <= n and n > 0, got {successes}/{n}")
    ci = binomtest(int(successes), int(n)).proportion_ci(confidence_level=confidence,
                                                          method="wilson")
    return float(ci.low), float(ci.high)


@dataclasses.dataclass(frozen=True)
class Paired:
    """The 2x2 table of two classifiers scored on the same samples.

    Attributes:
        both: samples both get right; `only_reference`: the reference right, the variant
        wrong (b); `only_variant`: the variant right, the reference wrong (c); `neither`.
    """

    both: int
    only_reference: int
    only_variant: int
    neither: int

    @classmethod
    def from_correct(cls, reference: Sequence[bool], variant: Sequence[bool]) -> Paired:
        r, v = np.asarray(reference, bool), np.asarray(variant, bool)
        if r.shape != v.shape:
            raise ValueError(f"paired samples differ in number: {r.shape} and {v.shape}")
        return cls(int(np.sum(r & v)), int(np.sum(r & ~v)), int(np.sum(~r & v)),
                   int(np.sum(~r & ~v)))

    @property
    def n(self) -> int:
        return self.both + self.only_reference + self.only_variant + self.neither

    @property
    def discordant(self) -> int:
        return self.only_reference + self.only_variant

    @property
    def drop(self) -> float:
        """Reference accuracy minus the variant's."""
        return (self.only_reference - self.only_variant) / self.n

    def scaled(self, factor: float) -> Paired:
        """The same proportions on `factor` times the samples (for sample-size planning)."""
        return Paired(*(round(v * factor) for v in dataclasses.astuple(self)))


def mcnemar_exact(table: Paired) -> float:
    """Two-sided exact McNemar p-value: b of the b + c discordant pairs, against 1/2."""
    from scipy.stats import binomtest

    if table.discordant == 0:
        return 1.0
    return float(binomtest(table.only_reference, table.discordant, 0.5).pvalue)


def drop_interval(table: Paired, confidence: float = CONFIDENCE) -> tuple[float, float]:
    """Newcombe's method 10 interval for the paired drop (reference minus variant accuracy).
    """
    n = table.n
    a, b, c, d = table.both, table.only_reference, table.only_variant, table.neither
    p1, p2 = (a + b) / n, (a + c) / n  # reference and variant accuracy
    l1, u1 = wilson(a + b, n, confidence)
    l2, u2 = wilson(a + c, n, confidence)
    denominator = (a + b) * (c + d) * (a + c) * (b + d)
    phi = (a * d - b * c) / math.sqrt(denominator) if denominator else 0.0
    delta = math.sqrt(max(0.0, (p1 - l1) ** 2 - 2 * phi * (p1 - l1) * (u2 - p2)
                          + (u2 - p2) ** 2))
    epsilon = math.sqrt(max(0.0, (u1 - p1) ** 2 - 2 * phi * (u1 - p1) * (p2 - l2)
                            + (p2 - l2) ** 2))
    return max(-1.0, table.drop - delta), min(1.0, table.drop + epsilon)


def verdict(drop: float, high: float, budget: float) -> str:
    """`within` (the drop's upper bound is within the budget), `unresolved` (the drop is,
    but its interval crosses the budget) or `misses` (the drop is over the budget)."""
    eps = 1e-12  # a drop equal to the budget is within it
    if high <= budget + eps:
        return "within"
    return "unresolved" if drop <= budget + eps else "misses"


def samples_to_resolve(table: Paired, budget: float, limit: int = 10_000_000) -> int | None:
    """How many test samples, at this table's proportions, would make the drop's interval
    fall on one side of the budget (None: not even `limit`, e.g. a drop equal to it)."""
    def resolved(t: Paired) -> bool:
        low, high = drop_interval(t)
        return high <= budget or low > budget

    if resolved(table):
        return table.n
    n = table.n
    while n < limit:  # doubling, then bisection on the scale factor
        n *= 2
        if resolved(table.scaled(n / table.n)):
            lo, hi = n // 2, n
            while hi - lo > max(1, lo // 100):
                mid = (lo + hi) // 2
                lo, hi = (lo, mid) if resolved(table.scaled(mid / table.n)) else (mid, hi)
            return hi
    return None


def median_interval(times: Sequence[float], seed: int = 0,
                    confidence: float = CONFIDENCE) -> tuple[float, float]:
    """Percentile bootstrap interval of the median of timed runs."""
    from scipy.stats import bootstrap

    x = np.asarray(times, dtype=np.float64)
    if len(x) < 2 or np.all(x == x[0]):
        return float(np.median(x)), float(np.median(x))
    res = bootstrap((x,), np.median, confidence_level=confidence, method="percentile",
                    n_resamples=BOOTSTRAP_RESAMPLES, random_state=seed, vectorized=True)
    return float(res.confidence_interval.low), float(res.confidence_interval.high)


def ratio_interval(reference: Sequence[float], variant: Sequence[float], seed: int = 0,
                   confidence: float = CONFIDENCE) -> tuple[float, float]:
    """Percentile bootstrap interval of median(reference) / median(variant) over paired
    blocks (the interleaved rounds of a speed-up measurement)."""
    from scipy.stats import bootstrap

    r, v = np.asarray(reference, np.float64), np.asarray(variant, np.float64)
    ratio = float(np.median(r) / np.median(v))
    if len(r) < 2:
        return ratio, ratio
    res = bootstrap((r, v), lambda a, b, axis=-1: np.median(a, axis=axis) / np.median(b, axis=axis),
                    paired=True, vectorized=True, confidence_level=confidence,
                    method="percentile", n_resamples=BOOTSTRAP_RESAMPLES, random_state=seed)
    return float(res.confidence_interval.low), float(res.confidence_interval.high)


def compare_latency(a: tuple[float, float], b: tuple[float, float]) -> int:
    """-1 if interval `a` lies wholly below `b` (faster), 1 if wholly above, 0: no
    measurable difference (the intervals overlap)."""
    if a[1] < b[0]:
        return -1
    if a[0] > b[1]:
        return 1
    return 0
