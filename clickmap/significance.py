"""Is a difference in click rate between two variants more than chance?

The compare view tests, per link and for the whole email, whether the share of delivered
customers who clicked differs between variant A and variant B: the two-sided
two-proportion z-test with the pooled proportion, the test statsmodels'
``proportions_ztest`` runs by default.
"""

from dataclasses import dataclass
from math import erfc, sqrt

# Below this p-value a difference is called significant.
ALPHA = 0.05


@dataclass(frozen=True)
class ProportionTest:
    z: float
    p_value: float

    @property
    def significant(self) -> bool:
        return self.p_value < ALPHA


def two_proportion_test(x_a: int, n_a: int, x_b: int, n_b: int) -> ProportionTest | None:
    """The test of x_a/n_a against x_b/n_b (z positive when B's proportion is higher).

    None when it cannot be computed: an empty group, counts outside 0..n (window-mode
    unique clicks can exceed the customers), or no variation at all (both 0 % or both
    100 %), where there is nothing to test.
    """
    if n_a <= 0 or n_b <= 0 or not (0 <= x_a <= n_a and 0 <= x_b <= n_b):
        return None
    pooled = (x_a + x_b) / (n_a + n_b)
    error = sqrt(pooled * (1 - pooled) * (1 / n_a + 1 / n_b))
    if error == 0:
        return None
    z = (x_b / n_b - x_a / n_a) / error
    return ProportionTest(z=z, p_value=erfc(abs(z) / sqrt(2)))


@dataclass(frozen=True)
class Verdict:
    """Which of several groups (variants) has the highest proportion, and whether that lead
    is more than chance: ``winner`` is its index when its test against every other group
    is significant, else None. ``tests`` holds the leader's test against each other group
    (None for itself), ``alpha`` the threshold each test was held to."""

    leader: int | None
    winner: int | None
    tests: tuple[ProportionTest | None, ...]
    alpha: float


def verdict(groups: list[tuple[int, int]]) -> Verdict:
    """The A/B verdict over ``groups`` of (successes, trials), e.g. (clickers, delivered)
    per variant. The leader is the group with the highest proportion (no leader on a tie
    or with fewer than two groups with trials); it wins when two_proportion_test against
    each other group gives p below ALPHA, divided by the number of those tests when there
    are more than one (Bonferroni), so that three or more variants are not more likely
    to produce a winner by chance than two are."""
    rates = [x / n if n > 0 else None for x, n in groups]
    tried = [r for r in rates if r is not None]
    others = len(groups) - 1
    alpha = ALPHA / max(others, 1)
    best = max(tried, default=None)
    if len(tried) < 2 or tried.count(best) > 1:
        return Verdict(None, None, tuple(None for _ in groups), alpha)
    leader = rates.index(best)
    x_l, n_l = groups[leader]
    tests = tuple(
        None if i == leader else two_proportion_test(x, n, x_l, n_l)
        for i, (x, n) in enumerate(groups)
    )
    wins = all(t is not None and t.p_value < alpha for i, t in enumerate(tests) if i != leader)
    return Verdict(leader, leader if wins else None, tests, alpha)
