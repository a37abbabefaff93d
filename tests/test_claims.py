"""mechtests.claims: verdict rules, threshold validation, the pure evaluate_claim API."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mechtests.claims import (
    Reference,
    claim_seed,
    evaluate_claim,
    validate_threshold,
    verdict_for,
)
from mechtests.errors import NumericalError, UsageError
from mechtests.report import CLAIM_KEYS
from mechtests.stats import Estimate


def _est(lo: float, hi: float) -> Estimate:
    return Estimate((lo + hi) / 2, lo, hi, 0.95, 50)


@pytest.mark.parametrize("lo, hi, direction, threshold, verdict", [
    (0.4, 0.6, ">", 0.3, "pass"),
    (0.1, 0.2, ">", 0.3, "fail"),
    (0.2, 0.4, ">", 0.3, "inconclusive"),
    (0.1, 0.3, ">", 0.3, "fail"),          # touching from below: cannot be above
    (0.3, 0.4, ">", 0.3, "inconclusive"),  # touching from above: not strictly above
    (0.1, 0.2, "<", 0.3, "pass"),
    (0.4, 0.6, "<", 0.3, "fail"),
    (0.2, 0.4, "<", 0.3, "inconclusive"),
    (0.4, 0.5, "within", (0.3, 0.6), "pass"),
    (0.7, 0.8, "within", (0.3, 0.6), "fail"),
    (0.1, 0.2, "within", (0.3, 0.6), "fail"),
    (0.5, 0.7, "within", (0.3, 0.6), "inconclusive"),
    (0.2, 0.7, "within", (0.3, 0.6), "inconclusive"),
])
def test_verdict_rules(lo: float, hi: float, direction: str, threshold: object, verdict: str) -> None:
    assert verdict_for(_est(lo, hi), threshold, direction) == verdict  # type: ignore[arg-type]


@settings(max_examples=100, deadline=None)
@given(a=st.floats(-10, 10), w=st.floats(0, 5), t=st.floats(-10, 10), direction=st.sampled_from([">", "<"]))
def test_verdict_property(a: float, w: float, t: float, direction: str) -> None:
    """pass <=> interval strictly on the claimed side; fail <=> wholly on the other side (or on t)."""
    est = _est(a, a + w)
    v = verdict_for(est, t, direction)  # type: ignore[arg-type]
    above, below = est.ci_low > t, est.ci_high < t
    claimed, other = (above, est.ci_high <= t) if direction == ">" else (below, est.ci_low >= t)
    assert (v == "pass") == claimed
    assert (v == "fail") == (other and not claimed)
    assert (v == "inconclusive") == (not claimed and not other)


@pytest.mark.parametrize("direction, threshold, match", [
    ("within", (0.6, 0.3), "impossible threshold"),
    ("within", (0.3, 0.3), "impossible threshold"),
    ("within", 0.3, "needs threshold=\\(low, high\\)"),
    (">", (0.1, 0.2), "needs one number"),
    (">", float("nan"), "not finite"),
    ("<", float("inf"), "not finite"),
    (">", "abc", "not a number"),
    ("=>", 0.3, "direction"),
])
def test_impossible_thresholds_are_usage_errors(direction: str, threshold: object, match: str) -> None:
    with pytest.raises(UsageError, match=match):
        validate_threshold(direction, threshold)
    with pytest.raises(UsageError, match=match):
        evaluate_claim("c", metric="m", direction=direction, threshold=threshold, estimate=0.5)  # type: ignore[arg-type]


_THRESHOLD_VALUES = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True), st.booleans(), st.text(max_size=4), st.none(),
    st.lists(st.one_of(st.floats(allow_nan=True), st.booleans(), st.text(max_size=3)), max_size=3),
)


@given(value=_THRESHOLD_VALUES, direction=st.sampled_from([">", "<", "within"]))
@settings(max_examples=300, deadline=None)
def test_one_threshold_rule_for_claims_and_overrides(value: object, direction: str) -> None:
    """An override in [tool.mechtests.thresholds] and a threshold given to claim() are read by the
    same rule: an override is accepted iff it is a valid threshold for some direction, and a claim's
    threshold iff it is valid for the claim's own direction (a number vs [low, high])."""
    from mechtests.config import parse_threshold

    def ok(fn: object, *args: object) -> object:
        try:
            return fn(*args)  # type: ignore[operator]
        except UsageError:
            return None

    as_override = ok(parse_threshold, value, "pyproject")
    as_claim = ok(validate_threshold, direction, value)
    if as_claim is not None:
        assert as_override == as_claim  # the same value, read the same way
    if as_override is not None:
        fits = isinstance(as_override, tuple) == (direction == "within")
        assert (as_claim is not None) == fits
    else:
        assert as_claim is None


