"""Exploration for issue 10: cross-fit variants of the group shares, with re-centred intervals.

The group-share claims sort neurons into groups on one half of the blocks and sum their reduction
on the other (`BlockAttribution.share`); on 64-256 prompts that estimate is biased by neurons whose
group is a coin flip, and BCa's bias constant, estimated from replicates that carry more of that
noise than the estimate, shifts the interval (docs/STATISTICS.md). This script measures three
estimators of all four shares at once, each with a percentile interval re-centred on the estimate
(replicate quantiles shifted so their median is the estimate):

- ``half``: the claims' estimator (sort on one half, sum on the other, both ways);
- ``3of4``: four folds, sort on three, sum on the fourth, every rotation;
- ``exlin``: ``T(3/4) - 0.5 (T(1/4) - T(3/4))``, a linear extrapolation over the sorting sample size;
- ``bc``: ``half`` corrected by the bootstrap's bias estimate, ``mean(T*) - T_plug-in`` (the plug-in,
  sorted and summed on all blocks, is the estimand of the bootstrap's world);
- ``allow``: ``half`` with its interval widened on each side by ``|mean(T*) - T_plug-in|`` (what the
  claims do: ``plug_in=``, `stats.bootstrap_estimate`).

Per replication: prompts drawn from the calibration population, 64 NeuronStats blocks, truth =
the population's shares; coverage of the 95% interval, one-sided false pass (interval wholly above /
below the truth) and the estimate's bias in SDs. Not used by any claim yet: an input for the next step.

    python -m benchmarks.crossfit_variants POPULATION.npz --resamples 400 --reps 300 --prompts 64 [--modes half,allow]
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from benchmarks.calibration import Population
from mechtests.effects import GROUP_NAMES, BlockAttribution
from mechtests.neurons import group_rule

MODES = ("half", "3of4", "exlin", "bc", "allow")


def _sums(attr: BlockAttribution, sort_rows: np.ndarray, measure_rows: np.ndarray) -> np.ndarray:
    """``[r, 4]`` reduction of each group, neurons sorted on ``sort_rows``' blocks, summed on ``measure_rows``'."""
    _, base, tuned = attr._means(sort_rows)
    red, _, _ = attr._means(measure_rows)
    masks = group_rule(attr.cosines, base, tuned)
    return np.stack([np.einsum("rn,rn->r", masks[g], red) for g in GROUP_NAMES], axis=-1)


def shares(attr: BlockAttribution, folds: list[np.ndarray], mode: str) -> np.ndarray:
    """``[r, 4]`` shares of the four groups from fold rows ``[r, m_j]`` (2 folds for ``half``, else 4)."""
    if mode in ("half", "bc", "allow"):
        s = _sums(attr, folds[0], folds[1]) + _sums(attr, folds[1], folds[0])
        return s / s.sum(-1, keepdims=True)
    s34, s14 = np.zeros((folds[0].shape[0], 4)), np.zeros((folds[0].shape[0], 4))
    for j in range(4):
        rest = np.concatenate([folds[i] for i in range(4) if i != j], axis=1)
        s34 += _sums(attr, rest, folds[j])
        if mode == "exlin":
            s14 += _sums(attr, folds[j], rest)
    t34 = s34 / s34.sum(-1, keepdims=True)
    return t34 if mode == "3of4" else t34 - 0.5 * (s14 / s14.sum(-1, keepdims=True) - t34)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("population")
    parser.add_argument("--resamples", type=int, default=400)
    parser.add_argument("--reps", type=int, default=300)
    parser.add_argument("--prompts", type=int, default=64)
    parser.add_argument("--seed", type=int, default=5)
    parser.add_argument("--modes", default=",".join(MODES), help=f"comma-separated, of {', '.join(MODES)}")
    args = parser.parse_args(argv)
    modes = args.modes.split(",")
    pop = Population.load(args.population)
    truth = pop.attribution().shares()
    t_vec = np.array([truth[g] for g in GROUP_NAMES])
    rng = np.random.default_rng(args.seed)
    tally = {m: np.zeros((4, 5)) for m in modes}  # covered, above, below, error, error^2
    started = time.perf_counter()
    for rep in range(args.reps):
        attr = pop.attribution(rng.integers(0, pop.n_prompts, args.prompts), 64)
        blocks = attr.blocks().astype(np.int64)
        plug_in = np.array([attr.plug_in_share((g,)) for g in GROUP_NAMES])
        for mode in modes:
            k = 4 if mode in ("3of4", "exlin") else 2
            folds = [blocks[j::k] for j in range(k)]
            resample = np.random.default_rng(rep)  # the same resamples for every mode of the same fold count
            est = shares(attr, [f[None, :] for f in folds], mode)[0]
            reps = shares(attr, [resample.choice(f, (args.resamples, f.size)) for f in folds], mode)
            q_lo, med, q_hi = np.quantile(reps, [0.025, 0.5, 0.975], axis=0)
            bias = reps.mean(axis=0) - plug_in  # the bootstrap's estimate of the estimator's bias
            allow = np.abs(bias) if mode == "allow" else 0.0
            if mode == "bc":
                est = est - bias
            lo, hi = est + q_lo - med - allow, est + q_hi - med + allow
            t = tally[mode]
            t[:, 0] += (lo <= t_vec) & (t_vec <= hi)
            t[:, 1] += lo > t_vec
            t[:, 2] += hi < t_vec
            t[:, 3] += est - t_vec
            t[:, 4] += (est - t_vec) ** 2
    print(f"prompts={args.prompts} reps={args.reps} resamples={args.resamples} "
          f"({time.perf_counter() - started:.0f} s)")
    for mode in modes:
        t = tally[mode] / args.reps
        sd = np.sqrt(t[:, 4] - t[:, 3] ** 2)
        print(f"  {mode:6s}", "  ".join(f"{g}: cov {t[i, 0]:.3f} above {t[i, 1]:.3f} below {t[i, 2]:.3f} "
                                          f"bias/sd {t[i, 3] / sd[i]:+.2f}" for i, g in enumerate(GROUP_NAMES)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
