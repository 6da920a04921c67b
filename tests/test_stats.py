"""Welch's two-sample t-test of the results tables, against hand computations."""

from __future__ import annotations

import math

import pytest

from tdmpc2_trl.results.stats import welch_test


def student_t4_two_sided_p(t: float) -> float:
    """Two-sided p of Student's t with 4 degrees of freedom, from its closed-form CDF."""
    x = t * t / 4
    cdf = 0.5 + 0.375 * (abs(t) / math.sqrt(1 + x)) * (1 - x / (3 * (1 + x)))
    return 2 * (1 - cdf)


def test_equal_spreads_and_counts_give_the_pooled_t_with_its_degrees_of_freedom():
    # [1, 2, 3] against [4, 5, 6]: means 2 and 5, both sample stds 1, so t = -3 / sqrt(1/3 + 1/3), df = 4
    test = welch_test(2.0, 1.0, 3, 5.0, 1.0, 3)
    assert test.t == pytest.approx(-3 / math.sqrt(2 / 3), rel=1e-12)
    assert test.df == pytest.approx(4.0, rel=1e-12)
    assert test.p == pytest.approx(student_t4_two_sided_p(test.t), rel=1e-9)
    assert test.cell() == "t = -3.67, df = 4.0, p = 0.021"


def test_unequal_spreads_use_the_welch_satterthwaite_degrees_of_freedom():
    test = welch_test(10.0, 2.0, 4, 7.0, 6.0, 3)
    va, vb = 4.0 / 4, 36.0 / 3
    assert test.t == pytest.approx(3.0 / math.sqrt(va + vb), rel=1e-12)
    assert test.df == pytest.approx((va + vb) ** 2 / (va**2 / 3 + vb**2 / 2), rel=1e-12)
    assert 0.0 < test.p < 1.0 and welch_test(7.0, 6.0, 3, 10.0, 2.0, 4).p == pytest.approx(test.p, rel=1e-12)


@pytest.mark.parametrize("n_a, std_a, std_b", [(1, 1.0, 1.0), (3, 0.0, 0.0)])
def test_no_test_without_a_spread(n_a: int, std_a: float, std_b: float):
    assert welch_test(2.0, std_a, n_a, 5.0, std_b, 3) is None
