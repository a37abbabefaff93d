"""The calibration harness (benchmarks/calibration.py) on a synthetic population.

The published numbers (docs/STATISTICS.md) come from the default pair's population; here the
same code runs end to end on a small made-up one, and its pieces get known answers.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from benchmarks import calibration
from benchmarks.calibration import Population


def synthetic_population(path: Path, *, n_prompts: int = 300, n_layers: int = 2, d_mlp: int = 24,
                         seed: int = 0) -> Path:
    """Every key the harness reads, with a real effect to find (tuned activations lower on
    toxic-aligned neurons) and noise around it."""
    rng = np.random.default_rng(seed)
    n = n_layers * d_mlp
    cos = rng.normal(size=n)
    base = rng.normal(0.5, 1.0, size=(n_prompts, n)) * 20  # sums over 20 steps
    shift = np.where(cos > 0, -0.3, 0.2) * 20
    tuned = base + shift + rng.normal(0, 6.0, size=(n_prompts, n))
    tox_base = rng.uniform(0.3, 0.9, n_prompts)
    np.savez(path, base_sum=base, tuned_sum=tuned, base_count=np.full(n_prompts, 20.0),
             tuned_count=np.full(n_prompts, 20.0), cosines=cos, base_alignment=cos * 0.5,
             tuned_alignment=cos * 0.5 - 0.01, n_layers=n_layers, tox_base=tox_base,
             tox_tuned=tox_base - rng.uniform(0.1, 0.4, n_prompts),
             tox_ablated=tox_base - rng.uniform(0.0, 0.2, n_prompts),
             tox_patched=tox_base - rng.uniform(0.05, 0.35, n_prompts), ablated_k=5,
             ppl_base_nll=rng.normal(400, 20, 200), ppl_base_tokens=np.full(200, 128.0),
             ppl_tuned_nll=rng.normal(405, 20, 200), ppl_tuned_tokens=np.full(200, 128.0),
             f1_base=rng.uniform(0, 0.3, 200), f1_tuned=rng.uniform(0, 0.3, 200))
    return path


def test_a_draw_is_blocked_as_generation_blocks_prompts(tmp_path: Path) -> None:
    """Prompt j of a draw lands in block j % n_blocks, and the block sums are the draw's sums."""
    pop = Population.load(synthetic_population(tmp_path / "pop.npz", n_prompts=10))
    drawn = np.array([3, 3, 7, 0, 9])
    attr = pop.attribution(drawn, n_blocks=2)
    np.testing.assert_allclose(attr.base_sum[0], pop["base_sum"][[3, 7, 9]].sum(axis=0))
    np.testing.assert_allclose(attr.base_sum[1], pop["base_sum"][[3, 0]].sum(axis=0))
    assert attr.base_count.tolist() == [60.0, 40.0] and attr.n_prompts == 5
    whole = pop.attribution()  # the population: one block per prompt
    assert whole.n_blocks == 10 and whole.prompts_per_block == 1.0


@pytest.mark.slow
def test_the_harness_runs_every_family_and_publishes_between_markers(tmp_path: Path) -> None:
    path = synthetic_population(tmp_path / "pop.npz")
    out = tmp_path / "cal.json"
    assert calibration.main([str(path), "--reps", "2", "--profiles", "smoke", "--json", str(out)]) == 0
    run = json.loads(out.read_text())
    rows = run["rows"]
    names = {f.name for f in calibration.families()}
    assert {r["claim"] for r in rows if r["estimator"] == "now"} == names | {"family-wise (any claim passes)"}
    for r in rows[:-1]:
        assert 0.0 <= r["coverage"] <= 1.0 and 0.0 <= r["false_pass"] <= 1.0, r
        assert r["reps"] == 2 and np.isfinite(r["truth"]), r
    assert rows[-1]["family_size"] == calibration.FAMILY_SIZE

    doc = tmp_path / "STATISTICS.md"
    doc.write_text(f"# head\n\n{calibration.TABLE_START}\nold\n{calibration.TABLE_END}\n\ntail\n")
    assert calibration.main(["--from-json", str(out), "--markdown", str(doc)]) == 0
    text = doc.read_text()
    assert "old" not in text and text.startswith("# head") and text.rstrip().endswith("tail")
    assert "| tp_down_is_a_minority | smoke |" in text and "2 replications" in text
    with pytest.raises(SystemExit, match="markers"):
        calibration.write_table(tmp_path / "cal.json", "table", "note")


def test_truths_are_the_population_statistics(tmp_path: Path) -> None:
    """The truth a family is held to is its statistic on the whole population (known answers)."""
    pop = Population.load(synthetic_population(tmp_path / "pop.npz"))
    fams = {(f.name, f.before): f for f in calibration.families()}
    shares = pop.attribution().shares()
    assert fams[("every_group_contributes[TP_down]", False)].truth(pop) == pytest.approx(shares["TP_down"])
    assert fams[("anti_toxic_promotion_matters", False)].truth(pop) == pytest.approx(shares["AP_up"] + shares["AN_up"])
    base, tuned, cond = pop["tox_base"], pop["tox_tuned"], pop["tox_patched"]
    assert fams[("all_groups_patch_emulates_dpo", False)].truth(pop) == pytest.approx(
        (base.mean() - cond.mean()) / (base.mean() - tuned.mean()))
    assert fams[("dpo_f1_cost", False)].truth(pop) == pytest.approx(pop["f1_tuned"].mean() - pop["f1_base"].mean())