def test_numpy_scalars_are_thresholds_and_booleans_are_not() -> None:
    assert validate_threshold(">", np.float32(0.25)) == 0.25 and validate_threshold("<", np.int64(2)) == 2.0
    assert validate_threshold("within", (np.float64(0.1), np.float32(0.5)))[0] == 0.1
    for flag in (True, np.True_):
        with pytest.raises(UsageError, match="not a number"):
            validate_threshold(">", flag)


def test_exact_estimate_and_precomputed_estimate() -> None:
    r = evaluate_claim("identity", metric="residual", direction="<", threshold=1e-4, estimate=3e-8)
    assert (r.verdict, r.estimate.method, r.estimate.n, r.estimate.p_value) == ("pass", "exact", None, None)
    e = Estimate(0.45, 0.2, 0.7, 0.9, 20, 0.3, "BCa")
    r = evaluate_claim("share", metric="TP share", direction="<", threshold=0.5, estimate=e)
    assert r.estimate is e and r.verdict == "inconclusive"


def test_inconclusive_reports_the_deciding_n() -> None:
    x = np.random.default_rng(4).normal(0.4, 0.5, 30)
    r = evaluate_claim("near", metric="m", direction=">", threshold=0.3, samples=(x,), n_resamples=500)
    assert r.verdict == "inconclusive"
    half = r.estimate.value - r.estimate.ci_low
    se = half / 1.959963984540054  # the 95% interval's half-width facing the threshold
    assert r.decisive_n == math.ceil(30 * (se * (1.959963984540054 + 0.8416212335729143) / (r.estimate.value - 0.3)) ** 2)
    assert f"about n={r.decisive_n} would decide it with 80% probability" in r.explanation()


def test_samples_or_estimate_exactly_one() -> None:
    with pytest.raises(UsageError, match="exactly one"):
        evaluate_claim("c", metric="m", direction=">", threshold=0.1)
    with pytest.raises(UsageError, match="exactly one"):
        evaluate_claim("c", metric="m", direction=">", threshold=0.1, samples=(np.ones(3),), estimate=1.0)
    with pytest.raises(UsageError, match="explicit statistic"):
        evaluate_claim("c", metric="m", direction=">", threshold=0.1, samples=(np.ones(3), np.ones(3)))


def test_nan_samples_raise_numerical_error() -> None:
    with pytest.raises(NumericalError, match="non-finite"):
        evaluate_claim("c", metric="m", direction=">", threshold=0.1, samples=(np.array([0.1, np.nan, 0.3]),))
    with pytest.raises(NumericalError, match="NaN"):
        evaluate_claim("c", metric="m", direction=">", threshold=0.1, estimate=float("nan"))


@pytest.mark.parametrize("name", ["", "has space", "1abc", None])
def test_bad_claim_names(name: object) -> None:
    with pytest.raises(UsageError, match="claim name"):
        evaluate_claim(name, metric="m", direction=">", threshold=0.1, estimate=1.0)  # type: ignore[arg-type]


def test_record_has_exactly_the_schema_keys_and_json_params() -> None:
    r = evaluate_claim("c", metric="m", direction="within", threshold=[0.1, 0.9], estimate=0.5,
                       params={"k": np.int64(7), "frac": np.float32(0.5)}, reference=("paper A", 0.54), pair="p")
    rec = r.to_record(nodeid="t.py::test[p]", outcome="passed", p_adjusted=None, seconds=0.1)
    assert tuple(rec) == CLAIM_KEYS
    assert rec["params"] == {"frac": 0.5, "k": 7}
    assert rec["threshold"] == [0.1, 0.9]
    assert rec["reference"] == {"source": "paper A", "value": 0.54}
    assert r.reference == Reference("paper A", 0.54)


def test_seeds_differ_per_claim_and_data_and_reproduce() -> None:
    x, y = (np.arange(5.0),), (np.arange(5.0) + 1,)
    assert claim_seed(0, "a", x) == claim_seed(0, "a", (np.arange(5.0),))
    seeds = {claim_seed(0, "a", x), claim_seed(1, "a", x), claim_seed(0, "b", x), claim_seed(0, "a", y),
             claim_seed(0, "a", (np.arange(5.0), np.arange(5.0)))}
    assert len(seeds) == 5
    x = np.random.default_rng(0).normal(size=40)
    one = evaluate_claim("a", metric="m", direction=">", threshold=0.0, samples=(x,), n_resamples=400, seed=1)
    two = evaluate_claim("a", metric="m", direction=">", threshold=0.0, samples=(x,), n_resamples=400, seed=1)
    assert one == two


