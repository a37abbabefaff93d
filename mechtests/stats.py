"""Statistics behind every claim: seeded bootstrap estimates, test-inversion p-values, Holm.

An `Estimate` is a point value with a two-sided confidence interval. `bootstrap_estimate` gets
the interval from `scipy.stats.bootstrap` (BCa by default) and, when a threshold is given, the
one-sided p-value of "the claim is false" by inverting the *same* BCa interval: the p-value is
the one-sided level at which the interval's bound touches the threshold. So a claim passes
(the whole ``confidence`` interval on the claimed side) exactly when ``p < (1 - confidence) / 2``,
up to the interpolation between bootstrap replicates.

Example:
    >>> import numpy as np
    >>> x = np.random.default_rng(0).normal(1.0, 1.0, size=200)
    >>> est = bootstrap_estimate((x,), np.mean, confidence=0.95, n_resamples=999, seed=1,
    ...                          threshold=0.5, direction=">")
    >>> est.ci_low > 0.5 and est.p_value < 0.025
    True
"""

from __future__ import annotations

import inspect
import math
import numbers
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal, TypeVar

import numpy as np
from scipy import special, stats

from mechtests.errors import NumericalError, UsageError
from mechtests.thresholds import Direction, Threshold, satisfies

Statistic = Callable[..., float | np.ndarray]
#: ``(confidence, threshold, direction) -> Estimate``: an interval a claim computes itself.
Estimator = Callable[[float, Threshold, Direction], "Estimate"]


_F = TypeVar("_F", bound=Callable[..., object])


def cross_fitted(statistic: _F) -> _F:
    """Mark ``statistic`` as cross-fitted (items sorted on one part of the data, measured on the
    other): not its estimand's plug-in estimate, so a claim on it must give ``plug_in=`` for the
    bias allowance (`bootstrap_estimate`), and `claims.evaluate_claim` refuses it without one.

    Example:
        >>> is_cross_fitted(cross_fitted(lambda a, b: 0.0)), is_cross_fitted(np.mean)
        (True, False)
    """
    # on a function's own attributes, so a method marked in its class is marked on every bound copy
    statistic.__dict__["mechtests_cross_fitted"] = True
    return statistic


def is_cross_fitted(statistic: object) -> bool:
    """Whether `cross_fitted` marked ``statistic`` (or, for a bound method, its function)."""
    return bool(getattr(statistic, "mechtests_cross_fitted", False))


@dataclass(frozen=True)
class Estimate:
    """A point estimate with a two-sided confidence interval.

    Attributes:
        value: the statistic on the observed samples.
        ci_low, ci_high: bounds of the two-sided ``confidence`` interval.
        confidence: the interval's nominal coverage, in (0, 1).
        n: number of resampled units (prompts, blocks, ...); None for an exact quantity.
        p_value: one-sided p-value of "the claim is false" (None without a threshold, or exact).
        method: "BCa", "percentile", "degenerate" (no spread) or "exact".
        standard_error: bootstrap standard error (0 for exact/degenerate), None if unknown.
        bias_allowance: how far the interval was widened on each side for the estimator's bias
            (`bootstrap_estimate`'s ``plug_in``); 0 when it was not.
    """

    value: float
    ci_low: float
    ci_high: float
    confidence: float
    n: int | None
    p_value: float | None = None
    method: str = "exact"
    standard_error: float | None = None
    p_bound: bool = False  # p_value is only an upper bound (the threshold lies beyond every resample)
    bias_allowance: float = 0.0

    @classmethod
    def exact(cls, value: float, *, confidence: float = 0.95) -> Estimate:
        """An exactly known quantity (an identity, a weight statistic): a zero-width interval.

        Example:
            >>> Estimate.exact(0.3).ci_high
            0.3
        """
        value = _finite_float(value, "estimate")
        return cls(value, value, value, confidence, None, None, "exact", 0.0)


def _finite_float(value: object, what: str) -> float:
    try:
        out = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError) as exc:
        raise UsageError(f"{what} must be a number, got {value!r}. Fix: pass a float.") from exc
    if not math.isfinite(out):
        raise NumericalError(
            f"{what} is {out}: a NaN/inf result makes the claim meaningless. "
            "Fix: check the computation feeding it (empty prompt set, division by zero, overflow)."
        )
    return out


def validate_confidence(confidence: float) -> float:
    """Return ``confidence`` as float, or raise UsageError unless it lies strictly in (0, 1)."""
    try:
        c = float(confidence)
    except (TypeError, ValueError) as exc:
        raise UsageError(f"confidence must be a number in (0, 1), got {confidence!r}.") from exc
    if not 0.0 < c < 1.0:
        raise UsageError(f"confidence must lie strictly between 0 and 1, got {c}. Fix: e.g. 0.95.")
    return c


