"""The statistics behind every comparison, against textbook cases: Wilson intervals, the
exact McNemar test, Newcombe's paired interval (its coverage, simulated), the budget
verdicts at their edges, the sample size a budget needs, and latency ties.
"""

from __future__ import annotations

import numpy as np
import pytest

from pipeline import stats


@pytest.mark.parametrize(("k", "n", "low", "high"), [
    (0, 10, 0.0, 0.2775),  # Wilson (1927); Newcombe (1998) Table I, 0/10
    (5, 10, 0.2366, 0.7634),
    (10, 10, 0.7225, 1.0),
    (360, 360, 0.98944, 1.0),  # the default test split, all correct
])
def test_wilson_interval_textbook_cases(k: int, n: int, low: float, high: float) -> None:
    got = stats.wilson(k, n)
    assert got == pytest.approx((low, high), abs=5e-5)
    with pytest.raises(ValueError, match="0 <= successes <= n"):
        stats.wilson(11, 10)


def test_exact_mcnemar_on_hand_made_predictions() -> None:
    # 20 samples: 8 only the reference gets right, 2 only the variant, 7 both, 3 neither.
    reference = [True] * 8 + [False] * 2 + [True] * 7 + [False] * 3
    variant = [False] * 8 + [True] * 2 + [True] * 7 + [False] * 3
    table = stats.Paired.from_correct(reference, variant)
    assert (table.both, table.only_reference, table.only_variant, table.neither) == (7, 8, 2, 3)
    assert table.drop == pytest.approx(6 / 20)
    # Two-sided exact binomial test of 8 of 10 discordant pairs: 2 * P(X <= 2 | 10, 1/2)
    assert stats.mcnemar_exact(table) == pytest.approx(2 * (1 + 10 + 45) / 1024)
    assert stats.mcnemar_exact(stats.Paired(10, 0, 0, 10)) == 1.0  # no discordant pair


def test_newcombe_interval_covers_the_true_drop_95_percent_of_the_time() -> None:
    """Simulated paired classifiers (reference right 90%, variant right 88%, correlated):
    the 95% interval of the drop contains the true drop (0.02) in about 95% of samples."""
    rng = np.random.default_rng(0)
    cells = np.array([0.85, 0.05, 0.03, 0.07])  # both, only reference, only variant, neither
    true_drop = cells[1] - cells[2]
    trials, covered = 2000, 0
    for counts in rng.multinomial(300, cells, size=trials):
        low, high = stats.drop_interval(stats.Paired(*map(int, counts)))
        covered += low <= true_drop <= high
    assert 0.93 <= covered / trials <= 0.975  # coverage near the nominal 95%


def test_the_interval_is_honest_where_nothing_disagrees() -> None:
    # 360 samples, identical predictions: the drop is 0, but 360 samples cannot rule out a
    # drop of about one point (about 3.6 samples).
    low, high = stats.drop_interval(stats.Paired(351, 0, 0, 9))
    assert low < 0 < high and 0.005 < high < 0.02
    wide = stats.drop_interval(stats.Paired(35, 0, 0, 1))
    assert wide[1] > high  # fewer samples, less certain


@pytest.mark.parametrize(("drop", "high", "verdict"), [
    (0.0, 0.0, "within"),
    (0.005, 0.01, "within"),  # the upper bound equal to the budget is within it
    (0.005, 0.0101, "unresolved"),
    (0.01, 0.02, "unresolved"),  # the drop equal to the budget, its interval crossing it
    (0.0101, 0.03, "misses"),
])
def test_budget_verdicts_at_the_edges(drop: float, high: float, verdict: str) -> None:
    assert stats.verdict(drop, high, 0.01) == verdict


def test_samples_to_resolve_a_budget() -> None:
    table = stats.Paired(351, 0, 0, 9)  # agrees on every one of 360 samples
    needed = stats.samples_to_resolve(table, 0.01)
    assert needed is not None and needed > 360
    assert stats.drop_interval(table.scaled(needed / 360))[1] <= 0.01  # enough ...
    assert stats.drop_interval(table.scaled(0.95 * needed / 360))[1] > 0.01  # ... and needed
    assert stats.samples_to_resolve(stats.Paired(300, 0, 0, 60), 0.5) == 360  # already


def test_latency_intervals_tell_a_tie_from_a_difference() -> None:
    rng = np.random.default_rng(0)
    a = rng.normal(10.0, 1.0, 500)
    b = rng.normal(10.02, 1.0, 500)  # the same, within noise
    c = rng.normal(12.0, 1.0, 500)  # measurably slower
    ia, ib, ic = (stats.median_interval(x) for x in (a, b, c))
    assert ia[0] < np.median(a) < ia[1]
    assert stats.compare_latency(ia, ib) == 0  # "no measurable difference"
    assert stats.compare_latency(ia, ic) == -1 and stats.compare_latency(ic, ia) == 1
    low, high = stats.ratio_interval(c, a)  # speed-up of `a` against `c`: about 1.2x
    assert 1.1 < low < 1.2 < high < 1.3
