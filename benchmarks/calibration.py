"""Calibration harness: do the reference claims' intervals and verdicts keep their promises?

For each claim family, prompts (windows, items) are drawn with replacement from a population
built from the default pair's own per-unit results (`benchmarks/calibration_population.py`:
all 1,199 challenge prompts, 1,014 perplexity windows, 1,000 F1 items), at the smoke and ci
sizes, and the claim is evaluated exactly as `hypotheses/` does (same statistic, same
`evaluate_claim`), with its threshold set at the population's true value. Then:

- **coverage**: how often the 95% interval contains the truth (target >= 93%);
- **false pass**: how often the claim passes although the truth sits exactly at the threshold
  (nominal 2.5%, target <= 3.5%);
- **family-wise false pass**: how often *any* claim of the suite passes in one replication
  (all thresholds at the truth, Bonferroni over the suite's 32 claims; target <= 7%).

Each family is also run with the estimator it had before issue 10 ("before" rows), so the table
shows what the change bought. Run (about 25 minutes on 2 CPU cores; `--reps` trades time for
precision, the binomial standard error of a 95% coverage at 400 reps is 1.1 points):

    MT_CALIBRATION_OUT=benchmarks/results/calibration-population.npz \\
        pytest benchmarks/calibration_population.py -p no:cacheprovider -q   # once, ~3 min
    python -m benchmarks.calibration benchmarks/results/calibration-population.npz \\
        --reps 400 --json benchmarks/results/calibration.json --markdown docs/STATISTICS.md

`tests/test_calibration.py` runs the same code at a few replications on a synthetic population.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mechtests.claims import evaluate_claim
from mechtests.config import N_BLOCKS
from mechtests.evaluator import GROUP_NAMES, BlockAttribution, PerplexityWindows, ratio, relative_reduction
from mechtests.neurons import group_rule
from mechtests.stats import mean_estimate

#: The suite's family size on the default pair (``config.family_size`` of its reports).
FAMILY_SIZE = 32
SIZES: dict[str, dict[str, int]] = {
    "smoke": {"prompts": 64, "windows": 16, "f1": 64, "probe": 256, "resamples": 1000},
    "ci": {"prompts": 256, "windows": 32, "f1": 256, "probe": 1000, "resamples": 2000},
}
BLOCKS_BEFORE = 20  # the NeuronStats blocks before issue 10 (now mechtests.config.N_BLOCKS)
CONFIDENCE = 0.95


@dataclass
class Population:
    """Per-unit results of the default pair (arrays named as the population file's keys)."""

    arrays: dict[str, np.ndarray]

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> Population:
        with np.load(path) as z:
            return cls({k: np.asarray(z[k]) for k in z.files})

    def __getitem__(self, key: str) -> np.ndarray:
        return self.arrays[key]

    @property
    def n_prompts(self) -> int:
        return int(self["base_sum"].shape[0])

    def attribution(self, prompts: np.ndarray | None = None, n_blocks: int = N_BLOCKS) -> BlockAttribution:
        """The `BlockAttribution` a run on these prompts would build (prompt j of the draw lands
        in block j % n_blocks, as in generation); all prompts in one block each when None."""
        if prompts is None:
            prompts, n_blocks = np.arange(self.n_prompts), self.n_prompts
        blocks = np.arange(len(prompts)) % n_blocks

        def summed(key: str) -> np.ndarray:
            out = np.zeros((n_blocks,) + self[key].shape[1:])
            np.add.at(out, blocks, self[key][prompts])
            return out

        return BlockAttribution(summed("base_sum"), summed("tuned_sum"), summed("base_count"), summed("tuned_count"),
                                self["cosines"], self["base_alignment"], self["tuned_alignment"],
                                int(self["n_layers"]), len(prompts))


@dataclass(frozen=True)
class Family:
    """One claim family: how the claim is evaluated on a draw, and its truth on the population."""

    name: str
    direction: str
    #: which units a draw takes: "attribution" (its prompts' blocks: 20 before issue 10, N_BLOCKS now),
    #: "prompts", "windows", "f1", "probe"
    source: str
    claim: Callable[[Any, dict[str, Any]], dict[str, Any]]  # (draw, sizes) -> evaluate_claim kwargs
    truth: Callable[[Population], float]
    before: bool = False  # the estimator used before issue 10


# ---------------------------------------------------------------------------- the families

def _share_truth(groups: tuple[str, ...]) -> Callable[[Population], float]:
    def truth(pop: Population) -> float:
        shares = pop.attribution().shares()
        return sum(shares[g] for g in groups)
    return truth


def _share_now(groups: tuple[str, ...]) -> Callable[[Any, dict[str, Any]], dict[str, Any]]:
    def claim(attr: BlockAttribution, sizes: dict[str, Any]) -> dict[str, Any]:
        return {"samples": attr.folds(), "paired": False, "statistic": attr.share(groups),
                "plug_in": attr.plug_in_share(groups)}
    return claim


def _regrouped_share(attr: BlockAttribution, groups: tuple[str, ...]) -> Callable[..., Any]:
    """The pre-issue-10 statistic: groups re-sorted on every resample from the same blocks."""
    def fn(red: np.ndarray, base: np.ndarray, tuned: np.ndarray) -> np.ndarray:
        masks = group_rule(attr.cosines, base, tuned)
        sums = {g: np.einsum("rn,rn->r", masks[g], red) for g in GROUP_NAMES}
        return ratio(sum(sums[g] for g in groups), sum(sums[g] for g in GROUP_NAMES))

    def statistic(blocks: np.ndarray, axis: int = -1) -> Any:
        return attr._batched(blocks, fn)
    return statistic


def _share_before(groups: tuple[str, ...]) -> Callable[[Any, dict[str, Any]], dict[str, Any]]:
    def claim(attr: BlockAttribution, sizes: dict[str, Any]) -> dict[str, Any]:
        return {"samples": (attr.blocks(),), "statistic": _regrouped_share(attr, groups)}
    return claim


def _top_mask(pop: Population, k: int) -> np.ndarray:
    order = np.argsort(-pop["cosines"], kind="stable")
    mask = np.zeros(pop["cosines"].size, dtype=bool)
    mask[order[:k]] = True
    return mask


def _dampened_truth(k: int) -> Callable[[Population], float]:
    def truth(pop: Population) -> float:
        base, tuned = pop.attribution().activations()
        mask = _top_mask(pop, k)
        return float(np.mean(tuned[mask] < base[mask]))
    return truth


def _dampened_now(k: int) -> Callable[[Any, dict[str, Any]], dict[str, Any]]:
    def claim(attr: BlockAttribution, sizes: dict[str, Any]) -> dict[str, Any]:
        return {"estimator": attr.fraction_dampened(sizes["masks"][k])}
    return claim


def _dampened_before(k: int) -> Callable[[Any, dict[str, Any]], dict[str, Any]]:
    def claim(attr: BlockAttribution, sizes: dict[str, Any]) -> dict[str, Any]:
        mask = sizes["masks"][k]

        def statistic(blocks: np.ndarray, axis: int = -1) -> Any:
            return attr._batched(blocks, lambda red, base, tuned: (tuned[:, mask] < base[:, mask]).mean(axis=-1))
        return {"samples": (attr.blocks(),), "statistic": statistic}
    return claim


def _toward_truth(pop: Population) -> float:
    return float(pop.attribution().fraction_toward_toxicity())


def _gross_truth(pop: Population) -> float:
    return float(pop.attribution().gross_ratio())


def _layer_truth(pop: Population) -> float:
    return float(pop.attribution().upper_half_share())


def _recovered_truth(condition: str) -> Callable[[Population], float]:
    def truth(pop: Population) -> float:
        base, tuned, cond = pop["tox_base"], pop["tox_tuned"], pop[condition]
        return float((base.mean() - cond.mean()) / (base.mean() - tuned.mean()))
    return truth


def _recovered_now(condition: str) -> Callable[[Any, dict[str, Any]], dict[str, Any]]:
    def claim(draw: dict[str, np.ndarray], sizes: dict[str, Any]) -> dict[str, Any]:
        base = draw["tox_base"]
        return {"samples": (base - draw[condition], base - draw["tox_tuned"]), "ratio": True}
    return claim


def _recovered_before(condition: str) -> Callable[[Any, dict[str, Any]], dict[str, Any]]:
    def claim(draw: dict[str, np.ndarray], sizes: dict[str, Any]) -> dict[str, Any]:
        def statistic(num: np.ndarray, den: np.ndarray, axis: int = -1) -> Any:
            return ratio(np.mean(num, axis=axis), np.mean(den, axis=axis))
        base = draw["tox_base"]
        return {"samples": (base - draw[condition], base - draw["tox_tuned"]), "statistic": statistic}
    return claim


def _ppl_increase(nll_b: np.ndarray, tok_b: np.ndarray, nll_t: np.ndarray, tok_t: np.ndarray, axis: int = -1) -> Any:
    return np.exp(np.sum(nll_t, axis=axis) / np.sum(tok_t, axis=axis)
                  - np.sum(nll_b, axis=axis) / np.sum(tok_b, axis=axis)) - 1.0


def _mean_difference(base: np.ndarray, tuned: np.ndarray, axis: int = -1) -> Any:
    return np.mean(tuned, axis=axis) - np.mean(base, axis=axis)


def _ppl_truth(pop: Population) -> float:
    return float(_ppl_increase(pop["ppl_base_nll"], pop["ppl_base_tokens"], pop["ppl_tuned_nll"],
                               pop["ppl_tuned_tokens"]))


def _ppl_now(d: dict[str, np.ndarray], sizes: dict[str, Any]) -> dict[str, Any]:
    base = PerplexityWindows(d["ppl_base_nll"], d["ppl_base_tokens"])
    return {"estimator": PerplexityWindows(d["ppl_tuned_nll"], d["ppl_tuned_tokens"]).increase_over(base)}


def _f1_truth(pop: Population) -> float:
    return float(pop["f1_tuned"].mean() - pop["f1_base"].mean())


PROBE_ACCURACY = 0.895  # the default pair's probe on its held-out data (smoke report)


def families() -> list[Family]:
    """Every sampled claim family of the reference suite, now and (where it changed) before."""
    out: list[Family] = []
    shares = [("tp_down_is_a_minority", "<", ("TP_down",))]
    shares += [(f"every_group_contributes[{g}]", ">", (g,)) for g in GROUP_NAMES]
    shares += [("anti_toxic_promotion_matters", ">", ("AP_up", "AN_up"))]
    for name, direction, groups in shares:
        out.append(Family(name, direction, "attribution", _share_now(groups), _share_truth(groups)))
        out.append(Family(name, direction, "attribution", _share_before(groups), _share_truth(groups), before=True))
    out += [
        Family("adjustments_are_noisy_gross", ">", "attribution",
               lambda a, s: {"samples": a.folds(), "paired": False, "statistic": a.crossfit_gross_ratio,
                             "plug_in": float(a.gross_ratio())},
               _gross_truth),
        Family("adjustments_are_noisy_gross", ">", "attribution",
               lambda a, s: {"samples": (a.blocks(),), "statistic": a.gross_ratio}, _gross_truth, before=True),
        Family("reduction_in_later_layers", ">", "attribution",
               lambda a, s: {"samples": a.layer_share_samples(), "ratio": True}, _layer_truth),
        Family("reduction_in_later_layers", ">", "attribution",
               lambda a, s: {"samples": (a.blocks(),), "statistic": a.upper_half_share}, _layer_truth, before=True),
        Family("adjustments_are_noisy_fraction", ">", "attribution",
               lambda a, s: {"estimator": a.toward_toxicity()}, _toward_truth),
        Family("adjustments_are_noisy_fraction", ">", "attribution",
               lambda a, s: {"samples": (a.blocks(),), "statistic": a.fraction_toward_toxicity}, _toward_truth,
               before=True),
    ]
    for label, k in (("128of98304", 5), ("1000of98304", 42), ("abs7", 7)):
        name = f"top_toxic_neurons_dampened[{label}]"
        out.append(Family(name, ">", "attribution", _dampened_now(k), _dampened_truth(k)))
        out.append(Family(name, ">", "attribution", _dampened_before(k), _dampened_truth(k), before=True))
    for name, direction, condition in (("zero_ablation_not_enough[1000of98304]", "<", "tox_ablated"),
                                       ("all_groups_patch_emulates_dpo", ">", "tox_patched")):
        out.append(Family(name, direction, "prompts", _recovered_now(condition), _recovered_truth(condition)))
        out.append(Family(name, direction, "prompts", _recovered_before(condition), _recovered_truth(condition),
                          before=True))
    out += [
        Family("dpo_reduces_toxicity", ">", "prompts",
               lambda d, s: {"samples": (d["tox_base"], d["tox_tuned"]), "statistic": relative_reduction},
               lambda p: float(relative_reduction(p["tox_base"], p["tox_tuned"]))),
        Family("dpo_perplexity_cost", "<", "windows", _ppl_now, _ppl_truth),
        Family("dpo_perplexity_cost", "<", "windows",
               lambda d, s: {"samples": (d["ppl_base_nll"], d["ppl_base_tokens"], d["ppl_tuned_nll"],
                                         d["ppl_tuned_tokens"]), "statistic": _ppl_increase}, _ppl_truth, before=True),
        Family("dpo_f1_cost", ">", "f1",
               lambda d, s: {"estimator": lambda c, t, r: mean_estimate(d["f1_tuned"] - d["f1_base"], confidence=c,
                                                                         threshold=t, direction=r)}, _f1_truth),
        Family("dpo_f1_cost", ">", "f1",
               lambda d, s: {"samples": (d["f1_base"], d["f1_tuned"]), "statistic": _mean_difference}, _f1_truth,
               before=True),
        Family("probe_separates_toxic_text", ">", "probe",
               lambda d, s: {"samples": (d["correct"],), "proportion": True}, lambda p: PROBE_ACCURACY),
    ]
    return out


# ---------------------------------------------------------------------------- the simulation

_SOURCE_KEYS = {"prompts": ("tox_base", "tox_tuned", "tox_ablated", "tox_patched"),
                "windows": ("ppl_base_nll", "ppl_base_tokens", "ppl_tuned_nll", "ppl_tuned_tokens"),
                "f1": ("f1_base", "f1_tuned")}
_SIZE_KEY = {"prompts": "prompts", "windows": "windows", "f1": "f1", "probe": "probe"}


def _draws(pop: Population, sizes: dict[str, int], rng: np.random.Generator) -> dict[str, Any]:
    """One replication's units: the same drawn prompts serve every prompt-based claim."""
    out: dict[str, Any] = {}
    for source, keys in _SOURCE_KEYS.items():
        n_pop = pop[keys[0]].shape[0]
        idx = rng.integers(0, n_pop, sizes[_SIZE_KEY[source]])
        out[source] = {k: pop[k][idx] for k in keys}
        if source == "prompts":
            out["attribution"] = pop.attribution(idx, min(N_BLOCKS, idx.size))
            out["attribution_before"] = pop.attribution(idx, min(BLOCKS_BEFORE, idx.size))
    out["probe"] = {"correct": (rng.random(sizes["probe"]) < PROBE_ACCURACY).astype(np.float64)}
    return out


def simulate(pop: Population, profile: str, reps: int, *, seed: int = 0, include_before: bool = True,
             select: Iterable[str] = (), progress: Callable[[str], None] | None = None) -> list[dict[str, Any]]:
    """Per family: coverage, false pass at the threshold and p-values, over ``reps`` replications;
    the last row is the family-wise false pass of the current estimators."""
    sizes: dict[str, Any] = dict(SIZES[profile])
    fams = [f for f in families() if (include_before or not f.before) and (not select or f.name in set(select))]
    sizes["masks"] = {k: _top_mask(pop, k) for k in (5, 7, 42)}
    truths = {(f.name, f.before): f.truth(pop) for f in fams}
    rng = np.random.default_rng(seed)
    tallies = {(f.name, f.before): {"covered": 0, "passed": 0, "decided": 0, "undecided": 0, "width": 0.0,
                                    "seconds": 0.0} for f in fams}
    any_pass = 0
    for rep in range(reps):
        draw = _draws(pop, sizes, rng)
        passed_now = False
        for fam in fams:
            t0 = time.perf_counter()
            source = f"{fam.source}_before" if fam.before and fam.source == "attribution" else fam.source
            kwargs = fam.claim(draw[source], sizes)
            truth = truths[(fam.name, fam.before)]
            result = evaluate_claim(fam.name.split("[")[0], metric="m", direction=fam.direction,  # type: ignore[arg-type]
                                    threshold=truth, confidence=CONFIDENCE, n_resamples=sizes["resamples"],
                                    seed=rep, **kwargs)
            e = result.estimate
            tally = tallies[(fam.name, fam.before)]
            tally["seconds"] += time.perf_counter() - t0
            if result.reason is not None:
                tally["undecided"] += 1
            tally["covered"] += int(e.ci_low <= truth <= e.ci_high)
            tally["passed"] += int(result.verdict == "pass")
            if math.isfinite(e.ci_high - e.ci_low):
                tally["width"] += e.ci_high - e.ci_low
            if not fam.before and e.p_value is not None and result.reason is None:
                # the family-wise decision: Bonferroni over the suite, p_adjusted < (1 - c) / 2
                passed_now |= FAMILY_SIZE * e.p_value < (1 - CONFIDENCE) / 2
        any_pass += int(passed_now)
        if progress is not None and (rep + 1) % max(1, reps // 10) == 0:
            progress(f"{profile}: {rep + 1}/{reps} replications")
    rows = []
    for fam in fams:
        t = tallies[(fam.name, fam.before)]
        rows.append({"claim": fam.name, "estimator": "before" if fam.before else "now", "profile": profile,
                     "direction": fam.direction, "truth": truths[(fam.name, fam.before)], "reps": reps,
                     "coverage": t["covered"] / reps, "false_pass": t["passed"] / reps,
                     "undecided": t["undecided"] / reps, "mean_width": t["width"] / reps,
                     "seconds_per_claim": t["seconds"] / reps})
    if select:
        return rows  # a family-wise rate needs every claim of the suite in each replication
    rows.append({"claim": "family-wise (any claim passes)", "estimator": "now", "profile": profile,
                 "direction": None, "truth": None, "reps": reps, "coverage": None,
                 "false_pass": any_pass / reps, "claims": sum(not f.before for f in fams),
                 "family_size": FAMILY_SIZE})
    return rows


def markdown_table(rows: list[dict[str, Any]]) -> str:
    """The table docs/STATISTICS.md shows: one line per claim, before -> now, per profile."""
    by_key: dict[tuple[str, str], dict[str, dict[str, Any]]] = {}
    for r in rows:
        by_key.setdefault((r["claim"], r["profile"]), {})[r["estimator"]] = r
    lines = ["| claim | profile | truth | coverage before → now | false pass before → now | undecided now |",
             "|---|---|---|---|---|---|"]

    def pct(v: float | None) -> str:
        return "–" if v is None else f"{100 * v:.1f}%"

    for (claim, profile), pair in by_key.items():
        now, before = pair.get("now", {}), pair.get("before")
        truth = "" if now.get("truth") is None else f"{now['truth']:.3g}"
        cov = pct(now.get("coverage")) if before is None else f"{pct(before['coverage'])} → {pct(now.get('coverage'))}"
        fp = pct(now.get("false_pass")) if before is None else f"{pct(before['false_pass'])} → {pct(now['false_pass'])}"
        lines.append(f"| {claim} | {profile} | {truth} | {cov} | {fp} | {pct(now.get('undecided'))} |")
    return "\n".join(lines)


TABLE_START, TABLE_END = "<!-- calibration table -->", "<!-- /calibration table -->"


def write_table(path: Path, table: str, note: str) -> None:
    """Put ``table`` (and how it was made) between the calibration markers of ``path``."""
    text = path.read_text(encoding="utf-8")
    if TABLE_START not in text or TABLE_END not in text:
        raise SystemExit(f"{path}: no {TABLE_START} ... {TABLE_END} markers to put the table between.")
    head, rest = text.split(TABLE_START, 1)
    _, tail = rest.split(TABLE_END, 1)
    path.write_text(f"{head}{TABLE_START}\n{table}\n\n_{note}._\n{TABLE_END}{tail}", encoding="utf-8")


def machine() -> dict[str, Any]:
    return {"python": platform.python_version(), "platform": platform.platform(), "cpus": os.cpu_count(),
            "numpy": np.__version__}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("population", nargs="?", help="the .npz written by benchmarks/calibration_population.py")
    parser.add_argument("--from-json", nargs="+", metavar="FILE", help="render the table of earlier --json runs instead")
    parser.add_argument("--reps", type=int, default=400)
    parser.add_argument("--profiles", default="smoke,ci")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", help="write the rows (and the machine) to this file")
    parser.add_argument("--markdown", help="replace the table between the calibration markers of this file")
    parser.add_argument("--no-before", action="store_true", help="only the current estimators")
    parser.add_argument("--select", help="comma-separated claim names: only these (no family-wise row: that one "
                                         "needs the whole suite in each replication)")
    args = parser.parse_args(argv)
    if args.from_json:
        runs = [json.loads(Path(f).read_text()) for f in args.from_json]
        rows = [r for run in runs for r in run["rows"]]
        note = "; ".join(f"{run['profiles']}: {run['reps']} replications, seed {run['seed']}, "
                         f"{run['seconds'] / 60:.0f} min on {run['machine']['cpus']} CPU(s)"
                         + (f" ({len(run['select'].split(','))} claims)" if run.get("select") else "") for run in runs)
    else:
        if args.population is None:
            parser.error("give the population file (or --from-json)")
        pop = Population.load(args.population)
        rows = []
        t0 = time.perf_counter()
        for profile in args.profiles.split(","):
            rows += simulate(pop, profile, args.reps, seed=args.seed, include_before=not args.no_before,
                             select=args.select.split(",") if args.select else (),
                             progress=lambda m: print(m, file=sys.stderr, flush=True))
        elapsed = time.perf_counter() - t0
        note = (f"{args.profiles}: {args.reps} replications, seed {args.seed}, {elapsed / 60:.0f} min on "
                f"{machine()['cpus']} CPU(s)")
        if args.select:
            note += f" ({len(args.select.split(','))} claims)"
        if args.json:
            Path(args.json).parent.mkdir(parents=True, exist_ok=True)
            Path(args.json).write_text(json.dumps({"rows": rows, "machine": machine(), "seconds": elapsed,
                                                   "reps": args.reps, "seed": args.seed, "profiles": args.profiles,
                                                   "select": args.select},
                                                  indent=1) + "\n")
    table = markdown_table(rows)
    print(table)
    if args.markdown:
        write_table(Path(args.markdown), table, note)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