def _validate_samples(samples: Sequence[object] | np.ndarray, paired: bool) -> tuple[np.ndarray, ...]:
    """All input checks in one place (scipy's _resampling style)."""
    if isinstance(samples, np.ndarray):
        samples = (samples,)
    if len(samples) == 0:
        raise UsageError("samples is empty. Fix: pass a tuple of 1-D arrays, e.g. samples=(x,).")
    out = []
    for i, s in enumerate(samples):
        try:
            a = np.asarray(s, dtype=np.float64)
        except (TypeError, ValueError) as exc:
            raise UsageError(f"samples[{i}] is not numeric: {exc}. Fix: pass float arrays.") from exc
        if a.ndim != 1:
            raise UsageError(f"samples[{i}] must be 1-D (one value per prompt), got shape {a.shape}.")
        if a.size < 2:
            raise UsageError(
                f"samples[{i}] has {a.size} value(s); a bootstrap needs at least 2. "
                "Fix: use more prompts, or pass estimate= for an exact quantity."
            )
        bad = np.flatnonzero(~np.isfinite(a))
        if bad.size:
            raise NumericalError(
                f"samples[{i}] contains {bad.size} non-finite value(s) (first at index {bad[0]}: "
                f"{a[bad[0]]}). NaN/inf per-prompt results make every statistic meaningless. "
                "Fix: find why that prompt's metric is undefined (empty continuation, zero tokens)."
            )
        out.append(a)
    if paired and len({a.size for a in out}) > 1:
        raise UsageError(
            f"paired samples must have equal lengths, got {[a.size for a in out]}. "
            "Fix: pass per-prompt values for the same prompts, or paired=False."
        )
    return tuple(out)


def _is_vectorized(statistic: Statistic) -> bool:
    # scipy's own rule: a statistic that accepts ``axis`` is called on whole batches.
    try:
        return "axis" in inspect.signature(statistic).parameters
    except (TypeError, ValueError):
        return False


def _call(statistic: Statistic, arrays: Sequence[np.ndarray], vectorized: bool) -> np.ndarray:
    """Evaluate ``statistic`` along the last axis of same-shaped ``arrays``."""
    if vectorized:
        return np.asarray(statistic(*arrays, axis=-1), dtype=np.float64)
    lead = arrays[0].shape[:-1]
    flat = [a.reshape(-1, a.shape[-1]) for a in arrays]
    vals = [float(statistic(*(f[i] for f in flat))) for i in range(flat[0].shape[0])]
    return np.asarray(vals, dtype=np.float64).reshape(lead)


def _acceleration(
    samples: tuple[np.ndarray, ...], statistic: Statistic, paired: bool, vectorized: bool
) -> float:
    """BCa acceleration from the jackknife, summed over samples exactly as scipy does."""
    groups: list[np.ndarray] = []
    if paired:
        n = samples[0].size
        keep = ~np.eye(n, dtype=bool)
        loo = [np.broadcast_to(s, (n, n))[keep].reshape(n, n - 1) for s in samples]
        groups.append(_call(statistic, loo, vectorized))
    else:
        for j, s in enumerate(samples):
            n = s.size
            keep = ~np.eye(n, dtype=bool)
            arrays = []
            for k, other in enumerate(samples):
                if k == j:
                    arrays.append(np.broadcast_to(s, (n, n))[keep].reshape(n, n - 1))
                else:
                    arrays.append(np.broadcast_to(other, (n, other.size)))
            if vectorized:
                groups.append(np.asarray(statistic(*arrays, axis=-1), dtype=np.float64))
            else:
                groups.append(np.array([float(statistic(*(a[i] for a in arrays))) for i in range(n)]))
    num = den = 0.0
    for theta in groups:
        m = theta.size
        u = (m - 1) * (theta.mean() - theta)
        num += float(np.sum(u**3)) / m**3
        den += float(np.sum(u**2)) / m**2
    return 0.0 if den == 0.0 else num / (6.0 * den**1.5)


def _lower_tail_level(dist: np.ndarray, t: float, z0: float, a: float, method: str) -> float:
    """The one-sided level alpha at which the lower interval bound equals ``t``.

    Inverts ``alpha' = Phi(z0 + (z0 + z_alpha) / (1 - a (z0 + z_alpha)))`` (Efron & Tibshirani
    14.10) at ``alpha' = ecdf(t)``; percentile: ``alpha = ecdf(t)``.
    """
    b = dist.size
    q = float(np.count_nonzero(dist < t) + np.count_nonzero(dist <= t)) / (2.0 * b)
    if q <= 0.0 or q >= 1.0:
        # Beyond every replicate: the data bound the level by the resolution 0.5/B and say no
        # more; BCa's map would turn that bound into a number (0.021 seen) that looks like data.
        return 0.5 / b if q <= 0.0 else 1.0 - 0.5 / b
    if method != "BCa":
        return q
    w = float(special.ndtri(q)) - z0
    denom = 1.0 + a * w
    if denom <= 0.0:  # past the BCa map's range (huge acceleration): no finite level
        return 0.0 if w < 0 else 1.0
    return float(special.ndtr(w / denom - z0))