def test_descriptive_params_do_not_move_the_interval() -> None:
    """The same data under other labels gave CI low 0.267 vs 0.293 when params were in the seed."""
    x = np.random.default_rng(4).normal(0.4, 0.3, size=64)
    a = evaluate_claim("c", metric="m", direction=">", threshold=0.3, samples=(x,), n_resamples=1000,
                       params={"k": "100of98304", "tox_ablated": 0.7548})
    b = evaluate_claim("c", metric="m", direction=">", threshold=0.3, samples=(x,), n_resamples=1000,
                       params={"k": "k100", "label": "other words"})
    assert (a.estimate.ci_low, a.estimate.ci_high, a.estimate.p_value) == (b.estimate.ci_low, b.estimate.ci_high,
                                                                           b.estimate.p_value)


def test_too_few_resamples_for_a_verdict_is_a_usage_error() -> None:
    x = np.random.default_rng(0).normal(size=40)
    with pytest.raises(UsageError, match=r"1 bootstrap resamples are too few for a verdict at confidence 0.95.*"
                                         r"n_resamples >= 400"):
        evaluate_claim("a", metric="m", direction=">", threshold=0.0, samples=(x,), n_resamples=1)
    with pytest.raises(UsageError, match="n_resamples >= 2000"):
        evaluate_claim("a", metric="m", direction=">", threshold=0.0, samples=(x,), n_resamples=1000, confidence=0.99)


@pytest.mark.parametrize("samples, reason", [
    ((np.array([0.9, 0.8, 0.95]),), "only 3 resampled units"),
    ((np.ones(40),), "all 40 units have the same value"),
    ((np.zeros(40), np.zeros(40)), "all 40 units have the same value"),
])
def test_degenerate_data_is_named_never_decided(samples: tuple[np.ndarray, ...], reason: str) -> None:
    """3 prompts, or 40 identical values, used to pass with CIs like [0, 0.8] or [1, 1]."""
    stat = None if len(samples) == 1 else (lambda a, b: float(np.mean(a) - np.mean(b)))
    r = evaluate_claim("d", metric="m", direction=">", threshold=-0.5, samples=samples, statistic=stat,
                       n_resamples=400)
    assert r.verdict == "inconclusive" and r.reason is not None and r.reason.startswith(reason)
    # two halves of 3 blocks (cross-fitted, unpaired): one block in a half cannot be resampled
    halves = evaluate_claim("d", metric="m", direction=">", threshold=-0.5, paired=False, n_resamples=400,
                            samples=(np.array([0.0, 2.0]), np.array([1.0])),
                            statistic=lambda a, b: float(np.mean(a) - np.mean(b)))
    assert halves.verdict == "inconclusive" and halves.reason.startswith("only 3 resampled units")
    assert r.verdict == "inconclusive" and r.reason is not None and r.reason.startswith(reason)
    assert r.decisive_n is None and f"undecided: {reason}" in r.explanation()
    assert r.to_record(nodeid="t")["reason"] == r.reason
    ok = evaluate_claim("d", metric="m", direction=">", threshold=-0.5,
                        samples=(np.random.default_rng(0).normal(0.5, 0.1, 12),), n_resamples=400)
    assert ok.verdict == "pass" and ok.reason is None


@pytest.mark.parametrize("direction, threshold, margin", [(">", 0.3, 0.2), ("<", 0.3, -0.2), ("within", (0.4, 0.7), 0.1)])
def test_margin_is_the_signed_effect_past_the_threshold(direction: str, threshold: object, margin: float) -> None:
    e = Estimate(0.5, 0.45, 0.55, 0.95, 30, 0.01, "BCa", 0.025)
    r = evaluate_claim("c", metric="m", direction=direction, threshold=threshold, estimate=e)  # type: ignore[arg-type]
    assert r.margin() == pytest.approx(margin)
    assert f"{margin / 0.025:+.2f} standard errors" in r.explanation()


def test_a_proportion_gets_an_exact_interval_consistent_with_its_p_value() -> None:
    """Probe accuracy 40/40 gave a bootstrap CI [1, 1] and p = 0: certainty from 40 items."""
    from scipy import stats as sps

    r = evaluate_claim("acc", metric="accuracy", direction=">", threshold=0.85, samples=(np.ones(40),), proportion=True)
    ci = sps.binomtest(40, 40).proportion_ci(0.95, method="exact")
    assert (r.estimate.ci_low, r.estimate.ci_high) == pytest.approx((ci.low, ci.high))
    assert r.estimate.ci_low == pytest.approx(0.9119, abs=1e-4) and r.verdict == "pass" and r.reason is None
    assert r.estimate.p_value == pytest.approx(0.85 ** 40)  # P(40 of 40 | p = 0.85), exact
    x = np.r_[np.ones(36), np.zeros(4)]  # 0.9 of 40: the interval [0.763, 0.972] contains 0.85
    r = evaluate_claim("acc", metric="accuracy", direction=">", threshold=0.85, samples=(x,), proportion=True)
    assert r.verdict == "inconclusive" and r.estimate.p_value > 0.025
    for t in np.linspace(0.05, 0.95, 19):  # pass <=> p < alpha/2, by construction
        r = evaluate_claim("acc", metric="accuracy", direction=">", threshold=float(t), samples=(x,), proportion=True)
        assert (r.verdict == "pass") == (r.estimate.p_value < 0.025)
    with pytest.raises(UsageError, match="0/1 outcomes"):
        evaluate_claim("acc", metric="accuracy", direction=">", threshold=0.5, samples=(np.full(20, 0.5),),
                       proportion=True)


