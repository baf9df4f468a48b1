"""ttq_lib.reproduction.stats: the Student-t quantile (integer and fractional df) and Welch's interval."""
import math

import pytest

from ttq_lib.reproduction.stats import mean, normal_quantile, sample_std, t_cdf, t_quantile, welch_interval


def t_density(x: float, df: float) -> float:
    """Student's t density, written out from its definition (independent of the incomplete beta in stats)."""
    log_c = math.lgamma((df + 1) / 2) - math.lgamma(df / 2) - 0.5 * math.log(df * math.pi)
    return math.exp(log_c - (df + 1) / 2 * math.log1p(x * x / df))


def t_quantile_by_integration(p: float, df: float) -> float:
    """The t quantile from Simpson's rule on the density over [0, q] (P(T <= q) = 0.5 + that integral),
    solved for q by bisection: a second, independent route to the same number."""
    def area(q, n=2000):  # composite Simpson, n even; the error is far below 1e-9 for these q
        h = q / n
        s = t_density(0, df) + t_density(q, df)
        s += sum((4 if i % 2 else 2) * t_density(i * h, df) for i in range(1, n))
        return s * h / 3

    lo, hi = 0.0, 20.0
    for _ in range(45):  # 20 / 2^45 < 1e-12
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if 0.5 + area(mid) < p else (lo, mid)
    return (lo + hi) / 2


@pytest.mark.parametrize("df, expected", [(1, 12.7062047), (2, 4.30265273), (4, 2.77644511), (30, 2.04227246)])
def test_t_quantile_matches_tables(df, expected):
    assert t_quantile(0.975, df) == pytest.approx(expected, abs=1e-7)
    assert t_quantile(0.025, df) == pytest.approx(-expected, abs=1e-7)  # symmetric about 0


def test_t_quantile_tends_to_the_normal_for_large_df():
    assert normal_quantile(0.975) == pytest.approx(1.959963985, abs=1e-8)
    assert t_quantile(0.975, 1e6) == pytest.approx(1.95996, abs=1e-5)
    assert t_quantile(0.975, 1e6) > t_quantile(0.975, math.inf)  # heavier tails for any finite df
    assert t_quantile(0.975, math.inf) == pytest.approx(1.959963985, abs=1e-8)


def test_t_quantile_for_fractional_df():
    q2, q25, q3 = t_quantile(0.975, 2), t_quantile(0.975, 2.5), t_quantile(0.975, 3)
    assert q2 > q25 > q3  # fewer degrees of freedom, heavier tails, larger quantile
    assert q3 == pytest.approx(3.18244631, abs=1e-7)
    assert q25 == pytest.approx(t_quantile_by_integration(0.975, 2.5), abs=1e-6)
    assert q25 == pytest.approx(3.57465484, abs=1e-7)


def test_t_cdf_inverts_the_quantile_and_has_closed_form_at_df_2():
    # For df = 2 the CDF is 1/2 + t / (2 sqrt(2 + t^2)).
    for t in (-3.0, -0.4, 0.0, 1.0, 5.0):
        assert t_cdf(t, 2) == pytest.approx(0.5 + t / (2 * math.sqrt(2 + t * t)), abs=1e-12)
    assert t_cdf(t_quantile(0.9, 7.3), 7.3) == pytest.approx(0.9, abs=1e-12)


def test_bad_arguments_are_refused_with_the_reason():
    with pytest.raises(ValueError, match="degrees of freedom must be positive"):
        t_quantile(0.975, 0)
    with pytest.raises(ValueError, match="0 < p < 1"):
        t_quantile(1.0, 3)
    with pytest.raises(ValueError, match="at least 2 values"):
        sample_std([1.0])
    with pytest.raises(ValueError, match="at least 2 values on each side"):
        welch_interval([1.0, 2.0], [3.0])
    with pytest.raises(ValueError, match="zero spread"):
        welch_interval([1.0, 1.0], [2.0, 2.0])


def test_mean_and_sample_std():
    assert mean([91.0, 91.4, 90.8]) == pytest.approx(91.0666667, abs=1e-7)
    # deviations -0.0667, +0.3333, -0.2667: squares sum to 14/75; / (n - 1) = 7/75
    assert sample_std([91.0, 91.4, 90.8]) == pytest.approx(math.sqrt(7 / 75), abs=1e-12)


def test_welch_interval_hand_worked():
    a, b = [91.0, 91.4, 90.8], [90.1, 90.9, 90.6]
    # By hand (exact fractions in brackets):
    #   mean a = 273.2 / 3 = 91.066667;  deviations -0.066667, +0.333333, -0.266667
    #     squares 0.004444 + 0.111111 + 0.071111 = 0.186667 [14/75];  var a = 0.186667 / 2 = 0.093333 [7/75]
    #   mean b = 271.6 / 3 = 90.533333;  deviations -0.433333, +0.366667, +0.066667
    #     squares 0.187778 + 0.134444 + 0.004444 = 0.326667 [49/150]; var b = 0.326667 / 2 = 0.163333 [49/300]
    #   difference of means: 91.066667 - 90.533333 = 0.533333 [8/15]
    #   squared standard errors: var a / 3 = 0.031111 [28/900], var b / 3 = 0.054444 [49/900]
    #   se^2 = 0.085556 [77/900], se = 0.292499
    #   Welch-Satterthwaite df = se^4 / ((28/900)^2 / 2 + (49/900)^2 / 2) = 2 * 77^2 / (28^2 + 49^2)
    #                          = 11858 / 3185 = 3.723077 [242/65]
    #   t_{0.975, 3.723077} = 2.859817 (checked below by integrating the t density)
    #   half-width 2.859817 * 0.292499 = 0.836493; interval 0.533333 -+ 0.836493 = [-0.303160, +1.369826]
    w = welch_interval(a, b)
    assert w.diff == pytest.approx(8 / 15, abs=1e-9)
    assert w.se == pytest.approx(math.sqrt(77 / 900), abs=1e-9)
    assert w.df == pytest.approx(242 / 65, abs=1e-9)
    assert w.t == pytest.approx(t_quantile_by_integration(0.975, 242 / 65), abs=1e-6)
    assert w.t == pytest.approx(2.859817, abs=1e-6)
    assert (w.low, w.high) == (pytest.approx(-0.303160, abs=1e-6), pytest.approx(1.369826, abs=1e-6))
    assert not w.excludes_zero()
    assert welch_interval(b, a).low == pytest.approx(-1.369826, abs=1e-6)  # swapping the sides flips the sign


def test_welch_interval_narrows_with_lower_confidence_and_can_exclude_zero():
    a, b = [10.0, 10.2, 10.1, 10.3], [9.0, 9.1, 8.9, 9.2]
    wide, narrow = welch_interval(a, b, 0.99), welch_interval(a, b, 0.8)
    assert narrow.high - narrow.low < wide.high - wide.low
    assert wide.excludes_zero() and wide.low > 0
    # equal sizes and variances: df is the pooled 2n - 2 = 6
    assert wide.df == pytest.approx(6.0, abs=1e-12)