def one_sided_p(
    dist: np.ndarray, t: Threshold, direction: Direction, *, z0: float = 0.0, a: float = 0.0,
    method: str = "percentile",
) -> float:
    """p-value of "the claim is false" from a bootstrap distribution, by test inversion.

    Example:
        >>> one_sided_p(np.arange(100.0), 9.5, ">")  # 10% of the replicates lie below 9.5
        0.1
    """
    if direction == "within":
        lo, hi = t  # type: ignore[misc]
        return max(one_sided_p(dist, lo, ">", z0=z0, a=a, method=method),
                   one_sided_p(dist, hi, "<", z0=z0, a=a, method=method))
    level = _lower_tail_level(dist, float(t), z0, a, method)  # type: ignore[arg-type]
    return round(level if direction == ">" else 1.0 - level, 12)


def beyond_every_resample(dist: np.ndarray, t: Threshold, direction: Direction) -> bool:
    """Whether the threshold the p-value tests lies beyond every bootstrap replicate, so the p-value
    is only the bound ``0.5 / B`` (the resolution of B resamples), not an estimate.

    Example:
        >>> beyond_every_resample(np.arange(10.0), -1.0, ">"), beyond_every_resample(np.arange(10.0), 5.0, ">")
        (True, False)
    """
    if direction == "within":
        lo, hi = t  # type: ignore[misc]
        p_lo, p_hi = one_sided_p(dist, lo, ">"), one_sided_p(dist, hi, "<")
        return beyond_every_resample(dist, lo if p_lo >= p_hi else hi, ">" if p_lo >= p_hi else "<")
    t = float(t)  # type: ignore[arg-type]
    return bool(np.all(dist > t) or np.all(dist < t))


def _degenerate_p(value: float, t: Threshold | None, direction: Direction | None) -> float | None:
    if t is None or direction is None:
        return None
    ok = satisfies(value, t, direction)
    return 0.0 if ok else 1.0


def harder_threshold(t: Threshold, direction: Direction, allowance: float) -> Threshold:
    """The threshold an interval widened by ``allowance`` on each side is tested at unwidened:
    ``lo - w > t <=> lo > t + w`` (and the mirror for "<", both ends for "within").

    Example:
        >>> harder_threshold(0.5, ">", 0.125), harder_threshold(0.5, "<", 0.125)
        (0.625, 0.375)
        >>> harder_threshold((0.25, 0.75), "within", 0.125)
        (0.375, 0.625)
    """
    if allowance == 0.0:
        return t
    if direction == "within":
        a, b = t  # type: ignore[misc]
        return (a + allowance, b - allowance)
    return float(t) + allowance if direction == ">" else float(t) - allowance  # type: ignore[arg-type]