def test_decisive_n_of_a_block_claim_is_in_prompts() -> None:
    """Block claims count blocks (always 20), which a user cannot change: the suggestion converts
    them to the prompts that would fill those blocks."""
    from mechtests.stats import n_to_decide

    x = np.random.default_rng(4).normal(0.4, 0.5, 20)  # 20 block means
    blocks = evaluate_claim("b", metric="m", direction=">", threshold=0.3, samples=(x,), n_resamples=500)
    prompts = evaluate_claim("b", metric="m", direction=">", threshold=0.3, samples=(x,), n_resamples=500,
                             unit_size=3.2)
    assert blocks.verdict == prompts.verdict == "inconclusive"
    in_blocks = n_to_decide(blocks.estimate, 0.3, ">")
    assert blocks.decisive_n == in_blocks and prompts.decisive_n == math.ceil(in_blocks * 3.2)
    assert f"about {prompts.decisive_n} prompts would decide it" in prompts.explanation()
    assert "now 64 prompts in 20 blocks" in prompts.explanation()
    with pytest.raises(UsageError, match="unit_size must be a positive number"):
        evaluate_claim("b", metric="m", direction=">", threshold=0.3, samples=(x,), n_resamples=500, unit_size=0)


def test_an_estimator_is_called_at_the_claims_confidence_and_decides_like_an_estimate() -> None:
    from mechtests.stats import sign_fraction_estimate

    x = np.column_stack([np.random.default_rng(i).normal(-3, 1, 20) for i in range(4)] + [np.tile([1.0, -1.0], 10)])
    asked: list[tuple[float, object, str]] = []

    def estimator(confidence: float, threshold: object, direction: str) -> Estimate:
        asked.append((confidence, threshold, direction))
        return sign_fraction_estimate(x, confidence=confidence, threshold=threshold, direction=direction)

    r = evaluate_claim("dampened", metric="fraction dampened", direction=">", threshold=0.5, estimator=estimator,
                       confidence=0.99, unit_size=3.2)
    assert asked == [(0.99, 0.5, ">")]
    assert r.verdict == "pass" and r.estimate.value == pytest.approx(0.8) and r.estimate.confidence == 0.99
    undecided = evaluate_claim("dampened", metric="m", direction=">", threshold=0.9, estimator=estimator)
    assert undecided.verdict == "inconclusive" and undecided.decisive_n is None
    assert "counts the items shown to move" in undecided.explanation()
    with pytest.raises(UsageError, match="not an Estimate"):
        evaluate_claim("bad", metric="m", direction=">", threshold=0.5, estimator=lambda c, t, d: 0.3)
    with pytest.raises(UsageError, match="when asked for 0.95"):
        evaluate_claim("bad", metric="m", direction=">", threshold=0.5,
                       estimator=lambda c, t, d: sign_fraction_estimate(x, confidence=0.9))
    with pytest.raises(UsageError, match="exactly one of"):
        evaluate_claim("bad", metric="m", direction=">", threshold=0.5, estimator=estimator, estimate=0.3)
    with pytest.raises(UsageError, match="computes its own interval"):
        evaluate_claim("bad", metric="m", direction=">", threshold=0.5, estimator=estimator, ratio=True)


def test_the_bootstrap_method_is_the_claims_choice() -> None:
    from mechtests.stats import bootstrap_estimate

    x = np.random.default_rng(4).gamma(2.0, 1.0, 40)
    r = evaluate_claim("m", metric="m", direction=">", threshold=1.0, samples=(x,), n_resamples=999, seed=3,
                       method="percentile")
    direct = bootstrap_estimate((x,), np.mean, n_resamples=999, seed=claim_seed(3, "m", (x,)), method="percentile",
                                threshold=1.0, direction=">")
    assert r.estimate.method == "percentile" and (r.estimate.ci_low, r.estimate.ci_high) == (direct.ci_low, direct.ci_high)
    with pytest.raises(UsageError, match="unknown bootstrap method"):
        evaluate_claim("m", metric="m", direction=">", threshold=1.0, samples=(x,), n_resamples=999, method="bca")
