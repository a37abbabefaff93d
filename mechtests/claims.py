"""Claims: a metric, a direction and a threshold held against an `Estimate` -> a verdict.

`evaluate_claim` is a pure function (no pytest): the plugin's ``claim`` fixture calls it with
the run's confidence, resamples and seed, then records and enforces the verdict. Verdict rules
(DESIGN.md "Verdicts"): **pass** when the whole confidence interval lies on the claimed side of
the threshold, **fail** when it lies wholly on the other side, **inconclusive** when it contains
the threshold; an inconclusive result says which n would decide it with 80% probability.

Example:
    >>> import numpy as np
    >>> x = np.random.default_rng(0).normal(0.5, 0.1, size=64)
    >>> r = evaluate_claim("mean_above", metric="mean score", direction=">", threshold=0.3,
    ...                    samples=(x,), n_resamples=999, seed=0)
    >>> r.verdict
    'pass'
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from mechtests.errors import UsageError
from mechtests.stats import (
    MIN_UNITS,
    Estimate,
    Estimator,
    Statistic,
    bootstrap_estimate,
    is_cross_fitted,
    min_resamples,
    n_to_decide,
    proportion_estimate,
    ratio_estimate,
    validate_confidence,
)
from mechtests.thresholds import Direction, Threshold, check_threshold, format_threshold

Verdict = Literal["pass", "fail", "inconclusive"]
_CLAIM_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_.-]*$")


@dataclass(frozen=True)
class Reference:
    """Where a claim's reference value comes from (e.g. ``Reference("A, Table 2", 0.54)``)."""

    source: str
    value: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"source": self.source, "value": self.value}