def bootstrap_estimate(
    samples: tuple[np.ndarray, ...] | np.ndarray,
    statistic: Statistic = np.mean,
    *,
    paired: bool = True,
    confidence: float = 0.95,
    n_resamples: int = 9999,
    seed: int = 0,
    threshold: Threshold | None = None,
    direction: Direction | None = None,
    method: Literal["BCa", "percentile"] = "BCa",
    plug_in: float | None = None,
) -> Estimate:
    """Seeded bootstrap estimate of ``statistic(*samples)`` with a two-sided CI (scipy).

    Args:
        samples: one 1-D float array per input (per-prompt values); a bare array is one sample.
        statistic: maps the samples to a number; if it accepts ``axis`` it is vectorized.
        paired: resample the same indices across samples (same prompts under two conditions).
        confidence: two-sided coverage of the interval.
        n_resamples: bootstrap replicates.
        seed: seed of the ``numpy.random.Generator`` driving the resampling.
        threshold, direction: when given, ``p_value`` is the one-sided p of "claim false".
        method: "BCa" (default; falls back to percentile when BCa is undefined) or "percentile".
        plug_in: for a statistic that is not the plug-in estimate of its estimand (a cross-fitted
            share: neurons sorted on one half, measured on the other), the plug-in value on all
            the samples, i.e. the estimand of the bootstrap's world. The interval is then widened
            on both sides by the bootstrap's estimate of the statistic's bias,
            ``|mean(replicates) - plug_in|`` (a bias-aware interval: docs/STATISTICS.md measures
            it), and the p-value tests the threshold moved by as much, so ``pass <=> p < alpha/2``
            still holds.

    Returns:
        Estimate with ``n`` = number of resampled units (paired: the samples' common length;
        unpaired: the sum of their lengths, e.g. the blocks of both halves of a cross-fit).

    Raises:
        NumericalError: NaN/inf in the samples or in the statistic's replicates.
        UsageError: malformed samples or options.

    Example:
        >>> est = bootstrap_estimate((np.array([1., 2., 3., 4.]),), np.mean, n_resamples=99)
        >>> est.value
        2.5
    """
    data = _validate_samples(samples, paired)
    confidence = validate_confidence(confidence)
    if int(n_resamples) < 1:
        raise UsageError(f"n_resamples must be >= 1, got {n_resamples}. Fix: e.g. 9999.")
    if method not in ("BCa", "percentile"):
        raise UsageError(f"unknown bootstrap method {method!r}; use 'BCa' or 'percentile'.")
    vectorized = _is_vectorized(statistic)
    value = _finite_float(_call(statistic, [d[None, :] for d in data], vectorized)[0]
                          if vectorized else statistic(*data), "the statistic on the observed samples")
    n = data[0].size if paired else sum(d.size for d in data)  # units resampled: strata add up
    if plug_in is not None and (isinstance(plug_in, (bool, np.bool_)) or not isinstance(plug_in, numbers.Real)):
        raise UsageError(f"plug_in must be the statistic's plug-in value (a number), got {plug_in!r}. "
                         "Fix: e.g. plug_in=attribution.plug_in_share(groups).")
    allowance_from = None if plug_in is None else _finite_float(plug_in, "plug_in (the plug-in estimate)")
    if all(np.ptp(d) == 0.0 for d in data):
        # No spread: every resample gives the same value; BCa would divide by zero.
        w = 0.0 if allowance_from is None else abs(value - allowance_from)
        tested = None if threshold is None or direction is None else harder_threshold(threshold, direction, w)
        return Estimate(value, value - w, value + w, confidence, n, _degenerate_p(value, tested, direction),
                        "degenerate", 0.0, bias_allowance=w)
    rng = np.random.default_rng(seed)
    with warnings.catch_warnings():
        # BCa on a statistic with a (near-)degenerate bootstrap distribution warns and
        # returns NaN bounds; we detect that below and fall back to the percentile interval.
        warnings.simplefilter("ignore", category=stats.DegenerateDataWarning)
        # ... and a 0/0 in its acceleration (all jackknife values equal) warns as RuntimeWarning;
        # a statistic that really is undefined shows up as NaN replicates, checked below.
        warnings.simplefilter("ignore", category=RuntimeWarning)
        res = stats.bootstrap(data, statistic, n_resamples=int(n_resamples), paired=paired,
                              vectorized=vectorized, confidence_level=confidence, method=method,
                              rng=rng)
    dist = np.asarray(res.bootstrap_distribution, dtype=np.float64)
    bad = int(np.count_nonzero(~np.isfinite(dist)))
    if bad:
        raise NumericalError(
            f"the statistic was NaN/inf on {bad} of {dist.size} bootstrap resamples "
            "(e.g. a ratio whose denominator is 0 on some resample). "
            "Fix: use more prompts or a statistic defined on every subsample."
        )
    low, high = float(res.confidence_interval.low), float(res.confidence_interval.high)
    used = method
    _, tie_counts = np.unique(dist, return_counts=True)
    if used == "BCa" and tie_counts.max() > (1.0 - confidence) * dist.size:
        # A discrete statistic (e.g. a fraction of 42 neurons) piles its replicates on a few
        # values; BCa's bias correction then maps both interval levels into one plateau and its
        # inverted p-value disagrees with the interval (seen: CI [0.548, 0.548] > 0.5 with
        # p = 0.59). The percentile interval and p are consistent by construction.
        used = "percentile"
        alpha = (1.0 - confidence) / 2.0
        low, high = (float(v) for v in np.percentile(dist, [100 * alpha, 100 * (1 - alpha)]))
    if np.ptp(dist) <= 1e-12 * max(1.0, abs(value)):
        # The samples vary but the statistic does not, up to rounding: a zero-width interval at
        # the replicates' value, and the percentile p that goes with it.
        low = high = float(dist[0])
        used = "percentile"
    elif not (math.isfinite(low) and math.isfinite(high)):
        alpha = (1.0 - confidence) / 2.0
        low, high = (float(v) for v in np.percentile(dist, [100 * alpha, 100 * (1 - alpha)]))
        used = "percentile"
    # Bias-aware widening: the bootstrap's own estimate of the statistic's bias, as an allowance
    # on both sides (correcting by it over-corrected: docs/STATISTICS.md).
    allowance = 0.0 if allowance_from is None else abs(float(dist.mean()) - allowance_from)
    low, high = min(low, high) - allowance, max(low, high) + allowance
    p = None
    if threshold is not None and direction is not None:
        z0 = a = 0.0
        if used == "BCa":
            frac = (np.count_nonzero(dist < value) + np.count_nonzero(dist <= value)) / (2.0 * dist.size)
            z0 = float(special.ndtri(frac))
            a = _acceleration(data, statistic, paired, vectorized)
        tested = harder_threshold(threshold, direction, allowance)
        p = one_sided_p(dist, tested, direction, z0=z0, a=a, method=used)
        bound = beyond_every_resample(dist, tested, direction) and p < 0.5
    else:
        bound = False
    return Estimate(value, low, high, confidence, n, p, used, float(res.standard_error), bound, allowance)


