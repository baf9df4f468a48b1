"""Statistics for comparing runs across seeds: mean, sample std, and Welch's t interval for a difference of means.

Standard library only (no scipy). The Student-t quantile is found by bisection on the t CDF, which is a
regularized incomplete beta function,

    P(T <= t) = 1 - I_x(df/2, 1/2) / 2   for t >= 0,   x = df / (df + t^2)

(Abramowitz & Stegun 26.7.1 with 26.5.27).  I_x(a, b) is evaluated from its continued fraction with the modified
Lentz method, using the symmetry I_x(a, b) = 1 - I_{1-x}(b, a) where the fraction converges slowly (Press et al.,
Numerical Recipes, 3rd ed., section 6.4 "Incomplete Beta Function").  Non-integer degrees of freedom work,
which Welch's interval needs.

Welch's interval (Welch 1947; Satterthwaite 1946): for samples a and b with means ma, mb, sample variances
va, vb and sizes na, nb,

    se = sqrt(va/na + vb/nb),   df = se^4 / ((va/na)^2 / (na-1) + (vb/nb)^2 / (nb-1)),
    ma - mb  +-  t_{(1+confidence)/2, df} * se.

It does not assume equal variances, and needs at least two values on each side.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

__all__ = ["mean", "sample_std", "t_cdf", "t_quantile", "normal_quantile", "WelchInterval", "welch_interval",
           "mcnemar_exact"]

_EPS = 1e-15      # relative accuracy of the continued fraction
_TINY = 1e-300    # keeps Lentz's method away from division by zero
_MAX_TERMS = 100_000  # the fraction needs O(sqrt(max(a, b))) terms; df = 1e6 takes about a thousand


def mean(values: Sequence[float]) -> float:
    """Arithmetic mean; at least one value."""
    if len(values) == 0:
        raise ValueError("the mean of no values is undefined: pass at least one")
    return math.fsum(values) / len(values)


def sample_std(values: Sequence[float]) -> float:
    """Sample standard deviation (divides by n - 1, so it estimates the spread of a new seed); at least two values."""
    if len(values) < 2:
        raise ValueError(f"a sample standard deviation needs at least 2 values, got {len(values)}")
    m = mean(values)
    return math.sqrt(math.fsum((v - m) ** 2 for v in values) / (len(values) - 1))


def _beta_fraction(a: float, b: float, x: float) -> float:
    """The continued fraction of I_x(a, b) (Numerical Recipes ``betacf``), evaluated by modified Lentz."""
    c, d = 1.0, 1.0 - (a + b) * x / (a + 1.0)
    d = 1.0 / (d if abs(d) > _TINY else _TINY)
    h = d
    for m in range(1, _MAX_TERMS + 1):
        m2 = 2 * m
        for aa in (m * (b - m) * x / ((a - 1.0 + m2) * (a + m2)),                   # even step
                   -(a + m) * (a + b + m) * x / ((a + m2) * (a + 1.0 + m2))):       # odd step
            d = 1.0 + aa * d
            d = 1.0 / (d if abs(d) > _TINY else _TINY)
            c = 1.0 + aa / c
            c = c if abs(c) > _TINY else _TINY
            h *= d * c
        if abs(d * c - 1.0) < _EPS:
            return h
    raise ArithmeticError(f"incomplete beta I_{x}({a}, {b}): continued fraction did not converge")


def _betainc(a: float, b: float, x: float, y: float) -> float:
    """Regularized incomplete beta I_x(a, b), given x and y = 1 - x (passed apart so that x near 1 keeps its
    precision: the t CDF for large df has x = df / (df + t^2) within 1e-6 of 1)."""
    if x <= 0.0:
        return 0.0
    if y <= 0.0:
        return 1.0
    log_front = math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log(y)
    if x < (a + 1.0) / (a + b + 2.0):
        return math.exp(log_front) * _beta_fraction(a, b, x) / a
    return 1.0 - math.exp(log_front) * _beta_fraction(b, a, y) / b


def _check_df(df: float) -> None:
    if not df > 0:  # also refuses nan
        raise ValueError(f"degrees of freedom must be positive, got {df}")


def t_cdf(t: float, df: float) -> float:
    """P(T <= t) for Student's t with ``df`` (> 0, may be fractional or math.inf) degrees of freedom."""
    _check_df(df)
    if math.isinf(df):
        return 0.5 * math.erfc(-t / math.sqrt(2.0))
    t2 = t * t
    tail = 0.5 * _betainc(df / 2.0, 0.5, df / (df + t2), t2 / (df + t2))  # P(T > |t|)
    return 1.0 - tail if t >= 0 else tail


