"""mechtests.stats: bootstrap estimates against scipy, test-inversion p-values, Holm, honesty."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats as sps

from mechtests.claims import evaluate_claim
from mechtests.errors import NumericalError, UsageError
from mechtests.stats import Estimate, bootstrap_estimate, holm, n_to_decide, one_sided_p


def _rel_reduction(b: np.ndarray, t: np.ndarray, axis: int = -1) -> np.ndarray:
    return 1.0 - t.mean(axis=axis) / b.mean(axis=axis)


def test_interval_is_scipys_bca_interval_for_the_same_seed() -> None:
    rng = np.random.default_rng(0)
    b = rng.uniform(0.2, 0.8, 80)
    t = b * 0.6 + rng.normal(0, 0.05, 80)
    est = bootstrap_estimate((b, t), _rel_reduction, paired=True, confidence=0.9, n_resamples=999, seed=7)
    ref = sps.bootstrap((b, t), _rel_reduction, paired=True, confidence_level=0.9, n_resamples=999,
                        method="BCa", rng=np.random.default_rng(7))
    assert est.ci_low == pytest.approx(ref.confidence_interval.low, rel=1e-12)
    assert est.ci_high == pytest.approx(ref.confidence_interval.high, rel=1e-12)
    assert est.standard_error == pytest.approx(ref.standard_error, rel=1e-12)
    assert est.value == pytest.approx(1 - t.mean() / b.mean(), rel=1e-12)
    assert (est.n, est.method, est.confidence) == (80, "BCa", 0.9)


def test_mean_interval_matches_normal_theory_on_a_large_sample() -> None:
    x = np.random.default_rng(1).normal(2.0, 3.0, 1000)
    est = bootstrap_estimate((x,), np.mean, n_resamples=5000, seed=0)
    half = 1.959964 * x.std(ddof=1) / np.sqrt(x.size)
    assert est.ci_low == pytest.approx(x.mean() - half, abs=0.15 * half)
    assert est.ci_high == pytest.approx(x.mean() + half, abs=0.15 * half)


def test_non_vectorized_statistic_gives_the_same_interval() -> None:
    x = np.random.default_rng(2).exponential(1.0, 50)
    vec = bootstrap_estimate((x,), np.mean, n_resamples=500, seed=3, threshold=1.0, direction=">")
    loop = bootstrap_estimate((x,), lambda a: float(a.mean()), n_resamples=500, seed=3, threshold=1.0, direction=">")
    assert (loop.ci_low, loop.ci_high) == pytest.approx((vec.ci_low, vec.ci_high), rel=1e-12)
    assert loop.p_value == pytest.approx(vec.p_value, rel=1e-9)


def test_seed_reproduces_and_changes_the_resampling() -> None:
    x = np.random.default_rng(3).normal(size=40)
    a = bootstrap_estimate((x,), np.mean, n_resamples=300, seed=5)
    assert bootstrap_estimate((x,), np.mean, n_resamples=300, seed=5) == a
    assert bootstrap_estimate((x,), np.mean, n_resamples=300, seed=6).ci_low != a.ci_low


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 10_000), shift=st.floats(-0.4, 0.4), n=st.integers(10, 60),
       method=st.sampled_from(["BCa", "percentile"]))
def test_p_value_inverts_the_interval(seed: int, shift: float, n: int, method: str) -> None:
    """p < (1 - confidence)/2 exactly when the interval excludes the threshold (away from ties)."""
    x = np.random.default_rng(seed).normal(0.0, 1.0, n)
    base = bootstrap_estimate((x,), np.mean, n_resamples=400, seed=seed, method=method)  # type: ignore[arg-type]
    for t, direction, bound in ((base.ci_low + shift * 0.5, ">", base.ci_low), (base.ci_high + shift * 0.5, "<", base.ci_high)):
        if abs(t - bound) < 0.02 * (base.ci_high - base.ci_low):
            continue  # within interpolation distance of a replicate: either answer is right
        est = bootstrap_estimate((x,), np.mean, n_resamples=400, seed=seed, threshold=t, direction=direction,  # type: ignore[arg-type]
                                 method=method)  # type: ignore[arg-type]
        excluded = est.ci_low > t if direction == ">" else est.ci_high < t
        # A p-value exactly at alpha/2 is a tie between the replicate grid and the interval's
        # interpolated bound: either side is right there, so ties count for both.
        assert (est.p_value <= 0.025) if excluded else (est.p_value >= 0.025)


def test_one_sided_p_known_answers() -> None:
    dist = np.arange(100.0)
    assert one_sided_p(dist, 9.5, ">") == pytest.approx(0.10)
    assert one_sided_p(dist, 9.5, "<") == pytest.approx(0.90)
    assert one_sided_p(dist, (9.5, 89.5), "within") == pytest.approx(0.10)
    assert one_sided_p(dist, -5.0, ">") == pytest.approx(0.005)  # the resolution limit 1/(2B)


def test_degenerate_samples_give_a_zero_width_interval() -> None:
    x = np.full(10, 0.25)
    est = bootstrap_estimate((x,), np.mean, threshold=0.2, direction=">")
    assert (est.value, est.ci_low, est.ci_high, est.method, est.p_value) == (0.25, 0.25, 0.25, "degenerate", 0.0)


def test_nan_samples_raise_numerical_error_naming_the_index() -> None:
    x = np.array([0.1, 0.2, np.nan, 0.4])
    with pytest.raises(NumericalError, match=r"samples\[0\].*index 2"):
        bootstrap_estimate((x,), np.mean)


def test_statistic_undefined_on_resamples_raises_numerical_error() -> None:
    b = np.array([0.0, 0.0, 0.0, 1.0, 0.0, 0.0])
    t = np.array([0.1, 0.2, 0.1, 0.3, 0.2, 0.1])
    with np.errstate(divide="ignore", invalid="ignore"):
        with pytest.raises(NumericalError, match="resamples"):
            bootstrap_estimate((b, t), _rel_reduction, n_resamples=200, seed=0)


@pytest.mark.parametrize("bad, match", [
    ((np.array([1.0]),), "at least 2"),
    ((np.ones((3, 2)),), "1-D"),
    ((np.ones(3), np.ones(4)), "equal lengths"),
    ((), "empty"),
])
def test_malformed_samples_are_usage_errors(bad: tuple[np.ndarray, ...], match: str) -> None:
    with pytest.raises(UsageError, match=match):
        bootstrap_estimate(bad, lambda *a: 0.0)


@pytest.mark.parametrize("confidence", [0.0, 1.0, 1.5, -0.1, float("nan")])
def test_confidence_outside_open_unit_interval_is_rejected(confidence: float) -> None:
    with pytest.raises(UsageError, match="confidence"):
        bootstrap_estimate((np.arange(5.0),), np.mean, confidence=confidence)


def test_holm_known_answer() -> None:
    assert holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert holm([0.2, None, 0.3]) == [pytest.approx(0.4), None, pytest.approx(0.4)]
    assert holm([]) == []


@settings(max_examples=50, deadline=None)
@given(st.lists(st.floats(0.0, 1.0), min_size=1, max_size=30))
def test_holm_properties(ps: list[float]) -> None:
    adj = holm(ps)
    assert all(p <= a + 1e-12 and a <= 1.0 for p, a in zip(ps, adj))  # type: ignore[operator]
    order = np.argsort(ps, kind="stable")
    adj_sorted = [adj[i] for i in order]
    assert all(x <= y + 1e-12 for x, y in zip(adj_sorted, adj_sorted[1:]))  # type: ignore[operator]
    assert min(adj) == pytest.approx(min(1.0, len(ps) * min(ps)))  # type: ignore[type-var]


def test_n_to_decide_known_answers() -> None:
    est = Estimate(0.4, 0.2, 0.6, 0.95, 100)
    # se = 0.2 / 1.95996 = 0.102043; n' = 100 (0.102043 (1.95996 + 0.84162) / 0.1)^2 = 817.3
    assert n_to_decide(est, 0.3, ">") == 818
    assert n_to_decide(est, 0.5, "<") == 818
    assert n_to_decide(est, 0.3, ">", power=0.5) == 400  # 50% power: the half-width meets the gap
    assert n_to_decide(est, 0.4, ">") is None      # the estimate sits on the threshold
    assert n_to_decide(est, 0.42, ">") is None     # within a quarter standard error: within noise
    assert n_to_decide(Estimate.exact(0.4), 0.3, ">") is None
    assert n_to_decide(est, (0.3, 0.9), "within") == 818  # only the straddled bound counts


def test_n_to_decide_gives_about_80_percent_power_on_fresh_data() -> None:
    """Fresh data of the suggested size, from a population whose effect and spread are the
    observed ones, decides the claim about 80% of the time (measured 91%; it was ~50% by
    construction, the n at which the half-width merely meets the gap)."""
    rng = np.random.default_rng(11)
    suggested, decided = 0, 0
    for i in range(80):
        x = rng.normal(0.5, 1.0, 40)
        r = evaluate_claim("h", metric="m", direction=">", threshold=0.2, samples=(x,), n_resamples=400, seed=i)
        if r.verdict != "inconclusive" or r.decisive_n is None:
            continue
        assert r.decisive_n > 40
        suggested += 1
        y = rng.normal(x.mean(), x.std(ddof=1), min(r.decisive_n, 20_000))
        decided += evaluate_claim("h", metric="m", direction=">", threshold=0.2, samples=(y,), n_resamples=400,
                                  seed=i).verdict != "inconclusive"
    assert suggested >= 25
    assert 0.7 * suggested <= decided <= 0.97 * suggested  # neither ~50% nor a needlessly huge n


SIMULATIONS = {
    # name: (draw samples whose true effect is `effect`, statistic); threshold 0.3 for all
    "mean-normal": (lambda rng, effect, n: (rng.normal(effect, 1.0, n),), np.mean),
    "mean-skewed": (lambda rng, effect, n: (rng.exponential(effect, n),), np.mean),
    "paired-relative-reduction": (
        lambda rng, effect, n: (lambda b: (b, np.clip(b * (1 - effect) + rng.normal(0, 0.08, n), 0, 1)))(
            rng.uniform(0.2, 0.8, n)), _rel_reduction),
}


@pytest.mark.parametrize("name", sorted(SIMULATIONS))
def test_statistical_honesty_false_pass_rate_at_the_threshold(name: str) -> None:
    """500 claims whose true effect equals the threshold: pass rate <= nominal + 2 points.

    A claim passes when the two-sided 95% interval lies wholly above the threshold, a one-sided
    test at level (1 - 0.95)/2 = 0.025: that is the nominal false-pass rate.
    """
    draw, statistic = SIMULATIONS[name]
    rng = np.random.default_rng(2024)
    verdicts = [evaluate_claim("h", metric="m", direction=">", threshold=0.3, samples=draw(rng, 0.3, 100),
                               statistic=statistic, n_resamples=999, seed=i, confidence=0.95).verdict
                for i in range(500)]
    nominal = (1 - 0.95) / 2
    assert verdicts.count("pass") / 500 <= nominal + 0.02


@pytest.mark.parametrize("name", sorted(SIMULATIONS))
def test_statistical_honesty_power_well_past_the_threshold(name: str) -> None:
    """500 claims with a true effect well past the threshold and adequate n: >= 95% pass."""
    draw, statistic = SIMULATIONS[name]
    rng = np.random.default_rng(7)
    effect = {"mean-normal": 0.8, "mean-skewed": 0.45, "paired-relative-reduction": 0.4}[name]
    verdicts = [evaluate_claim("h", metric="m", direction=">", threshold=0.3, samples=draw(rng, effect, 200),
                               statistic=statistic, n_resamples=999, seed=i).verdict for i in range(500)]
    assert verdicts.count("pass") / 500 >= 0.95


def test_constant_jackknife_falls_back_to_percentile_without_warnings() -> None:
    """A statistic whose leave-one-out values are all equal makes BCa undefined (0/0)."""
    import warnings

    x = np.array([0.0] * 19 + [1.0])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        est = bootstrap_estimate((x,), lambda a, axis=-1: np.median(a, axis=axis), n_resamples=300, seed=0,
                                 threshold=0.5, direction="<")
    assert (est.value, est.ci_low, est.ci_high, est.method) == (0.0, 0.0, 0.0, "percentile")
    assert est.p_value == pytest.approx(0.5 / 300)  # below every replicate: the resolution limit


def test_constant_statistic_on_varying_samples_has_a_p_value_consistent_with_its_interval() -> None:
    # The samples vary, the statistic does not: a zero-width interval above the threshold must
    # come with the smallest p the resamples can show, and one below it with the largest.
    samples = (np.array([0.1, 0.9, 0.4, 0.7, 0.2, 0.8]),)

    def constant(x: np.ndarray, axis: int = -1) -> np.ndarray:
        # 0.548 up to rounding noise, as a mean of per-block fractions comes out
        return 0.548 + 1e-14 * np.mean(x, axis=axis)

    above = bootstrap_estimate(samples, constant, n_resamples=199, seed=1, threshold=0.5, direction=">")
    below = bootstrap_estimate(samples, constant, n_resamples=199, seed=1, threshold=0.6, direction=">")
    assert (above.ci_low, above.ci_high) == (pytest.approx(0.548), pytest.approx(0.548))
    assert above.p_value == pytest.approx(0.5 / 199) and below.p_value == pytest.approx(1 - 0.5 / 199)
    assert above.method == below.method == "percentile"


def test_discrete_statistic_gets_an_interval_and_p_value_that_agree() -> None:
    # A fraction over few items piles the replicates on a handful of values (most on one): the
    # verdict the interval gives and the verdict the p-value gives must be the same.
    rng = np.random.default_rng(3)
    items = rng.normal(0.3, 1.0, size=(20, 21))  # 20 blocks x 21 "neurons"

    def fraction_positive(blocks: np.ndarray) -> float:
        return float(np.mean(items[blocks.astype(int)].mean(axis=0) > 0))

    est = bootstrap_estimate((np.arange(20.0),), fraction_positive, n_resamples=400, seed=0,
                             threshold=0.5, direction=">")
    assert (est.ci_low > 0.5) == (est.p_value < 0.025)
    assert (est.ci_high < 0.5) == (est.p_value > 0.975)


def test_a_threshold_beyond_every_resample_gives_a_stated_bound_not_a_number() -> None:
    """AN↑ share CI [0.115, 0.141] against 0.05 reported p = 0.021 (BCa's map of the resolution
    limit), which Holm/Bonferroni then read as data. Now: p = 0.5/B, flagged as a bound."""
    x = np.random.default_rng(3).normal(0.13, 0.03, 40)
    est = bootstrap_estimate((x,), np.mean, n_resamples=1000, seed=0, threshold=0.05, direction=">")
    assert est.ci_low > 0.05 and est.p_bound and est.p_value == pytest.approx(0.5 / 1000)
    near = bootstrap_estimate((x,), np.mean, n_resamples=1000, seed=0, threshold=0.125, direction=">")
    assert not near.p_bound and 0.05 < near.p_value < 0.95
    r = evaluate_claim("c", metric="m", direction=">", threshold=0.05, samples=(x,), n_resamples=1000)
    assert "p<0.0005 (threshold beyond every resample)" in r.summary() and r.to_record(nodeid="t")["p_bound"]


def test_fieller_ratio_interval_covers_when_the_denominator_is_small() -> None:
    """recovered = mean(base - cond) / mean(base - tuned) with a small gap (the bootstrap covered
    ~88% of nominal 95% at a tox gap of 0.10, n = 64): Fieller's bounded intervals keep their
    level (measured 95.2%), and where the gap is not significant the interval is unbounded, which
    a claim names as undecidable instead of counting it as covering."""
    from mechtests.stats import ratio_estimate

    rng = np.random.default_rng(21)
    truth, covered, bounded, reps = 0.5, 0, 0, 600
    for _ in range(reps):
        gap = rng.normal(0.10, 0.35, 64)  # per-prompt base - tuned: mean 0.10, noisy
        num = truth * gap + rng.normal(0.0, 0.2, 64)  # base - condition: half the reduction, plus noise
        e = ratio_estimate(num, gap, confidence=0.95)
        if np.isfinite(e.ci_low):
            bounded += 1
            covered += e.ci_low <= truth <= e.ci_high
    assert 0.4 * reps < bounded < 0.9 * reps  # a 0.10 gap at n = 64 is often not significant
    assert 0.92 <= covered / bounded <= 0.98


def test_fieller_is_consistent_with_its_p_value_and_unbounded_without_a_denominator() -> None:
    from mechtests.stats import ratio_estimate

    rng = np.random.default_rng(2)
    gap = rng.normal(0.3, 0.2, 64)
    num = 0.4 * gap + rng.normal(0, 0.05, 64)
    for t in np.linspace(-0.5, 1.5, 41):
        e = ratio_estimate(num, gap, threshold=float(t), direction=">")
        assert (e.ci_low > t) == (e.p_value < 0.025), t
        e = ratio_estimate(num, gap, threshold=float(t), direction="<")
        assert (e.ci_high < t) == (e.p_value < 0.025), t
    flat = ratio_estimate(num, rng.normal(0.0, 0.2, 64), threshold=0.75, direction="<")
    assert flat.method == "fieller-unbounded" and flat.ci_low == -np.inf and flat.ci_high == np.inf
    r = evaluate_claim("c", metric="recovered", direction="<", threshold=0.75, ratio=True,
                       samples=(num, rng.normal(0.0, 0.2, 64)))
    assert r.verdict == "inconclusive" and "not significantly different from 0" in (r.reason or "")
    rec = r.to_record(nodeid="t")
    assert rec["ci_low"] is None and rec["ci_high"] is None  # JSON has no infinity
    zero = evaluate_claim("c", metric="recovered", direction="<", threshold=0.75, ratio=True,
                          samples=(num, np.tile([1.0, -1.0], 32)))  # a denominator that is exactly 0 on average
    assert zero.reason is not None and zero.to_record(nodeid="t")["estimate"] is None  # not a made-up 0


# ---- counts of items shown to move (stats.sign_fraction_estimate) ------------------------------

def test_sign_fraction_known_answer() -> None:
    """Five items over 20 units: three clearly negative, one clearly positive, one pure noise
    (never shown either way), one exactly zero everywhere (did not move: not counted)."""
    from mechtests.stats import sign_fraction_estimate

    rng = np.random.default_rng(1)
    noise = rng.normal(0, 1, 20)
    noise -= noise.mean() - 0.01  # mean +0.01: observed positive, far from shown
    x = np.column_stack([rng.normal(-5, 1, 20) for _ in range(3)] + [rng.normal(5, 1, 20), noise, np.zeros(20)])
    e = sign_fraction_estimate(x, confidence=0.95, threshold=0.5, direction=">")
    assert e.value == pytest.approx(3 / 5)  # 3 of the 5 that moved have a negative mean
    assert (e.ci_low, e.ci_high) == (pytest.approx(3 / 5), pytest.approx(4 / 5))  # the noise item: either way
    assert e.n == 20 and e.method == "holm-signs" and e.p_value < 0.025
    # "> 0.6" needs 4 items shown negative: only 3 are, so p is large and the claim is not decided
    assert sign_fraction_estimate(x, threshold=0.6, direction=">").p_value > 0.025
    nothing = sign_fraction_estimate(np.zeros((20, 3)), threshold=0.5, direction=">")
    assert np.isnan(nothing.value) and nothing.method == "no-items"


@settings(max_examples=60, deadline=None)
@given(st.integers(0, 2**32 - 1), st.floats(0.05, 0.95), st.sampled_from([">", "<"]), st.floats(0.8, 0.995))
def test_sign_fraction_p_value_agrees_with_its_interval(seed: int, threshold: float, direction: str,
                                                        confidence: float) -> None:
    from mechtests.claims import verdict_for
    from mechtests.stats import sign_fraction_estimate

    rng = np.random.default_rng(seed)
    n, d = int(rng.integers(5, 40)), int(rng.integers(1, 30))
    x = rng.normal(rng.normal(0, 1.5, d), 1.0, size=(n, d))
    e = sign_fraction_estimate(x, confidence=confidence, threshold=threshold, direction=direction)
    assert e.ci_low <= e.value <= e.ci_high
    assert (verdict_for(e, threshold, direction) == "pass") == (e.p_value < (1 - confidence) / 2)


def test_sign_fraction_never_passes_more_than_its_level_with_the_truth_at_the_threshold() -> None:
    """Half of 42 items truly negative (the bootstrap of the signs passed "> 0.5" here 51% of the
    time): with the truth at the threshold, a pass is a false pass; Holm keeps it below 2.5%."""
    from mechtests.stats import sign_fraction_estimate

    rng = np.random.default_rng(7)
    effects = np.concatenate([-rng.uniform(0.0, 0.6, 21), rng.uniform(0.0, 0.6, 21)])
    passes = sum(sign_fraction_estimate(rng.normal(effects, 1.0, size=(20, 42)), threshold=0.5,
                                        direction=">").p_value < 0.025 for _ in range(2000))
    assert passes / 2000 <= 0.025 + 0.01  # measured 0 of 2000: Holm's bound is conservative


@settings(max_examples=60, deadline=None)
@given(st.integers(0, 2**32 - 1), st.floats(-1.0, 1.0), st.sampled_from([">", "<"]), st.floats(0.8, 0.999))
def test_t_interval_agrees_with_its_p_value_and_with_scipy(seed: int, threshold: float, direction: str,
                                                           confidence: float) -> None:
    from mechtests.claims import verdict_for
    from mechtests.stats import mean_estimate

    x = np.random.default_rng(seed).normal(0.2, 1.0, int(np.random.default_rng(seed).integers(3, 80)))
    e = mean_estimate(x, confidence=confidence, threshold=threshold, direction=direction)
    lo, hi = sps.ttest_1samp(x, 0.0).confidence_interval(confidence)
    assert (e.ci_low, e.ci_high) == (pytest.approx(lo, rel=1e-9, abs=1e-12), pytest.approx(hi, rel=1e-9, abs=1e-12))
    assert (verdict_for(e, threshold, direction) == "pass") == (e.p_value < (1 - confidence) / 2)


def test_perplexity_increase_is_the_log_ratio_interval_mapped_to_the_ratio() -> None:
    """Known answer: equal token counts, so the interval is the t interval of the per-token NLL
    differences, mapped through exp(x) - 1; thresholds are mapped by log1p."""
    from mechtests.evaluator import PerplexityWindows

    rng = np.random.default_rng(2)
    tokens = np.full(16, 100.0)
    base = PerplexityWindows(rng.normal(300, 10, 16), tokens)
    tuned = PerplexityWindows(base.nll_sum + rng.normal(4, 2, 16), tokens)
    e = tuned.increase_over(base)(0.95, 0.10, "<")
    lo, hi = sps.ttest_1samp((tuned.nll_sum - base.nll_sum) / 100.0, 0.0).confidence_interval(0.95)
    assert e.value == pytest.approx(tuned.value / base.value - 1.0, rel=1e-12)
    assert (e.ci_low, e.ci_high) == (pytest.approx(np.expm1(lo), rel=1e-9), pytest.approx(np.expm1(hi), rel=1e-9))
    t_stat = ((tuned.nll_sum - base.nll_sum) / 100.0 - np.log1p(0.10)).mean()
    assert e.p_value < 0.025 and t_stat < 0
    with pytest.raises(UsageError, match="always > -1"):
        tuned.increase_over(base)(0.95, -1.0, "<")
    with pytest.raises(UsageError, match="same windows"):
        tuned.increase_over(PerplexityWindows(base.nll_sum, tokens + 1))


# ---- the bias allowance (plug_in): a bias-aware interval for cross-fitted statistics ----------

def _skewed_two_samples(seed: int = 4) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.exponential(1.0, 30), rng.exponential(1.5, 34)


def _mean_ratio(a: np.ndarray, b: np.ndarray, axis: int = -1) -> np.ndarray:
    return a.mean(axis=axis) / b.mean(axis=axis)


def test_plug_in_widens_the_interval_by_the_bootstraps_bias_estimate_exactly() -> None:
    a, b = _skewed_two_samples()
    plain = bootstrap_estimate((a, b), _mean_ratio, paired=False, n_resamples=999, seed=3)
    ref = sps.bootstrap((a, b), _mean_ratio, paired=False, n_resamples=999, method="BCa", rng=np.random.default_rng(3))
    plug_in = 0.9 * plain.value  # a plug-in estimate below the statistic's value
    bias = abs(float(np.mean(ref.bootstrap_distribution)) - plug_in)
    wide = bootstrap_estimate((a, b), _mean_ratio, paired=False, n_resamples=999, seed=3, plug_in=plug_in)
    assert wide.bias_allowance == pytest.approx(bias, rel=1e-12) and bias > 0.01
    assert wide.ci_low == pytest.approx(plain.ci_low - bias, rel=1e-12)
    assert wide.ci_high == pytest.approx(plain.ci_high + bias, rel=1e-12)
    assert (wide.value, wide.standard_error) == (plain.value, plain.standard_error)
    assert plain.bias_allowance == 0.0


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), offset=st.floats(-0.3, 0.3), position=st.floats(-1.5, 1.5),
       direction=st.sampled_from([">", "<"]), method=st.sampled_from(["BCa", "percentile"]))
def test_a_widened_interval_and_its_p_value_give_the_same_verdict(seed: int, offset: float, position: float,
                                                                 direction: str, method: str) -> None:
    """pass <=> p < alpha/2 still holds once the interval is widened: p tests the moved threshold."""
    from mechtests.claims import verdict_for

    a, b = _skewed_two_samples(seed % 1000)
    probe = bootstrap_estimate((a, b), _mean_ratio, paired=False, n_resamples=400, seed=1, method=method,  # type: ignore[arg-type]
                               plug_in=0.8 + offset)
    edge = probe.ci_low if direction == ">" else probe.ci_high
    t = edge + position * probe.standard_error
    if abs(t - edge) < 0.02 * (probe.ci_high - probe.ci_low):
        return  # within interpolation distance of a replicate: either answer is right
    e = bootstrap_estimate((a, b), _mean_ratio, paired=False, n_resamples=400, seed=1, method=method,  # type: ignore[arg-type]
                           plug_in=0.8 + offset, threshold=t, direction=direction)  # type: ignore[arg-type]
    assert (e.ci_low, e.ci_high) == (probe.ci_low, probe.ci_high)
    passed = verdict_for(e, t, direction) == "pass"  # type: ignore[arg-type]
    assert (e.p_value <= 0.025) if passed else (e.p_value >= 0.025)


def test_a_widened_within_claim_whose_band_closes_cannot_pass() -> None:
    a, b = _skewed_two_samples()
    e = bootstrap_estimate((a, b), _mean_ratio, paired=False, n_resamples=999, seed=3, plug_in=0.0,
                           threshold=(0.5, 0.6), direction="within")
    assert e.bias_allowance > 0.05  # a band 0.1 wide cannot hold an interval widened by more on each side
    assert e.p_value >= 0.5


def test_degenerate_samples_with_a_plug_in_get_the_gap_as_their_interval() -> None:
    x = np.full(12, 0.25)
    e = bootstrap_estimate((x,), np.mean, threshold=0.2, direction=">", plug_in=0.22)
    assert (e.method, e.bias_allowance) == ("degenerate", pytest.approx(0.03))
    assert (e.ci_low, e.ci_high) == (pytest.approx(0.22), pytest.approx(0.28))
    assert e.p_value == 0.0  # 0.25 clears 0.2 + 0.03
    assert bootstrap_estimate((x,), np.mean, threshold=0.24, direction=">", plug_in=0.22).p_value == 1.0


def test_plug_in_must_be_a_number_and_only_goes_with_a_bootstrap() -> None:
    x = np.random.default_rng(0).normal(size=30)
    with pytest.raises(NumericalError, match="plug_in"):
        bootstrap_estimate((x,), np.mean, n_resamples=400, plug_in=float("nan"))
    for wrong in (True, np.bool_(False), "0.5"):
        with pytest.raises(UsageError, match="plug_in"):
            bootstrap_estimate((x,), np.mean, n_resamples=400, plug_in=wrong)  # type: ignore[arg-type]
    for extra in ({"estimate": 0.3}, {"samples": (x, x + 1), "ratio": True},
                  {"samples": ((x > 0).astype(float),), "proportion": True}):
        with pytest.raises(UsageError, match="plug_in= widens a bootstrap interval"):
            evaluate_claim("c", metric="m", direction=">", threshold=0.0, plug_in=0.1, **extra)  # type: ignore[arg-type]
    r = evaluate_claim("c", metric="m", direction=">", threshold=-1.0, samples=(x,), n_resamples=400, plug_in=0.5)
    assert r.to_record(nodeid="t")["bias_allowance"] == r.estimate.bias_allowance > 0
    assert f"incl. ±{r.estimate.bias_allowance:.2g} for bias" in r.summary()