def _claim_p(p_at: Callable[[float, str], float], threshold: Threshold | None,
             direction: Direction | None) -> float | None:
    """The one-sided p of "the claim is false" from a test ``p_at(t, side)`` of "value > t" (side
    ``">"``) or "value < t" (``"<"``); ``within (lo, hi)`` needs both, so its p is the larger."""
    if threshold is None or direction is None:
        return None
    if direction == "within":
        lo, hi = threshold  # type: ignore[misc]
        return max(p_at(float(lo), ">"), p_at(float(hi), "<"))
    return p_at(float(threshold), direction)  # type: ignore[arg-type]


def proportion_estimate(successes: np.ndarray, *, confidence: float = 0.95, threshold: Threshold | None = None,
                        direction: Direction | None = None) -> Estimate:
    """An exact (Clopper-Pearson) estimate of a proportion from independent 0/1 outcomes.

    The interval is scipy's ``binomtest(...).proportion_ci(method="exact")``; the p-value of "the
    claim is false" is the exact one-sided binomial test at the threshold, which the interval
    inverts, so ``pass <=> p < (1 - confidence)/2`` holds exactly, and 40 of 40 correct gives an
    honest interval ([0.912, 1] at 95%) instead of a bootstrap's [1, 1].

    Example:
        >>> e = proportion_estimate(np.ones(40), threshold=0.85, direction=">")
        >>> round(e.ci_low, 3), e.ci_high, round(e.p_value, 4)
        (0.912, 1.0, 0.0015)
    """
    x = np.asarray(successes, dtype=np.float64).reshape(-1)
    if x.size == 0 or not np.all((x == 0) | (x == 1)):
        raise UsageError("a proportion needs 0/1 outcomes, one per independent item. Fix: pass the per-item "
                         "correct/incorrect array, or use the bootstrap (proportion=False).")
    confidence = validate_confidence(confidence)
    k, n = int(x.sum()), int(x.size)
    ci = stats.binomtest(k, n).proportion_ci(confidence_level=confidence, method="exact")
    p = None
    if threshold is not None and direction is not None:
        def tail(t: float, side: str) -> float:
            if not 0.0 < t < 1.0:  # a threshold outside (0, 1): the claim is decided by the data alone
                return 0.0 if (side == "greater") == (t <= 0.0) else 1.0
            return float(stats.binomtest(k, n, p=t, alternative=side).pvalue)

        if direction == ">":
            p = tail(float(threshold), "greater")  # type: ignore[arg-type]
        elif direction == "<":
            p = tail(float(threshold), "less")  # type: ignore[arg-type]
        else:
            lo, hi = threshold  # type: ignore[misc]
            p = max(tail(float(lo), "greater"), tail(float(hi), "less"))
    se = math.sqrt(max(k / n * (1 - k / n), 0.25 / n) / n)  # never 0: 40/40 still has uncertainty
    return Estimate(k / n, float(ci.low), float(ci.high), confidence, n, p, "exact-binomial", se)