@dataclass(frozen=True)
class ClaimResult:
    """The outcome of one claim: its estimate, the verdict, and what would decide it."""

    name: str
    metric: str
    direction: Direction
    threshold: Threshold
    estimate: Estimate
    verdict: Verdict
    decisive_n: int | None = None
    pair: str | None = None
    params: Mapping[str, Any] = field(default_factory=dict)
    reference: Reference | None = None
    #: Why the data could not decide the claim whatever the interval says (too few units, no
    #: variation at all); None when the verdict follows the interval.
    reason: str | None = None
    #: Prompts one resampled unit stands for (a block of prompts); `decisive_n` is in prompts.
    unit_size: float = 1.0

    def summary(self) -> str:
        """One line: ``name [pair]: metric = v (95% CI lo to hi, n=N) > t -> verdict``."""
        e = self.estimate
        where = f" [{self.pair}]" if self.pair else ""
        ci = (f"{e.confidence * 100:.4g}% CI {e.ci_low:.4g} to {e.ci_high:.4g}" if e.method != "exact" else "exact")
        n = f", n={e.n}" if e.n is not None else ""
        p = (f", p<{e.p_value:.2g} (threshold beyond every resample)" if e.p_value is not None and e.p_bound
             else f", p={e.p_value:.3g}" if e.p_value is not None else "")
        if e.bias_allowance:
            ci += f" incl. ±{e.bias_allowance:.2g} for bias"
        return (f"{self.name}{where}: {self.metric} = {e.value:.4g} ({ci}{n}{p}) "
                f"{format_threshold(self.direction, self.threshold)} -> {self.verdict}")

    def margin(self) -> float | None:
        """How far the estimate lies past the threshold on the claimed side (negative: short of it).

        For ``within`` the distance to the nearer bound (positive inside the interval).
        """
        v, t = self.estimate.value, self.threshold
        if self.direction == ">":
            return v - float(t)  # type: ignore[arg-type]
        if self.direction == "<":
            return float(t) - v  # type: ignore[arg-type]
        lo, hi = t  # type: ignore[misc]
        return min(v - lo, hi - v)

    def explanation(self) -> str:
        """The summary plus why: which side of the threshold the interval lies on."""
        lines = [self.summary()]
        margin = self.margin()
        if margin is not None:
            se = self.estimate.standard_error
            scaled = f", {margin / se:+.2f} standard errors" if se else ""
            lines.append(f"margin past the threshold on the claimed side: {margin:+.4g}{scaled}.")
        if self.verdict == "fail":
            lines.append("the whole interval lies on the other side of the threshold: the claim is refuted.")
        elif self.verdict == "inconclusive" and self.reason is not None:
            lines.append(f"undecided: {self.reason}.")
        elif self.verdict == "inconclusive":
            lines.append("the interval contains the threshold: the data cannot decide the claim.")
            if self.decisive_n is not None and self.unit_size != 1.0:
                now = (self.estimate.n or 0) * self.unit_size
                lines.append(f"about {self.decisive_n} prompts would decide it with 80% probability at the observed "
                             f"effect and spread (now {now:g} prompts in {self.estimate.n} blocks).")
            elif self.decisive_n is not None:
                lines.append(f"about n={self.decisive_n} would decide it with 80% probability at the observed "
                             f"effect and spread (now n={self.estimate.n}).")
            elif self.estimate.method == "holm-signs":
                lines.append("no sample size can be promised to decide it: the interval counts the items shown to "
                             "move each way, and how many more prompts show depends on their effect sizes.")
            else:
                lines.append("no sample size can be promised to decide it: the estimate sits within noise of the "
                             "threshold.")
        if self.reference is not None:
            lines.append(f"reference: {self.reference.source}"
                         + (f" = {self.reference.value:.4g}" if self.reference.value is not None else ""))
        return "\n".join(lines)

    def to_record(self, *, nodeid: str, outcome: str | None = None, p_adjusted: float | None = None,
                  seconds: float | None = None) -> dict[str, Any]:
        """The claim's entry of the ``mechtests-report/2`` JSON report (every key present)."""
        e = self.estimate
        return {
            "nodeid": nodeid,
            "claim": self.name,
            "pair": self.pair,
            "params": dict(self.params),
            "metric": self.metric,
            "direction": self.direction,
            "threshold": list(self.threshold) if isinstance(self.threshold, tuple) else self.threshold,
            "estimate": e.value if math.isfinite(e.value) else None,  # JSON has no NaN: undefined
            "ci_low": e.ci_low if math.isfinite(e.ci_low) else None,  # JSON has no infinity: unbounded
            "ci_high": e.ci_high if math.isfinite(e.ci_high) else None,
            "confidence": e.confidence,
            "n": e.n,
            "p_value": e.p_value,
            "p_bound": e.p_bound,
            "bias_allowance": e.bias_allowance,
            "p_adjusted": p_adjusted,
            "verdict": self.verdict,
            "outcome": outcome,
            "reference": self.reference.to_dict() if self.reference is not None else None,
            "seconds": seconds,
            "decisive_n": self.decisive_n if self.verdict == "inconclusive" else None,
            "reason": self.reason,
        }


def validate_threshold(direction: str, threshold: Any, *, where: str = "claim") -> Threshold:
    """Check a direction/threshold pair (`thresholds.check_threshold`, the one rule); an impossible
    threshold is a `UsageError`.

    Example:
        >>> validate_threshold("within", [0.1, 0.2])
        (0.1, 0.2)
    """
    return check_threshold(threshold, direction, where=where)


def verdict_for(est: Estimate, threshold: Threshold, direction: Direction) -> Verdict:
    """Apply the verdict rules to an interval.

    Example:
        >>> verdict_for(Estimate(0.5, 0.4, 0.6, 0.95, 10), 0.45, ">")
        'inconclusive'
    """
    lo, hi = est.ci_low, est.ci_high
    if direction == ">":
        t = float(threshold)  # type: ignore[arg-type]
        return "pass" if lo > t else "fail" if hi <= t else "inconclusive"
    if direction == "<":
        t = float(threshold)  # type: ignore[arg-type]
        return "pass" if hi < t else "fail" if lo >= t else "inconclusive"
    a, b = threshold  # type: ignore[misc]
    if a < lo and hi < b:
        return "pass"
    if hi <= a or lo >= b:
        return "fail"
    return "inconclusive"


