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