def _bisect_quantile(cdf, p: float) -> float:
    """The x >= 0 with cdf(x) = p, for p >= 0.5 and an increasing cdf with cdf(0) = 0.5."""
    lo, hi = 0.0, 1.0
    while cdf(hi) < p:
        lo, hi = hi, 2.0 * hi
        if hi > 1e300:
            raise ArithmeticError(f"no finite quantile for p = {p}")
    for _ in range(200):  # halves the bracket until it stops shrinking in floating point
        mid = 0.5 * (lo + hi)
        if mid in (lo, hi):
            break
        lo, hi = (mid, hi) if cdf(mid) < p else (lo, mid)
    return 0.5 * (lo + hi)


def _quantile(cdf, p: float) -> float:
    if not 0.0 < p < 1.0:
        raise ValueError(f"a quantile needs 0 < p < 1, got {p}")
    if p < 0.5:  # both distributions are symmetric about 0
        return -_bisect_quantile(cdf, 1.0 - p)
    return _bisect_quantile(cdf, p)


def normal_quantile(p: float) -> float:
    """The standard normal quantile (the t quantile's limit as df grows)."""
    return _quantile(lambda x: 0.5 * math.erfc(-x / math.sqrt(2.0)), p)


def t_quantile(p: float, df: float) -> float:
    """The t with P(T <= t) = p for Student's t with ``df`` degrees of freedom (fractional df allowed;
    math.inf gives the normal quantile).  t_quantile(0.975, 4) = 2.7764451..."""
    _check_df(df)
    return _quantile(lambda x: t_cdf(x, df), p)


@dataclass(frozen=True)
class WelchInterval:
    """An interval for mean(a) - mean(b) at ``confidence``: ``diff`` in [``low``, ``high``]."""
    diff: float
    low: float
    high: float
    se: float          # standard error of the difference
    df: float          # Welch-Satterthwaite degrees of freedom (fractional in general)
    t: float           # the t quantile used, t_{(1+confidence)/2, df}
    confidence: float

    def excludes_zero(self) -> bool:
        return self.low > 0.0 or self.high < 0.0


def welch_interval(a: Sequence[float], b: Sequence[float], confidence: float = 0.95) -> WelchInterval:
    """Welch's t interval for mean(a) - mean(b) (unequal variances; formulas in the module docstring)."""
    if len(a) < 2 or len(b) < 2:
        raise ValueError(f"Welch's interval needs at least 2 values on each side, got {len(a)} and {len(b)}: "
                         "with one run there is no spread to estimate")
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must lie between 0 and 1 (e.g. 0.95), got {confidence}")
    ua, ub = sample_std(a) ** 2 / len(a), sample_std(b) ** 2 / len(b)  # squared standard errors of the means
    se2 = ua + ub
    if se2 == 0.0:
        # Identical values on both sides: df is 0/0. Runs with different seeds never agree that exactly, so
        # this more likely means the seeds were not used (or one run was copied).
        raise ValueError("both samples have zero spread (all values equal): no interval; check that the runs "
                         "really differ in seed")
    df = se2 ** 2 / (ua ** 2 / (len(a) - 1) + ub ** 2 / (len(b) - 1))
    t = t_quantile((1.0 + confidence) / 2.0, df)
    diff, se = mean(a) - mean(b), math.sqrt(se2)
    return WelchInterval(diff=diff, low=diff - t * se, high=diff + t * se, se=se, df=df, t=t,
                         confidence=confidence)


def mcnemar_exact(b: int, c: int) -> float:
    """Two-sided exact McNemar test of paired answers: ``b`` items only the first gets right, ``c`` only the
    second.  Under "no difference" each of the n = b + c discordant items is a fair coin, so
    p = min(1, 2 * P(X <= min(b, c))) for X ~ Binomial(n, 1/2), summed exactly in integers (McNemar 1947).
    The items both get right or both wrong say nothing about the difference and do not enter."""
    if b < 0 or c < 0 or int(b) != b or int(c) != c:
        raise ValueError(f"discordant counts must be whole numbers >= 0, got {b} and {c}")
    n, k = int(b) + int(c), min(int(b), int(c))
    if n == 0:
        return 1.0
    tail = sum(math.comb(n, i) for i in range(k + 1))
    return min(1.0, 2 * tail / 2 ** n)