def undecidable(est: Estimate) -> str | None:
    """Why ``est`` cannot decide a claim whatever its interval says, or None.

    Too few resampled units (below `MIN_UNITS`: bootstrap intervals then cover far less than
    their level), or samples with no variation at all (a zero-width interval that only reflects
    that nothing varied, e.g. 40 of 40 items identical). Exact quantities are always decidable.

    Example:
        >>> undecidable(Estimate(0.5, 0.4, 0.6, 0.95, 3, 0.01, "BCa"))[:36]
        'only 3 resampled units (prompts, blo'
    """
    if est.n is None or est.method == "exact":
        return None
    if est.method == "fieller-unbounded":
        return ("the ratio's denominator (e.g. the reduction it is a fraction of) is not significantly different "
                "from 0 at this confidence, so the ratio's interval is unbounded: the claim is undefined")
    if est.n < MIN_UNITS:
        return (f"only {est.n} resampled units (prompts, blocks, windows or items); at least {MIN_UNITS} are needed "
                "for a bootstrap interval to hold its confidence level")
    if est.method == "degenerate":
        return (f"all {est.n} units have the same value, so the interval has zero width only because nothing "
                "varied: it says nothing about the uncertainty")
    return None


def canonical_params(params: Mapping[str, Any] | None) -> dict[str, Any]:
    """Params as JSON data (they go into the report and into seeds)."""
    if params is None:
        return {}
    if not isinstance(params, Mapping):
        raise UsageError(f"params must be a mapping, got {type(params).__name__}.")
    try:
        return json.loads(json.dumps(dict(params), sort_keys=True, default=_jsonable, allow_nan=False))
    except (TypeError, ValueError) as exc:
        raise UsageError(f"params must be JSON data (numbers, strings, lists, dicts): {exc}.") from exc


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, (np.integer, np.floating, np.bool_)):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if hasattr(obj, "key") and callable(obj.key):
        return obj.key()
    raise TypeError(f"{type(obj).__name__} is not JSON data")


def claim_seed(seed: int, name: str, samples: tuple[np.ndarray, ...]) -> int:
    """A per-claim seed from the run's seed, the claim's name and its data, nothing else.

    Descriptive ``params`` (labels, rounded means) are not part of it: relabelling a claim never
    changes its interval. The data's bytes are, so two parametrizations of one claim on different
    data resample independently; the pair's *name* is not, so a pair reached under another name
    (the default pair, or the same directories through --mt-base/--mt-tuned) gives the same
    report. Identical in serial and xdist runs.

    Example:
        >>> x = (np.arange(4.0),)
        >>> claim_seed(0, "a", x) == claim_seed(0, "a", (np.arange(4.0),)) != claim_seed(0, "b", x)
        True
    """
    digest = hashlib.sha256(json.dumps([int(seed), name]).encode())
    for a in samples:
        digest.update(str(a.shape).encode())
        digest.update(np.ascontiguousarray(a, dtype=np.float64).tobytes())
    return int.from_bytes(digest.digest()[:8], "little")


def _as_reference(reference: Any) -> Reference | None:
    if reference is None or isinstance(reference, Reference):
        return reference
    if isinstance(reference, Mapping):
        return Reference(str(reference["source"]), reference.get("value"))
    if isinstance(reference, tuple) and len(reference) == 2:
        return Reference(str(reference[0]), None if reference[1] is None else float(reference[1]))
    raise UsageError(f"reference must be Reference(source, value), got {reference!r}.")