def ratio_estimate(numerator: np.ndarray, denominator: np.ndarray, *, confidence: float = 0.95,
                   threshold: Threshold | None = None, direction: Direction | None = None) -> Estimate:
    """``mean(numerator) / mean(denominator)`` of paired per-unit values with Fieller's interval.

    Fieller's set ``{r : |N - r D| <= q sd(N_i - r D_i)/sqrt(n)}`` (q: Student's t quantile) keeps
    its coverage when the denominator is small, where a bootstrap of the ratio explodes or
    under-covers. When the denominator is not significantly different from 0 the set is
    unbounded: the estimate is then ``method="fieller-unbounded"`` with infinite bounds, and a
    claim on it is named undecidable. The p-value of "the claim is false" is the t test of
    ``N - t D = 0`` that the interval inverts, so ``pass <=> p < (1 - confidence)/2`` exactly.

    Example:
        >>> rng = np.random.default_rng(0)
        >>> d = rng.normal(0.3, 0.1, 64); n = 0.5 * d + rng.normal(0, 0.05, 64)
        >>> e = ratio_estimate(n, d, threshold=0.75, direction="<")
        >>> e.ci_low < 0.5 < e.ci_high < 0.75 and e.p_value < 0.025
        True
    """
    num = np.asarray(numerator, dtype=np.float64).reshape(-1)
    den = np.asarray(denominator, dtype=np.float64).reshape(-1)
    if num.size != den.size or num.size < 2:
        raise UsageError(f"a ratio needs paired numerator and denominator values of equal length >= 2, got "
                         f"{num.size} and {den.size}.")
    if not (np.all(np.isfinite(num)) and np.all(np.isfinite(den))):
        raise NumericalError("a ratio's per-unit values contain NaN/inf. Fix: find the unit whose metric is undefined.")
    confidence = validate_confidence(confidence)
    n = num.size
    mean_n, mean_d = float(num.mean()), float(den.mean())
    v_n, v_d = float(num.var(ddof=1)) / n, float(den.var(ddof=1)) / n
    cov = float(np.cov(num, den, ddof=1)[0, 1]) / n
    q = float(stats.t.ppf(1.0 - (1.0 - confidence) / 2.0, n - 1))
    a = mean_d**2 - q**2 * v_d
    b = -2.0 * (mean_n * mean_d - q**2 * cov)
    c = mean_n**2 - q**2 * v_n
    value = mean_n / mean_d if mean_d != 0 else float("nan")

    def p_at(t: float, side: str) -> float:
        # t test of N - t D = 0, oriented so that small p supports "ratio > t" (side ">")
        se = math.sqrt(max(v_n - 2.0 * t * cov + t * t * v_d, 0.0))
        z = (mean_n - t * mean_d) * (1.0 if mean_d > 0 else -1.0)
        if se == 0.0:
            return 0.0 if (z > 0) == (side == ">") and z != 0 else 1.0
        upper = float(stats.t.sf(z / se, n - 1))
        return upper if side == ">" else 1.0 - upper

    p = _claim_p(p_at, threshold, direction)
    if a <= 0.0 or not math.isfinite(value):
        return Estimate(value, -math.inf, math.inf, confidence, n, p, "fieller-unbounded", None)
    root = math.sqrt(max(b * b - 4.0 * a * c, 0.0))
    low, high = sorted(((-b - root) / (2.0 * a), (-b + root) / (2.0 * a)))
    se = (high - low) / (2.0 * q) if q > 0 else None
    return Estimate(value, low, high, confidence, n, p, "fieller", se)


#: Fewest resampled units (prompts, blocks, windows, items) a bootstrap verdict may rest on:
#: below this, percentile/BCa intervals cover far less than their nominal level.
MIN_UNITS = 10


def holm_rejections(p_values: np.ndarray, alpha: float) -> int:
    """How many of the hypotheses Holm's step-down procedure rejects at family-wise level ``alpha``
    (rejection: adjusted p < alpha). Valid under any dependence between the tests.

    Example:
        >>> holm_rejections(np.array([0.001, 0.03, 0.04]), 0.05)  # 0.003 < 0.05, then 2 * 0.03 = 0.06
        1
    """
    return int(np.count_nonzero(_holm_sorted(np.asarray(p_values, dtype=np.float64)) < alpha))


def _holm_sorted(p_values: np.ndarray) -> np.ndarray:
    """Holm-adjusted p-values in ascending order (monotone, capped at 1)."""
    m = p_values.size
    ordered = np.sort(p_values)
    return np.minimum(1.0, np.maximum.accumulate(ordered * (m - np.arange(m))))


