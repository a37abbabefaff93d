"""Evaluator: one pass per condition, content-keyed caching, and block-bootstrap attribution.

Runs on a tiny random-init GPT-2 pair saved in Hugging Face format (mechtests.testing).
"""

from __future__ import annotations

import contextlib
import dataclasses
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from mechtests.claims import evaluate_claim
from mechtests.config import run_config
from mechtests.data import TextSet
from mechtests.errors import UsageError
from mechtests.evaluator import (
    GROUP_NAMES,
    BlockAttribution,
    Evaluator,
    PerplexityWindows,
    group_masks,
    recovered,
    relative_reduction,
)
from mechtests.storage import Cache

PROMPTS = ("the cat sat on", "you are a", "what a lovely", "go away you", "i think that", "hello there",
           "this is so", "never again will", "my friend said", "the weather is", "stop it now", "thank you for")


@dataclasses.dataclass(frozen=True)
class Data:
    """Same fields as zoo.EvalData."""

    challenge: TextSet
    probe_data: TextSet
    perplexity_text: str
    f1_sentences: TextSet


class VowelScorer:
    """A deterministic stand-in scorer: share of vowels in the text."""

    name = "vowels"

    def score(self, texts: Any) -> np.ndarray:
        return np.array([sum(c in "aeiou" for c in t) / max(len(t), 1) for t in texts], dtype=np.float64)


@dataclasses.dataclass(frozen=True, eq=False)
class Counting:
    """Wraps an intervention and counts how often it is entered (= passes run with it)."""

    inner: Any
    calls: list[str]

    def key(self) -> str:
        return f"counting({self.inner.key()})"

    @contextlib.contextmanager
    def applied(self, model: Any) -> Iterator[Any]:
        self.calls.append(model.source)
        with self.inner.applied(model):
            yield model


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> Any:
    from mechtests.models import load_pair
    from mechtests.testing import make_tiny_checkpoint, perturbed_copy

    root = tmp_path_factory.mktemp("pair")
    base = make_tiny_checkpoint(root / "base", n_layers=2, d_model=32, d_mlp=64, n_ctx=64, seed=0)
    tuned = perturbed_copy(base, root / "tuned", scale=0.05, seed=1)
    return load_pair(str(base), str(tuned), name="tiny")


@pytest.fixture(scope="module")
def probe() -> Any:
    from mechtests.probes import Probe

    return Probe(torch.randn(32, generator=torch.Generator().manual_seed(3)), 0.0)


def make_config(**over: Any) -> Any:
    values = dict(n_prompts=12, max_new_tokens=4, max_prompt_tokens=8, batch_size=5, n_blocks=4,
                  n_perplexity_windows=2, n_f1=6, n_resamples=200)
    values.update(over)
    return run_config("smoke", **values)


def make_evaluator(pair: Any, probe: Any, cache: Cache | None = None, **over: Any) -> Evaluator:
    text = " ".join(PROMPTS * 8)
    data = Data(TextSet("challenge", PROMPTS), TextSet("probe", PROMPTS[:4], (0, 1, 0, 1)), text,
                TextSet("f1", tuple(p + " and then some more words follow here" for p in PROMPTS)))
    return Evaluator(pair, probe=probe, scorer=VowelScorer(), data=data, config=make_config(**over), cache=cache)


def test_one_pass_serves_toxicity_and_neuron_stats(pair: Any, probe: Any) -> None:
    from mechtests.interventions import NoIntervention

    ev = make_evaluator(pair, probe)
    calls: list[str] = []
    iv = Counting(NoIntervention(), calls)
    tox = ev.toxicity("base", iv)
    stats = ev.neuron_stats("base", iv)
    act = ev.mean_activation("base", iv)
    again = ev.toxicity("base", iv)
    assert calls == [pair.base.source]
    assert tox.shape == (12,) and tox.dtype == np.float64
    np.testing.assert_array_equal(tox, again)
    assert stats.activation_sum.shape == (4, 2, 64)
    # 12 prompts x 4 steps spread over 4 blocks of 3 prompts
    torch.testing.assert_close(stats.count, torch.full((4,), 12.0, dtype=torch.float64))
    np.testing.assert_allclose(act, stats.mean_activation().numpy(), rtol=1e-12, atol=0)


