"""Shared statistics against closed forms: constants, known proportions, normal approximations."""
import math

import numpy as np
import pytest

from attnlib import stats


def test_bootstrap_of_a_constant_is_a_point():
    point, iv = stats.bootstrap(np.full(50, 3.25))
    assert point == 3.25 and (iv.lo, iv.hi, iv.n) == (3.25, 3.25, 50)


def test_bootstrap_mean_matches_the_normal_interval():
    x = np.random.default_rng(1).normal(10.0, 2.0, size=2000)
    point, iv = stats.bootstrap(x)
    half = 1.96 * x.std(ddof=1) / math.sqrt(len(x))
    assert point == pytest.approx(x.mean())
    assert iv.lo == pytest.approx(point - half, abs=0.15 * half)
    assert iv.hi == pytest.approx(point + half, abs=0.15 * half)


def test_binomial_interval_closed_form():
    iv = stats.binomial(0, 20)            # rule of three: upper end 1 - 0.025**(1/20)
    assert iv.lo == 0.0 and iv.hi == pytest.approx(1 - 0.025 ** (1 / 20))
    iv = stats.binomial(500, 1000)        # close to the Wald interval for large n
    assert iv.lo == pytest.approx(0.5 - 1.96 * math.sqrt(0.25 / 1000), abs=2e-3)
    assert iv.hi == pytest.approx(0.5 + 1.96 * math.sqrt(0.25 / 1000), abs=2e-3)


def test_paired_accuracy_loss_interval_covers_the_binomial_spread():
    rng = np.random.default_rng(0)
    ref = np.ones(1000, bool)
    new = rng.random(1000) > 0.03                 # about 3 % of items flip to wrong
    point, iv = stats.accuracy_loss(ref, new)
    k = int((~new).sum())
    b = stats.binomial(k, 1000)                   # the loss is exactly the flip proportion here
    assert point == pytest.approx(100 * k / 1000)
    assert iv.lo == pytest.approx(100 * b.lo, abs=0.4) and iv.hi == pytest.approx(100 * b.hi, abs=0.4)
    assert iv.n == 1000 and "paired" in iv.method
    # identical predictions: zero loss, zero width
    assert stats.accuracy_loss(new, new)[1].hi == 0.0


def test_accuracy_loss_over_several_sets_is_the_mean_of_the_sets():
    ref = [np.ones(100, bool), np.ones(300, bool)]
    new = [np.r_[np.zeros(10, bool), np.ones(90, bool)], np.ones(300, bool)]
    point, iv = stats.accuracy_loss(ref, new)
    assert point == pytest.approx((10 + 0) / 2) and iv.n == 400 and "stratified" in iv.method


def test_perplexity_ratio_is_exp_of_the_nll_difference():
    nll_ref, nll_new, tok = np.array([100.0, 200.0]), np.array([101.0, 202.0]), np.array([50, 100])
    point, iv = stats.perplexity_ratio(nll_ref, nll_new, tok)
    assert point == pytest.approx(math.exp(3 / 150))
    assert iv.lo <= point <= iv.hi


def test_latency_ratio_and_reduction():
    base, new = np.full(20, 2.0), np.full(20, 1.5)
    assert stats.latency_ratio(base, new)[0] == pytest.approx(4 / 3)
    point, iv = stats.latency_ratio(base, new, as_percent_reduction=True)
    assert point == pytest.approx(25.0) and iv.lo == pytest.approx(25.0)


def test_geomean():
    point, iv = stats.geomean([1.0, 4.0])
    assert point == pytest.approx(2.0) and iv.lo >= 1.0 and iv.hi <= 4.0


@pytest.mark.parametrize("call,match", [
    (lambda: stats.bootstrap([1.0, float("nan")]), "non-finite"),
    (lambda: stats.bootstrap([]), "empty"),
    (lambda: stats.accuracy_loss([1, 0], [1]), "equal length"),
    (lambda: stats.latency_ratio([1.0], [0.0]), "positive"),
    (lambda: stats.binomial(5, 3), "0 <= k <= n"),
    (lambda: stats.bootstrap([1.0, 2.0], level=1.5), "level"),
    (lambda: stats.Interval(2.0, 1.0, "x", 1), "lo"),
    (lambda: stats.geomean([1.0, -1.0]), "positive"),
])
def test_bad_input_raises(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def test_item_worth():
    assert stats.item_worth(60) == pytest.approx(1.6667, abs=1e-4) and stats.item_worth(1000) == 0.1


def test_from_draws_is_the_percentile_interval_widened_to_the_point():
    draws = np.arange(1001, dtype=float)             # quantiles 25 and 975 at level 0.95
    iv = stats.from_draws(500.0, draws, method="m", n=7)
    assert (iv.lo, iv.hi, iv.n) == (pytest.approx(25.0), pytest.approx(975.0), 7)
    assert stats.from_draws(990.0, draws, method="m", n=7).hi == 990.0
    point, iv = stats.geomean_of_draws([2.0, 8.0], np.array([[2.0] * 200, [8.0] * 200]), method="m", n=2)
    assert point == pytest.approx(4.0) and iv.lo == pytest.approx(4.0) and iv.hi == pytest.approx(4.0)