def sign_fraction_estimate(values: np.ndarray, *, confidence: float = 0.95, threshold: Threshold | None = None,
                           direction: Direction | None = None) -> Estimate:
    """The fraction of items whose true mean is negative, from ``values[unit, item]``, with a
    simultaneous interval (e.g. "the fraction of the top-k toxic neurons whose activation drops",
    with per-block activation changes as ``values``).

    A fraction of signs of noisy means is a step function of the data: its bootstrap piles on a
    few values and gives zero-width intervals that pass by chance (measured: 51% false passes
    with the truth at the threshold). Here every item gets a one-sided t test over the units in
    each direction, and Holm's procedure at ``(1 - confidence) / 2`` per side counts the items
    *shown* negative (``L``) and *shown* positive (``P``): with probability at least
    ``confidence`` the true count of negative items lies in ``[L, D - P]`` whatever the
    dependence between items, so the interval is ``[L / D, 1 - P / D]``. The point value is the
    observed fraction of negative means. Items whose values are exactly 0 in every unit did not
    move and are not counted (no evidence either way; ``D`` counts the others). The p-value of
    "the claim is false" is the Holm-adjusted p of the count the threshold needs, so
    ``pass <=> p < (1 - confidence) / 2`` exactly.

    Example:
        >>> rng = np.random.default_rng(0)
        >>> x = np.column_stack([rng.normal(-1, 0.3, 20) for _ in range(8)] + [rng.normal(1, 0.3, 20)] * 2)
        >>> e = sign_fraction_estimate(x, threshold=0.5, direction=">")
        >>> e.value, e.ci_low, e.ci_high, e.p_value < 0.025
        (0.8, 0.8, 0.8, True)
    """
    x = np.asarray(values, dtype=np.float64)
    if x.ndim != 2 or x.shape[0] < 2:
        raise UsageError(f"a sign fraction needs values[unit, item] with at least 2 units, got shape {x.shape}.")
    if not np.all(np.isfinite(x)):
        raise NumericalError("the per-unit values contain NaN/inf. Fix: find the unit whose metric is undefined.")
    confidence = validate_confidence(confidence)
    n = x.shape[0]
    x = x[:, np.any(x != 0.0, axis=0)]
    d = x.shape[1]
    if d == 0:
        return Estimate(float("nan"), float("nan"), float("nan"), confidence, n, None, "no-items", None)
    mean = x.mean(axis=0)
    sd = x.std(axis=0, ddof=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        t = np.where(sd > 0, mean / (sd / math.sqrt(n)), np.sign(mean) * np.inf)
    p_negative = stats.t.cdf(t, n - 1)  # small when the item's mean is clearly below 0
    p_positive = stats.t.sf(t, n - 1)
    alpha = (1.0 - confidence) / 2.0
    low = holm_rejections(p_negative, alpha) / d
    high = (d - holm_rejections(p_positive, alpha)) / d
    value = float(np.count_nonzero(mean < 0)) / d

    def p_for(t_: float, side: str) -> float:
        # the fewest items shown negative (">": L / d > t_) or shown positive ("<": (d - P) / d < t_)
        # that decide the claim, found with the interval's own float expressions
        if side == ">":
            adjusted = _holm_sorted(p_negative)
            need = next((k for k in range(d + 1) if k / d > t_), None)
        else:
            adjusted = _holm_sorted(p_positive)
            need = next((k for k in range(d + 1) if (d - k) / d < t_), None)
        if need is None:
            return 1.0
        return 0.0 if need == 0 else float(adjusted[need - 1])

    p = _claim_p(p_for, threshold, direction)
    z = float(special.ndtri(1.0 - alpha))
    return Estimate(value, low, high, confidence, n, p, "holm-signs", (high - low) / (2.0 * z))


def mean_estimate(values: np.ndarray, *, confidence: float = 0.95, threshold: Threshold | None = None,
                  direction: Direction | None = None) -> Estimate:
    """The mean of independent per-unit values with Student's t interval and the t test it inverts
    (``pass <=> p < (1 - confidence) / 2`` exactly). For a plain mean of paired differences (an
    F1 change per item) it covers better than a bootstrap at tens of units, whose percentiles are
    too narrow by about ``sqrt((n - 1) / n)`` and the t quantile's excess over the normal one.

    Example:
        >>> e = mean_estimate(np.array([0.1, 0.3, 0.2, 0.4]), threshold=0.0, direction=">")
        >>> round(e.value, 3), round(e.ci_low, 3), round(e.ci_high, 3), e.p_value < 0.025
        (0.25, 0.045, 0.455, True)
    """
    x = np.asarray(values, dtype=np.float64).reshape(-1)
    if x.size < 2:
        raise UsageError(f"a mean's interval needs at least 2 values, got {x.size}.")
    if not np.all(np.isfinite(x)):
        raise NumericalError("the per-unit values contain NaN/inf. Fix: find the unit whose metric is undefined.")
    confidence = validate_confidence(confidence)
    n, mean = x.size, float(x.mean())
    se = float(x.std(ddof=1)) / math.sqrt(n)
    if se == 0.0:
        return Estimate(mean, mean, mean, confidence, n, _degenerate_p(mean, threshold, direction), "degenerate", 0.0)
    q = float(stats.t.ppf(1.0 - (1.0 - confidence) / 2.0, n - 1))

    def p_at(t_: float, side: str) -> float:
        upper = float(stats.t.sf((mean - t_) / se, n - 1))  # small when the mean is clearly above t_
        return upper if side == ">" else 1.0 - upper

    p = _claim_p(p_at, threshold, direction)
    return Estimate(mean, mean - q * se, mean + q * se, confidence, n, p, "t", se)


def transformed(est: Estimate, increasing: Callable[[float], float]) -> Estimate:
    """``est`` mapped through an increasing function (value, bounds, standard error by the
    derivative at the value); the p-value stays, as the claim's threshold is mapped the same way
    by whoever computed ``est``. E.g. a log perplexity ratio's interval -> the ratio minus 1.

    Example:
        >>> round(transformed(Estimate(0.0, -0.1, 0.1, 0.95, 10, 0.01, "t", 0.05), math.expm1).ci_high, 6)
        0.105171
    """
    value = increasing(est.value)
    step = 1e-6 * max(1.0, abs(est.value))
    slope = (increasing(est.value + step) - increasing(est.value - step)) / (2 * step)
    se = None if est.standard_error is None else abs(slope) * est.standard_error
    return Estimate(value, increasing(est.ci_low), increasing(est.ci_high), est.confidence, est.n, est.p_value,
                    est.method, se, est.p_bound)


def min_resamples(confidence: float) -> int:
    """Fewest bootstrap resamples a verdict at ``confidence`` may rest on: each tail beyond the
    interval must hold at least 10 replicates (so its bound is not one extreme draw), and never
    fewer than 400 in all.

    Example:
        >>> min_resamples(0.95), min_resamples(0.99)
        (400, 2000)
    """
    return max(400, math.ceil(20.0 / (1.0 - float(confidence)) - 1e-9))


def family_confidence(confidence: float, family_size: int) -> float:
    """The per-claim confidence that holds ``family_size`` claims' family-wise error at
    ``1 - confidence`` (Bonferroni: each interval at ``1 - (1 - confidence) / m``).

    Example:
        >>> family_confidence(0.95, 1), round(family_confidence(0.95, 10), 6)
        (0.95, 0.995)
    """
    return 1.0 - (1.0 - float(confidence)) / max(1, int(family_size))


def holm(p_values: Sequence[float | None]) -> list[float | None]:
    """Holm-Bonferroni adjusted p-values (step-down, monotone, capped at 1); None stays None.

    Example:
        >>> holm([0.01, 0.04, None, 0.03])
        [0.03, 0.06, None, 0.06]
    """
    idx = [i for i, p in enumerate(p_values) if p is not None]
    m = len(idx)
    out: list[float | None] = [None] * len(p_values)
    running = 0.0
    for rank, i in enumerate(sorted(idx, key=lambda k: (p_values[k], k))):
        p = float(p_values[i])  # type: ignore[arg-type]
        if not 0.0 <= p <= 1.0:
            raise NumericalError(f"p-value {p} at position {i} is outside [0, 1].")
        running = max(running, min(1.0, (m - rank) * p))
        out[i] = round(running, 12)
    return out


#: The power the suggested "n that would decide it" aims at.
DECISIVE_POWER = 0.8


def n_to_decide(est: Estimate, threshold: Threshold, direction: Direction, *,
                power: float = DECISIVE_POWER) -> int | None:
    """The sample size at which a fresh sample decides an inconclusive claim with probability
    about ``power``, at the observed effect and spread (in the estimate's own units).

    The half-width facing the threshold, ``h = z se`` at n, gives the standard error; the claim is
    decided with probability ``power`` once ``(z + z_power) se(n') <= gap`` with ``se`` shrinking
    like ``1/sqrt(n)``: ``n' = n ((h / z) (z + z_power) / gap)^2``. None when the estimate has no n,
    is a count of items shown to move (``holm-signs``: its bounds do not shrink like that),
    or lies within a quarter of a standard error of the threshold: the data cannot tell which side
    the truth is on, so no sample size can be promised.

    Example:
        >>> n_to_decide(Estimate(0.4, 0.2, 0.6, 0.95, 100), 0.3, ">")
        818
    """
    if est.n is None or est.method == "holm-signs":
        return None  # a count of items shown to move does not shrink like 1/sqrt(n)
    if direction == "within":
        # Only the bounds the interval still straddles need deciding.
        crossed = [b for b in threshold if est.ci_low <= b <= est.ci_high]  # type: ignore[union-attr]
        vals = [n_to_decide(est, b, ">" if b <= est.value else "<", power=power) for b in crossed]
        return None if not vals or None in vals else max(v for v in vals if v is not None)
    t = float(threshold)  # type: ignore[arg-type]
    gap = abs(est.value - t)
    half = (est.value - est.ci_low) if t <= est.value else (est.ci_high - est.value)
    z = float(special.ndtri(1.0 - (1.0 - est.confidence) / 2.0))
    se = half / z
    if half <= 0.0 or gap <= 0.25 * se:
        return None
    z_power = float(special.ndtri(power))
    return max(est.n + 1, math.ceil(est.n * (se * (z + z_power) / gap) ** 2))
