"""Whether two groups of seeds can be told apart: Welch's two-sample t-test from each side's mean, std and count.

Both sides of a results table are summaries (this project's seeds, the official curve's 3 seeds at a logged point),
so the test works from ``mean ± sample std (n)`` and does not assume equal variances. SciPy's
``ttest_ind_from_stats`` does the arithmetic; SciPy is already installed with dm_control.

>>> test = welch_test(2.0, 1.0, 3, 5.0, 1.0, 3)
>>> round(test.t, 3), round(test.df, 1), round(test.p, 4)
(-3.674, 4.0, 0.0213)
>>> welch_test(2.0, 1.0, 1, 5.0, 1.0, 3) is None  # one seed: no spread to test against
True
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from scipy.stats import ttest_ind_from_stats


@dataclass(frozen=True)
class WelchTest:
    """Welch's t statistic (side a − side b), its Welch–Satterthwaite degrees of freedom and two-sided p-value."""

    t: float
    df: float
    p: float

    def cell(self) -> str:
        """The table cell: ``"t = -3.67, df = 4.0, p = 0.021"``."""
        return f"t = {self.t:+.2f}, df = {self.df:.1f}, p = {self.p:.3f}"


def welch_test(mean_a: float, std_a: float, n_a: int, mean_b: float, std_b: float, n_b: int) -> WelchTest | None:
    """Welch's test of ``a`` against ``b`` (sample stds); None when a side has fewer than 2 values or both spreads
    are 0, where no test is possible."""
    if n_a < 2 or n_b < 2 or (std_a == 0 and std_b == 0):
        return None
    va, vb = std_a**2 / n_a, std_b**2 / n_b
    df = (va + vb) ** 2 / (va**2 / (n_a - 1) + vb**2 / (n_b - 1))
    t, p = ttest_ind_from_stats(mean_a, std_a, n_a, mean_b, std_b, n_b, equal_var=False)
    return WelchTest(float(t), df, float(p)) if math.isfinite(float(p)) else None
