"""Evaluation statistics on hand-computed cases; position swapping against a biased judge."""

from __future__ import annotations

import math

import pytest

from drpo.evals.stats import (
    Verdict,
    bootstrap_ci,
    length_bias,
    mean,
    order_score,
    pearson,
    position_bias,
    reconcile,
    spearman,
    stdev,
    win_rate,
)


def test_mean_ignores_missing_values_instead_of_counting_them_as_zero() -> None:
    assert mean([4, None, 2, 3]) == pytest.approx(3.0)
    assert mean([None, None]) is None
    assert mean([]) is None


def test_stdev_is_the_sample_standard_deviation() -> None:
    # values 2, 4, 4, 4, 5, 5, 7, 9: mean 5, squared deviations sum 32, n - 1 = 7
    assert stdev([2, 4, 4, 4, 5, 5, 7, 9]) == pytest.approx(math.sqrt(32 / 7))
    assert stdev([3.0]) is None


def test_order_scores_follow_the_position_of_x() -> None:
    assert order_score("A", x_first=True) == 1.0
    assert order_score("B", x_first=True) == 0.0
    assert order_score("A", x_first=False) == 0.0
    assert order_score("B", x_first=False) == 1.0
    assert order_score("tie", x_first=False) == 0.5
    assert order_score(None, x_first=True) is None


def test_reconcile_averages_both_orders_and_needs_both() -> None:
    assert reconcile("A", "B") == 1.0  # X won in both orders
    assert reconcile("B", "A") == 0.0  # X lost in both orders
    assert reconcile("A", "A") == 0.5  # the first answer won both times: a position effect
    assert reconcile("A", "tie") == 0.75
    assert reconcile("tie", "tie") == 0.5
    assert reconcile("A", None) is None  # half-judged pairs are missing, never one-sided


def test_win_rate_counts_ties_as_one_half() -> None:
    # win, win, tie, loss → (1 + 1 + 0.5 + 0) / 4 = 0.625; the missing pair is left out
    result = win_rate("drpo", "plain", [1.0, 1.0, 0.5, 0.0, None], seed=3)
    assert result.rate == pytest.approx(0.625)
    assert (result.wins, result.ties, result.losses, result.missing) == (2, 1, 1, 1)
    assert result.judged == 4
    assert result.ci is not None
    low, high = result.ci
    assert 0.0 <= low <= 0.625 <= high <= 1.0


def test_bootstrap_ci_is_deterministic_for_a_seed_and_contains_the_estimate() -> None:
    values = [1.0, 0.0, 1.0, 1.0, 0.5, 0.0, 1.0, 0.75, 1.0, 0.25]
    first = bootstrap_ci(values, seed=7)
    assert first == bootstrap_ci(values, seed=7)
    assert first != bootstrap_ci(values, seed=8)
    assert first is not None
    low, high = first
    assert low < sum(values) / len(values) < high
    # A 95 % interval for a mean of 10 values in [0, 1] is neither a point nor the whole range.
    assert 0.15 < high - low < 0.8


def test_bootstrap_interval_width_shrinks_with_more_data() -> None:
    small = bootstrap_ci([1.0, 0.0] * 5, seed=1)
    large = bootstrap_ci([1.0, 0.0] * 200, seed=1)
    assert small is not None and large is not None
    assert large[1] - large[0] < small[1] - small[0]


def test_degenerate_all_wins_gives_rate_one_and_a_zero_width_interval() -> None:
    result = win_rate("drpo", "plain", [1.0] * 12)
    assert result.rate == 1.0
    assert result.ci == (1.0, 1.0)
    assert (result.wins, result.ties, result.losses) == (12, 0, 0)
    assert bootstrap_ci([]) is None
    assert win_rate("a", "b", [None, None]).rate is None


def scripted_first_preferring_judge(first: str, second: str) -> Verdict:
    """A judge that always prefers whichever answer it is shown first."""
    return "A"


def test_position_swapping_cancels_a_judge_that_always_prefers_the_first_answer() -> None:
    answers = {q: {"drpo": f"good answer {q}", "plain": f"bad answer {q}"} for q in range(8)}
    outcomes = []
    orders = []
    for query in answers:
        x_first = scripted_first_preferring_judge(answers[query]["drpo"], answers[query]["plain"])
        x_second = scripted_first_preferring_judge(answers[query]["plain"], answers[query]["drpo"])
        orders.append((x_first, x_second))
        outcomes.append(reconcile(x_first, x_second))
    result = win_rate("drpo", "plain", outcomes, seed=0)
    assert result.rate == 0.5
    assert (result.wins, result.ties, result.losses) == (0, 8, 0)
    assert result.ci == (0.5, 0.5)
    bias = position_bias(orders)
    assert bias.first_rate == 1.0  # the probe names the bias it cancelled
    assert bias.consistency == 0.0
    assert bias.decisive == 16


def test_position_bias_of_a_consistent_judge_is_one_half() -> None:
    bias = position_bias([("A", "B"), ("B", "A"), ("tie", "tie"), ("A", None)])
    assert bias.decisive == 5 and bias.ties == 2
    assert bias.first_chosen == 3
    assert bias.judged_pairs == 3 and bias.consistent_pairs == 3


def test_correlations_on_hand_computed_cases() -> None:
    assert pearson([1, 2, 3, 4], [2, 4, 6, 8]) == pytest.approx(1.0)
    assert pearson([1, 2, 3, 4], [8, 6, 4, 2]) == pytest.approx(-1.0)
    # x = 1..5, y = 2, 1, 4, 3, 5: cov 8/4 = 2, var 2.5 each → r = 0.8
    assert pearson([1, 2, 3, 4, 5], [2, 1, 4, 3, 5]) == pytest.approx(0.8)
    assert pearson([1, 1, 1], [1, 2, 3]) is None
    # Spearman is Pearson on ranks: a monotone but non-linear relation gives exactly 1.
    assert spearman([1, 2, 3, 4], [1, 10, 100, 1000]) == pytest.approx(1.0)
    assert spearman([1, 2, 2, 3], [1, 2, 2, 3]) == pytest.approx(1.0)  # tied ranks averaged


def test_length_bias_counts_how_often_the_longer_answer_wins() -> None:
    probe = length_bias(
        scored=[(10, 2.0), (20, 3.0), (30, 4.0), (40, None)],
        verdicts=[("A", 50, 10), ("B", 50, 10), ("A", 5, 90), ("tie", 10, 90), ("A", 7, 7)],
    )
    assert probe.points == 3 and probe.pearson == pytest.approx(1.0)
    assert probe.decisive_unequal == 3 and probe.longer_chosen == 1
    assert probe.longer_rate == pytest.approx(1 / 3)