def test_never_more_blocks_than_prompts(pair: Any, probe: Any) -> None:
    """3 prompts in 20 blocks left 17 empty blocks: 0/0 in every block statistic, counted as
    "not dampened" / "not reducing" (n=20 and CIs like [0, 0.8] on three prompts)."""
    ev = make_evaluator(pair, probe, n_prompts=3, n_blocks=20)
    assert ev.generation_config().n_blocks == 3
    stats = ev.neuron_stats("base")
    assert stats.activation_sum.shape[0] == 3 and bool((stats.count > 0).all())
    assert BlockAttribution.from_evaluator(ev).n_blocks == 3


def test_matches_a_direct_generation_pass(pair: Any, probe: Any) -> None:
    from mechtests.generation import generate
    from mechtests.metrics import toxicity_scores

    ev = make_evaluator(pair, probe)
    direct = generate(pair.tuned, ev.prompts, config=ev.generation_config(), collect_stats=True)
    assert ev.generation("tuned").continuations == direct.continuations
    np.testing.assert_allclose(ev.generation("tuned").activation_sum, direct.stats.activation_sum.numpy(),
                               rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(ev.toxicity("tuned"), toxicity_scores(direct.continuations, VowelScorer()),
                               rtol=0, atol=0)


def test_disk_cache_is_reused_across_sessions_and_keyed_by_content(pair: Any, probe: Any, tmp_path: Path) -> None:
    from mechtests.interventions import NoIntervention, ZeroAblation
    from mechtests.neurons import NeuronSet

    first_calls: list[str] = []
    first = make_evaluator(pair, probe, Cache(tmp_path))
    tox = first.toxicity("base", Counting(NoIntervention(), first_calls))
    ppl = first.perplexity("base")
    f1 = first.f1("tuned")
    assert len(first_calls) == 1

    calls: list[str] = []
    second = make_evaluator(pair, probe, Cache(tmp_path))  # a new session: empty memory, same disk
    np.testing.assert_array_equal(second.toxicity("base", Counting(NoIntervention(), calls)), tox)
    np.testing.assert_array_equal(second.perplexity("base").nll_sum, ppl.nll_sum)
    np.testing.assert_array_equal(second.f1("tuned"), f1)
    assert calls == []  # served from disk

    # another intervention, another prompt count, or the other model: recomputed
    ablate = Counting(ZeroAblation(NeuronSet.from_pairs([(0, 1), (1, 2)], n_layers=2, d_mlp=64)), calls)
    second.toxicity("base", ablate)
    second.toxicity("tuned", Counting(NoIntervention(), calls))
    make_evaluator(pair, probe, Cache(tmp_path), n_prompts=10).toxicity("base", Counting(NoIntervention(), calls))
    assert calls == [pair.base.source, pair.tuned.source, pair.base.source]


def test_intervention_changes_the_condition_and_leaves_the_model_intact(pair: Any, probe: Any) -> None:
    from mechtests.interventions import ZeroAblation
    from mechtests.neurons import NeuronSet

    ev = make_evaluator(pair, probe)
    every = NeuronSet.from_mask(torch.ones(2, 64, dtype=torch.bool))
    ablated = ev.mean_activation("base", ZeroAblation(every))
    np.testing.assert_array_equal(ablated, np.zeros((2, 64)))  # stats see the ablated activations
    fresh = make_evaluator(pair, probe)  # no memory: recomputed on the same model object
    np.testing.assert_allclose(fresh.mean_activation("base"), ev.mean_activation("base"), rtol=1e-12, atol=0)


def test_perplexity_and_f1_shapes(pair: Any, probe: Any) -> None:
    ev = make_evaluator(pair, probe)
    ppl = ev.perplexity("base")
    assert ppl.nll_sum.shape == ppl.n_tokens.shape and 1 <= ppl.n_tokens.size <= 2  # n_perplexity_windows=2
    assert ppl.value == pytest.approx(float(np.exp(ppl.nll_sum.sum() / ppl.n_tokens.sum())), rel=1e-12)
    assert ppl.value > 1.0
    f1 = ev.f1("base")
    assert f1.shape == (6,) and np.all((f1 >= 0) & (f1 <= 1))


def test_bad_role_and_empty_prompts(pair: Any, probe: Any) -> None:
    ev = make_evaluator(pair, probe)
    with pytest.raises(UsageError, match="role must be"):
        ev.toxicity("other")  # type: ignore[arg-type]
    data = Data(TextSet("challenge", ()), TextSet("probe", ("a", "b"), (0, 1)), "x", TextSet("f1", ("a",)))
    empty = Evaluator(pair, probe=probe, scorer=VowelScorer(), data=data, config=make_config(), cache=None)
    with pytest.raises(UsageError, match="empty"):  # on first use: data roles are read lazily
        empty.toxicity("base")


def test_block_attribution_matches_engine_attribution(pair: Any, probe: Any) -> None:
    from mechtests.attribution import group_attribution, neuron_projections

    ev = make_evaluator(pair, probe)
    attr = BlockAttribution.from_evaluator(ev)
    base_act = torch.from_numpy(ev.mean_activation("base"))
    tuned_act = torch.from_numpy(ev.mean_activation("tuned"))
    proj_b = neuron_projections(pair.base, probe, base_act)
    proj_t = neuron_projections(pair.tuned, probe, tuned_act)
    engine = group_attribution(ev.cosines(), base_act, tuned_act, proj_b, proj_t)
    red, _, _ = attr.reduction()
    np.testing.assert_allclose(red, engine.reduction.numpy().reshape(-1), rtol=1e-9, atol=1e-12)
    for g in GROUP_NAMES:
        assert attr.shares()[g] == pytest.approx(engine.shares[g], rel=1e-9, abs=1e-12)
    assert attr.fraction_toward_toxicity() == pytest.approx(engine.fraction_toward_toxicity, abs=1e-12)
    assert attr.gross_ratio() == pytest.approx(engine.gross_increase / engine.gross_decrease, rel=1e-9)


def hand_attribution() -> BlockAttribution:
    # 2 blocks, 2 layers x 2 neurons. Block sums / counts chosen so means are easy by hand.
    base_sum = np.array([[2.0, -2.0, 4.0, 0.0], [0.0, -2.0, 0.0, 2.0]])
    tuned_sum = np.array([[0.0, -4.0, 2.0, 2.0], [2.0, -4.0, 6.0, 4.0]])
    return BlockAttribution(base_sum, tuned_sum, np.array([1.0, 1.0]), np.array([1.0, 1.0]),
                            cosines=np.array([0.5, 0.5, -0.5, -0.5]), base_alignment=np.array([1.0, 1.0, -1.0, -1.0]),
                            tuned_alignment=np.array([1.0, 1.0, -1.0, -1.0]), n_layers=2)


def test_block_attribution_known_answer() -> None:
    attr = hand_attribution()
    base, tuned = attr.activations()
    np.testing.assert_allclose(base, [1.0, -2.0, 2.0, 1.0])
    np.testing.assert_allclose(tuned, [1.0, -4.0, 4.0, 3.0])
    red, _, _ = attr.reduction()
    # proj = act * alignment: base [1, -2, -2, -1], tuned [1, -4, -4, -3]
    np.testing.assert_allclose(red, [0.0, 2.0, 2.0, 2.0])
    # neuron 0: no change -> no group; 1: TN_down; 2: AP_up; 3: AN_up (base act 1 >= 0 -> AP_up!)
    sums = attr.group_sums()
    assert sums["TN_down"] == 2.0 and sums["AP_up"] == 4.0 and sums["AN_up"] == 0.0 and sums["TP_down"] == 0.0
    assert attr.shares() == pytest.approx({"TP_down": 0.0, "TN_down": 1 / 3, "AP_up": 2 / 3, "AN_up": 0.0})
    assert attr.plug_in_share(("TN_down", "AP_up")) == pytest.approx(1.0)
    assert attr.plug_in_share(("AP_up",)) == pytest.approx(2 / 3)
    # neuron 0 did not move: no evidence either way (it counted as 'toward toxicity' before)
    assert attr.fraction_toward_toxicity() == 0.0
    assert attr.upper_half_share() == pytest.approx(4 / 6)
    damp = attr.fraction_dampened(np.array([True, True, False, False]))(0.95, 0.5, ">")
    # changes tuned - base: neuron 0 [-2, +2] (mean 0), neuron 1 [-2, -2] (shown dampened)
    assert (damp.value, damp.ci_low, damp.ci_high, damp.method) == (0.5, 0.5, 1.0, "holm-signs")
    # resampling block 1 twice = block 1 alone
    b1, t1 = attr.activations(np.array([1.0, 1.0]))
    np.testing.assert_allclose(b1, [0.0, -2.0, 0.0, 2.0])
    np.testing.assert_allclose(t1, [2.0, -4.0, 6.0, 4.0])


def test_cross_fitted_statistics_known_answer() -> None:
    """Sorted on one half, summed on the other (by hand, 2 blocks: half A = block 0, B = block 1).

    Per-block reductions: block 0 [2, 2, -2, 2], block 1 [-2, 2, 6, 2]. Groups on block 0:
    TP_down, TN_down, AP_down (mirror), AP_up; on block 1: TP_up (mirror), TN_down, AP_up, AP_up.
    A's groups summed on B: TP_down -2, TN_down 2, AP_up 2 (total 2); B's on A: TN_down 2,
    AP_up -2 + 2 = 0 (total 2). A neuron sorted as dampened on one half that rises on the other
    counts against its group: TP_down's share is negative.
    """
    attr = hand_attribution()
    first, second = attr.folds()
    assert first.tolist() == [0.0] and second.tolist() == [1.0]
    shares = attr.crossfit_shares()
    assert shares == pytest.approx({"TP_down": -0.5, "TN_down": 1.0, "AP_up": 0.5, "AN_up": 0.0})
    assert attr.share(("TN_down", "AP_up"))(first, second) == pytest.approx(1.5)
    # increases decided on block 0 ({n2}) measured on block 1: -6; decreases: 2. Other way: -2, 2.
    assert attr.crossfit_gross_ratio() == pytest.approx((-6 - 2) / (2 + 2))
    upper, net = attr.layer_share_samples()
    np.testing.assert_allclose(upper, [0.0, 8.0])
    np.testing.assert_allclose(net, [4.0, 8.0])


def test_batched_block_statistics_equal_one_resample_at_a_time() -> None:
    """The statistics take whole batches of resamples (scipy's vectorized path); each row must
    equal the same resample computed alone, and share() the dict shares() the figures use."""
    rng = np.random.default_rng(5)
    n_blocks, L, d = 7, 2, 300
    attr = BlockAttribution(rng.normal(size=(n_blocks, L * d)), rng.normal(size=(n_blocks, L * d)),
                            rng.uniform(5, 10, n_blocks), rng.uniform(5, 10, n_blocks), cosines=rng.normal(size=L * d),
                            base_alignment=rng.normal(size=L * d), tuned_alignment=rng.normal(size=L * d), n_layers=L)
    resamples = rng.integers(0, n_blocks, size=(3, 5, n_blocks)).astype(np.float64)
    stats = {"toward": attr.fraction_toward_toxicity, "gross": attr.gross_ratio, "upper": attr.upper_half_share}
    for name, stat in stats.items():
        batch = stat(resamples, axis=-1)
        assert batch.shape == (3, 5), name
        for i in range(3):
            for j in range(5):
                assert batch[i, j] == pytest.approx(stat(resamples[i, j]), rel=1e-12, abs=1e-15), name
    # the cross-fitted ones take both halves' resamples (an unpaired bootstrap's batches)
    first, second = attr.folds()
    a = rng.choice(first, size=(3, 5, first.size))
    b = rng.choice(second, size=(3, 5, second.size))
    crossfit = {"share": attr.share(("TP_down", "AN_up")), "gross": attr.crossfit_gross_ratio}
    for name, stat in crossfit.items():
        batch = stat(a, b, axis=-1)
        assert batch.shape == (3, 5), name
        for i in range(3):
            for j in range(5):
                assert batch[i, j] == pytest.approx(stat(a[i, j], b[i, j]), rel=1e-12, abs=1e-15), name
    for i in range(3):
        shares = attr.crossfit_shares(a[i, 0], b[i, 0])
        assert crossfit["share"](a[i, 0], b[i, 0]) == pytest.approx(shares["TP_down"] + shares["AN_up"], rel=1e-9)


def test_a_share_claim_allows_for_the_cross_fits_bias() -> None:
    """With ``plug_in`` the share claim's interval is the plain bootstrap's widened by the bootstrap's
    bias estimate (replicates' mean minus the plug-in share), recorded in the report; a cross-fitted
    statistic without ``plug_in`` is refused, with the fix."""
    from mechtests.claims import claim_seed
    from mechtests.stats import bootstrap_estimate

    rng = np.random.default_rng(8)
    n_blocks, width = 40, 200
    drift = rng.normal(0.0, 0.3, width)  # many neurons barely move: their groups are coin flips
    base = rng.normal(1.0, 1.0, (n_blocks, width))
    attr = BlockAttribution(base, base + drift + rng.normal(0, 1.0, (n_blocks, width)), np.ones(n_blocks),
                            np.ones(n_blocks), cosines=rng.normal(size=width), base_alignment=rng.normal(size=width),
                            tuned_alignment=rng.normal(size=width), n_layers=2)
    folds, share = attr.folds(), attr.share(("TP_down",))
    kwargs = {"metric": "m", "direction": ">", "threshold": 0.0, "samples": folds, "paired": False,
              "statistic": share, "n_resamples": 999}
    for statistic, fix in ((share, "plug_in=attribution.plug_in_share"), (attr.crossfit_gross_ratio, "gross_ratio()")):
        with pytest.raises(UsageError, match=rf"cross-fitted.*{re.escape(fix)}"):
            evaluate_claim("every_group_contributes", **{**kwargs, "statistic": statistic})  # type: ignore[arg-type]
    wide = evaluate_claim("every_group_contributes", plug_in=attr.plug_in_share(("TP_down",)), **kwargs)  # type: ignore[arg-type]
    plain = bootstrap_estimate(folds, share, paired=False, n_resamples=999,
                               seed=claim_seed(0, "every_group_contributes", folds))
    w = wide.estimate.bias_allowance
    assert w > 0 and wide.to_record(nodeid="t")["bias_allowance"] == w
    assert wide.estimate.ci_low == pytest.approx(plain.ci_low - w, rel=1e-12)
    assert wide.estimate.ci_high == pytest.approx(plain.ci_high + w, rel=1e-12)
    assert wide.estimate.value == plain.value


def test_claim_statistics_known_answers() -> None:
    assert recovered(np.array([0.5, 0.7]), np.array([0.4, 0.6]), np.array([0.2, 0.4])) == pytest.approx(1 / 3)
    assert recovered(np.array([0.5]), np.array([0.2]), np.array([0.2])) == pytest.approx(1.0)
    assert np.isnan(recovered(np.array([0.3]), np.array([0.1]), np.array([0.3])))
    assert relative_reduction(np.array([0.4, 0.6]), np.array([0.2, 0.3])) == pytest.approx(0.5)
    assert PerplexityWindows(np.array([10.0, 12.0]), np.array([5.0, 5.0])).value == pytest.approx(np.exp(2.2))


@settings(max_examples=30, deadline=None)
@given(st.integers(0, 2**32 - 1), st.integers(1, 4), st.integers(1, 9))
def test_numpy_groups_equal_engine_groups(seed: int, n_layers: int, d_mlp: int) -> None:
    from mechtests.neurons import group_masks as torch_group_masks

    rng = np.random.default_rng(seed)
    # rounded values make ties (cos == 0, no change) frequent
    cos = rng.integers(-2, 3, (n_layers, d_mlp)).astype(np.float64)
    base = rng.integers(-2, 3, (n_layers, d_mlp)).astype(np.float64)
    tuned = base + rng.integers(-1, 2, (n_layers, d_mlp))
    mine = group_masks(cos, base, tuned)
    theirs = torch_group_masks(torch.from_numpy(cos), torch.from_numpy(base), torch.from_numpy(tuned))
    assert set(mine) == set(theirs)
    for name in mine:
        np.testing.assert_array_equal(mine[name], theirs[name].numpy(), err_msg=name)
    # every neuron is in at most one group
    assert int(sum(m.astype(int) for m in mine.values()).max()) <= 1


@settings(max_examples=20, deadline=None)
@given(st.integers(0, 2**32 - 1))
def test_shares_sum_to_one_and_resampling_all_blocks_once_is_the_point_estimate(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n_blocks, n = 5, 12
    attr = BlockAttribution(rng.normal(size=(n_blocks, n)), rng.normal(size=(n_blocks, n)),
                            rng.integers(1, 4, n_blocks).astype(float), rng.integers(1, 4, n_blocks).astype(float),
                            rng.normal(size=n), rng.normal(size=n), rng.normal(size=n), n_layers=3)
    shares = attr.shares()
    if sum(attr.group_sums()[g] for g in GROUP_NAMES) == 0.0:
        # every neuron in a mirror group or unmoved (seed 10628: 12 neurons): undefined, not 0/0 = 0
        assert all(np.isnan(v) for v in shares.values())
        return
    assert sum(shares.values()) == pytest.approx(1.0, abs=1e-9)
    perm = rng.permutation(n_blocks).astype(float)
    assert attr.shares(perm) == pytest.approx(shares, rel=1e-9, abs=1e-12)
    # the cross-fitted shares too; and they do not depend on the order within each half
    crossfit = attr.crossfit_shares()
    scale = max(1.0, *(abs(v) for v in crossfit.values()))  # a near-zero total makes shares large
    assert sum(crossfit.values()) == pytest.approx(1.0, abs=1e-9 * scale)
    first, second = attr.folds()
    assert attr.crossfit_shares(rng.permutation(first), rng.permutation(second)) == pytest.approx(
        crossfit, rel=1e-9, abs=1e-12)


def test_cached_pair_results_are_keyed_by_both_models_and_probe(pair: Any, probe: Any, tmp_path: Path) -> None:
    from mechtests.probes import Probe

    calls: list[int] = []

    def compute() -> dict[str, float]:
        calls.append(1)
        return {"value": 0.25}

    assert make_evaluator(pair, probe, Cache(tmp_path)).cached("thing", {"x": 1}, compute) == {"value": 0.25}
    assert make_evaluator(pair, probe, Cache(tmp_path)).cached("thing", {"x": 1}, compute) == {"value": 0.25}
    assert len(calls) == 1  # second session: from disk
    other_probe = Probe(probe.weight * -1.0, 0.0)
    make_evaluator(pair, other_probe, Cache(tmp_path)).cached("thing", {"x": 1}, compute)
    make_evaluator(pair, probe, Cache(tmp_path)).cached("thing", {"x": 2}, compute)
    assert len(calls) == 3


def _ablations(pair: Any) -> list[Any]:
    from mechtests.interventions import ScaleKeys, ZeroAblation
    from mechtests.neurons import NeuronSet

    scores = torch.randn(2, 64, generator=torch.Generator().manual_seed(5))
    return [ZeroAblation(NeuronSet.top_k(scores, 8)), ZeroAblation(NeuronSet.top_k(-scores, 8)),
            ScaleKeys(NeuronSet.top_k(scores, 3), 5.0)]


def test_prefetch_runs_a_models_conditions_together_with_the_results_of_each_alone(
        pair: Any, probe: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import mechtests.generation as generation
    from mechtests.interventions import PatchFromModel
    from mechtests.neurons import NeuronSet

    passes: list[int] = []  # conditions per generation pass
    real = generation.generate_many

    def counted(model: Any, prompts: Any, interventions: Any, **kw: Any) -> Any:
        passes.append(len(interventions))
        return real(model, prompts, interventions, **kw)

    monkeypatch.setattr(generation, "generate_many", counted)

    ivs = _ablations(pair)
    patch = PatchFromModel(NeuronSet.top_k(torch.ones(2, 64), 4), source=pair.tuned)
    conditions = [("base", None), *(("base", iv) for iv in ivs), ("base", patch), ("tuned", None), ("tuned", ivs[2])]
    cache = Cache(tmp_path / "cache")
    together = make_evaluator(pair, probe, cache, batch_size=64)
    together.prefetch(conditions)
    # base: 5 conditions (the lockstep patch among them) in one generation pass and one F1 pass;
    # tuned: 2 together
    assert sorted(passes) == [2, 2, 5, 5]
    assert cache.stats.computed == 4 * len(conditions)  # generation, toxicity, perplexity, f1: each entry once
    computed = cache.stats.computed
    alone = make_evaluator(pair, probe, None, batch_size=3)
    for role, iv in conditions:
        np.testing.assert_array_equal(together.toxicity(role, iv), alone.toxicity(role, iv))
        np.testing.assert_array_equal(together.f1(role, iv), alone.f1(role, iv))
        np.testing.assert_allclose(together.perplexity(role, iv).nll_sum, alone.perplexity(role, iv).nll_sum,
                                   rtol=1e-6)
        np.testing.assert_allclose(together.mean_activation(role, iv), alone.mean_activation(role, iv),
                                   rtol=1e-5, atol=1e-6)
    assert cache.stats.computed == computed  # everything above was a hit
    # another batch size, another session: the same cache entries (the batch size is not in a key)
    later = make_evaluator(pair, probe, Cache(tmp_path / "cache"), batch_size=7)
    later.prefetch(conditions)
    assert later.cache.stats.computed == 0 and later.cache.stats.disk_hits > 0
    with pytest.raises(UsageError, match="unknown metric"):
        later.prefetch(conditions, metrics=("toxicity", "accuracy"))


def test_the_interventions_table_holds_every_condition_served(pair: Any, probe: Any) -> None:
    from scipy import stats as sps

    class ByteScorer:  # varies on random-init output (the vowel share is 0 for every prompt there)
        name = "bytes"

        def score(self, texts: Any) -> np.ndarray:
            return np.array([sum(map(ord, t)) % 97 / 96 for t in texts], dtype=np.float64)

    ev = make_evaluator(pair, probe)
    ev.scorer = ByteScorer()
    zero = _ablations(pair)[0]
    tox = ev.toxicity("base")
    tox_zero = ev.toxicity("base", zero)
    windows = ev.perplexity("base")
    f1 = ev.f1("tuned")
    ev.label_condition("base", None, "base, untouched", paper={"toxicity": 0.4}, order=1)
    ev.labellers.append(lambda e: e.label_condition("tuned", None, "tuned, untouched", order=0))
    rows = {(r["model"], r["label"]): r for r in ev.conditions_table()}
    assert list(rows) == [("tuned", "tuned, untouched"), ("base", "base, untouched"),
                          ("base", "ZeroAblation(neurons=8)")]
    base = rows[("base", "base, untouched")]
    # known answer: Student's t interval of the per-prompt scores
    assert np.ptp(tox) > 0
    low, high = sps.t.interval(0.95, len(tox) - 1, loc=tox.mean(), scale=sps.sem(tox))
    assert base["toxicity"] == {"value": pytest.approx(tox.mean()), "ci_low": pytest.approx(low),
                                "ci_high": pytest.approx(high), "n": 12}
    assert base["paper"] == {"toxicity": 0.4} and base["f1"] is None
    assert base["perplexity"]["value"] == pytest.approx(windows.value) and base["perplexity"]["n"] == 2
    assert base["perplexity"]["ci_low"] < windows.value < base["perplexity"]["ci_high"]
    ablated = rows[("base", "ZeroAblation(neurons=8)")]
    assert ablated["params"] == {"neurons": 8} and ablated["intervention"] == "ZeroAblation"
    assert ablated["toxicity"]["value"] == pytest.approx(tox_zero.mean())
    if np.ptp(tox_zero) == 0:  # no variation: a value, and no interval claimed
        assert ablated["toxicity"]["ci_low"] is None and ablated["toxicity"]["ci_high"] is None
    assert rows[("tuned", "tuned, untouched")]["f1"]["value"] == pytest.approx(f1.mean())


def test_texts_the_two_tokenizers_split_otherwise_are_refused(tmp_path: Path, probe: Any) -> None:
    """Same vocabulary and start tokens, but the tuned tokenizer saved with ``add_prefix_space``: the
    pair would read the prompts, the perplexity text and the F1 texts as other ids. Each is refused
    on first use, naming the text and where the ids part; one tokenizer costs nothing."""
    from mechtests.errors import IncompatiblePairError
    from mechtests.models import load_pair
    from mechtests.testing import byte_tokenizer, make_tiny_checkpoint, perturbed_copy

    base = make_tiny_checkpoint(tmp_path / "base", n_ctx=64)
    tuned = perturbed_copy(base, tmp_path / "tuned", scale=0.01)
    spaced = byte_tokenizer()
    spaced.add_prefix_space = True  # saved to tokenizer_config.json: " hello" where the base reads "hello"
    spaced.save_pretrained(tuned)
    pair = load_pair(base, tuned)  # vocabulary and start tokens agree
    ev = make_evaluator(pair, probe)
    first = PROMPTS[0]
    with pytest.raises(IncompatiblePairError, match=rf"the tokenization of challenge prompt 0 \({first[:60]!r}\) from "
                                                    r"token 0 on: base has \[\d+(, \d+)*\], tuned has \[32(, \d+)*\]"):
        ev.prompts  # noqa: B018
    with pytest.raises(IncompatiblePairError, match="the tokenization of perplexity text 0"):
        ev.perplexity_text  # noqa: B018
    with pytest.raises(IncompatiblePairError, match="the tokenization of F1 text 0"):
        ev.f1_sentences  # noqa: B018
    same = load_pair(base, perturbed_copy(base, tmp_path / "twin", scale=0.01))
    assert make_evaluator(same, probe).prompts.texts == PROMPTS