def evaluate_claim(
    name: str,
    *,
    metric: str,
    direction: Direction,
    threshold: Threshold,
    samples: tuple[np.ndarray, ...] | np.ndarray | None = None,
    statistic: Statistic | None = None,
    estimate: Estimate | float | None = None,
    reference: Reference | tuple[str, float] | None = None,
    params: Mapping[str, Any] | None = None,
    pair: str | None = None,
    paired: bool = True,
    confidence: float = 0.95,
    n_resamples: int = 9999,
    seed: int = 0,
    proportion: bool = False,
    ratio: bool = False,
    unit_size: float = 1.0,
    estimator: Estimator | None = None,
    method: Literal["BCa", "percentile"] = "BCa",
    plug_in: float | None = None,
) -> ClaimResult:
    """Compute a claim's estimate and verdict (usable outside pytest).

    Give either per-prompt ``samples`` (with ``statistic``; default ``np.mean`` for one sample)
    or a precomputed ``estimate`` (an `Estimate`, or a number for an exact quantity). With
    ``proportion=True`` the one sample is independent 0/1 outcomes and the interval is exact
    (Clopper-Pearson, `stats.proportion_estimate`) instead of a bootstrap. ``unit_size``: the
    prompts one sample element stands for (a block of prompts), so ``decisive_n`` is in prompts.
    With ``ratio=True`` the samples are paired per-unit ``(numerator, denominator)`` values and
    the claim is on ``mean(numerator) / mean(denominator)`` with Fieller's interval
    (`stats.ratio_estimate`): honest when the denominator is small, and undecidable (named) when
    the denominator is not significantly different from 0. ``estimator``: a function
    ``(confidence, threshold, direction) -> Estimate`` for an interval no bootstrap gives well,
    called at the claim's (family-wise) confidence, e.g. `stats.sign_fraction_estimate` on a
    fraction of neurons whose activation drops (`BlockAttribution.fraction_dampened`).
    ``method``: the bootstrap interval, "BCa" (default) or "percentile" (docs/STATISTICS.md
    compares them on the cross-fitted shares). ``plug_in``: with a bootstrapped statistic that
    is not its estimand's plug-in estimate (a cross-fitted share), the plug-in value on all the
    samples: the interval is widened by the bootstrap's bias estimate (`stats.bootstrap_estimate`);
    a statistic marked `stats.cross_fitted` (`BlockAttribution.share`, `crossfit_gross_ratio`) is
    refused without it.

    Raises:
        UsageError: bad name/direction/threshold, both or neither of samples/estimate.
        NumericalError: NaN/inf in the samples or the statistic.

    Example:
        >>> evaluate_claim("identity", metric="residual", direction="<", threshold=1e-4,
        ...                estimate=2e-7).verdict
        'pass'
    """
    if not isinstance(name, str) or not _CLAIM_NAME.match(name):
        raise UsageError(f"claim name {name!r} must be an identifier-like string (letters, digits, _ . -).")
    where = f"claim {name!r}"
    threshold = validate_threshold(direction, threshold, where=where)
    confidence = validate_confidence(confidence)
    params_c = canonical_params(params)
    if sum(x is not None for x in (samples, estimate, estimator)) != 1:
        raise UsageError(f"{where}: give exactly one of samples=..., estimate=... or estimator=....")
    if plug_in is not None and (samples is None or proportion or ratio):
        raise UsageError(f"{where}: plug_in= widens a bootstrap interval by the bootstrap's bias estimate; give it "
                         "with samples= and a statistic, not with estimate=, estimator=, proportion= or ratio=.")
    if plug_in is None and statistic is not None and is_cross_fitted(statistic):
        raise UsageError(f"{where}: the statistic is cross-fitted (sorted on one half of the blocks, measured on the "
                         "other), so its bootstrap interval needs the bias allowance. Fix: pass its plug-in value on "
                         "all blocks, e.g. plug_in=attribution.plug_in_share(groups) with "
                         "statistic=attribution.share(groups), plug_in=attribution.gross_ratio() with "
                         "statistic=attribution.crossfit_gross_ratio (docs/STATISTICS.md).")
    if estimator is not None:
        if statistic is not None or proportion or ratio:
            raise UsageError(f"{where}: an estimator computes its own interval: drop statistic=, proportion= and "
                             "ratio=.")
        est = estimator(confidence, threshold, direction)
        if not isinstance(est, Estimate):
            raise UsageError(f"{where}: estimator returned {type(est).__name__}, not an Estimate.")
        if est.confidence != confidence:
            raise UsageError(f"{where}: estimator gave a {est.confidence:g} interval when asked for {confidence:g}. "
                             "Fix: build the Estimate at the confidence it is called with.")
    elif samples is not None:
        if isinstance(samples, np.ndarray) or (isinstance(samples, list) and samples
                                               and np.isscalar(samples[0])):
            samples = (np.asarray(samples),)
        fewest = min_resamples(confidence)
        if proportion and ratio:
            raise UsageError(f"{where}: give proportion=True or ratio=True, not both.")
        if ratio:
            if len(samples) != 2 or statistic is not None:
                raise UsageError(f"{where}: ratio=True takes samples=(numerator, denominator), per unit and paired, "
                                 "and no statistic.")
        elif statistic is None:
            if len(samples) != 1:
                raise UsageError(f"{where}: {len(samples)} samples need an explicit statistic=f(*samples).")
            statistic = np.mean
        if proportion:
            if len(samples) != 1 or statistic is not np.mean:
                raise UsageError(f"{where}: proportion=True takes one sample of 0/1 outcomes and no statistic.")
        elif not ratio and int(n_resamples) < fewest:
            raise UsageError(f"{where}: {n_resamples} bootstrap resamples are too few for a verdict at confidence "
                             f"{confidence:g}: each tail beyond the interval needs at least 10 replicates. Fix: "
                             f"n_resamples >= {fewest} (--mt-resamples; the profiles use 1000 / 2000 / 9999).")
        arrays = tuple(np.asarray(a, dtype=np.float64) for a in samples)
        units = arrays[0].size if paired or proportion or ratio else sum(a.size for a in arrays)
        if units < MIN_UNITS and min(a.size for a in arrays) < 2:
            # too little to resample at all (e.g. one block in a cross-fitted half): named below
            # as too few units, never an error and never decided
            est = Estimate(float("nan"), float("nan"), float("nan"), confidence, units, None, "too-few")
        elif proportion:
            est = proportion_estimate(arrays[0], confidence=confidence, threshold=threshold, direction=direction)
        elif ratio:
            est = ratio_estimate(arrays[0], arrays[1], confidence=confidence, threshold=threshold, direction=direction)
        else:
            assert statistic is not None  # np.mean when none was given, checked above
            est = bootstrap_estimate(arrays, statistic, paired=paired, confidence=confidence,
                                     n_resamples=n_resamples, seed=claim_seed(seed, name, arrays),
                                     threshold=threshold, direction=direction, method=method, plug_in=plug_in)
    elif isinstance(estimate, Estimate):
        est = estimate
    else:
        est = Estimate.exact(estimate, confidence=confidence)  # type: ignore[arg-type]
    verdict = verdict_for(est, threshold, direction)
    reason = undecidable(est)
    if reason is not None:
        verdict = "inconclusive"  # degenerate data is named, never decided
    if not (isinstance(unit_size, (int, float)) and math.isfinite(unit_size) and unit_size > 0):
        raise UsageError(f"{where}: unit_size must be a positive number of prompts per unit, got {unit_size!r}.")
    decisive = n_to_decide(est, threshold, direction) if verdict == "inconclusive" and reason is None else None
    if decisive is not None:
        decisive = math.ceil(decisive * float(unit_size))
    return ClaimResult(name, str(metric), direction, threshold, est, verdict, decisive, pair, params_c,
                       _as_reference(reference), reason, float(unit_size))
