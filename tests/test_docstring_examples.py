"""Every ``Example:`` in mechtests' docstrings runs and prints what it says (doctest).

The engine's examples (models, interventions, generation, metrics, neurons, attribution, probes,
the Evaluator ...) run against one small world built here from the tiny checkpoints: the names
they use (``model``, ``pair``, ``probe``, ``prompts``, ``top``, ``ev``, ``attr`` ...) are its
globals, so an example that stops matching the code fails here instead of rotting in a SKIP.
"""

from __future__ import annotations

import doctest
import importlib
import pkgutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

import mechtests

MODULES = sorted(
    m.name for m in pkgutil.walk_packages(mechtests.__path__, prefix="mechtests.")
    if m.name != "mechtests.plugin"  # imported by pytest itself as the plugin; its hooks hold no examples
)


def _report_document() -> dict[str, Any]:
    """A real report (the default pair's smoke run), for the examples that store one."""
    import json

    return json.loads((Path(__file__).resolve().parents[1] / "hypotheses/results/default-smoke.json").read_text())


class VowelScorer:
    """A deterministic stand-in scorer: share of vowels in the text."""

    name = "vowels"

    def score(self, texts: Any) -> np.ndarray:
        return np.array([sum(c in "aeiou" for c in t) / max(len(t), 1) for t in texts], dtype=np.float64)


@pytest.fixture(scope="module")
def world(tiny_checkpoints: dict[str, tuple[Path, Path]], tiny_pairs: dict[str, Any],
          tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The globals the engine's examples use (GPT-2-style tiny pair: 2 layers, d_model 32, d_mlp 64)."""
    from mechtests.attribution import neuron_projections
    from mechtests.config import run_config
    from mechtests.data import TextSet, left_padded_batch
    from mechtests.effects import BlockAttribution
    from mechtests.eval_data import EvalData
    from mechtests.evaluator import Evaluator
    from mechtests.generation import GenerationConfig, generate
    from mechtests.hook_routes import weight_sharing_twin
    from mechtests.interventions import ZeroAblation
    from mechtests.neurons import GROUPS, NeuronSet, neuron_cosines
    from mechtests.probes import Probe, save_probe
    from mechtests.storage import Cache
    from mechtests.testing import labelled_texts, papers_standins

    tmp_path = tmp_path_factory.mktemp("examples")
    base_dir, tuned_dir = tiny_checkpoints["gpt2"]
    pair = tiny_pairs["gpt2"]
    model = pair.base
    probe = Probe(torch.randn(model.d_model, generator=torch.Generator().manual_seed(0)))
    prompts = TextSet("prompts", tuple(f"the {w} said that" for w in ("cat", "dog", "bird", "fish")))
    cos = neuron_cosines(model, probe)
    top = NeuronSet.top_k(cos, 4)
    config = GenerationConfig(max_new_tokens=4, max_prompt_tokens=8)
    base_stats = generate(pair.base, prompts, config=config, collect_stats=True).stats
    tuned_stats = generate(pair.tuned, prompts, config=config, collect_stats=True).stats
    sentences = ("one two three four five six seven eight nine ten eleven twelve",
                 "a b c d e f g h i j k l m n o p")
    text = " ".join(f"word{i % 17}" for i in range(400))
    labelled = TextSet("labelled", *map(tuple, zip(*labelled_texts(80), strict=True)))
    data = EvalData(challenge=prompts, probe_data=labelled, perplexity_text=text,
                    f1_sentences=TextSet("f1", sentences))
    cfg = run_config("smoke", n_prompts=4, n_perplexity_windows=2, n_f1=2, max_new_tokens=4, max_prompt_tokens=8)
    cache = Cache(tmp_path / "cache")
    ev = Evaluator(pair, probe=probe, scorer=VowelScorer(), data=data, config=cfg, cache=cache)
    probe_file = tmp_path / "probe.pt"
    torch.save(probe.weight, probe_file)  # a bare weight vector, as the papers' probe files are
    save_probe(probe, tmp_path / "probe-with-bias.pt")
    ids, mask = left_padded_batch(model.tokenizer, list(prompts.texts), max_tokens=8)
    a_base, a_tuned = base_stats.mean_activation(), tuned_stats.mean_activation()
    p_base, p_tuned = neuron_projections(pair.base, probe, a_base), neuron_projections(pair.tuned, probe, a_tuned)
    attr = BlockAttribution.from_evaluator(ev)
    return {
        "ZeroAblation": ZeroAblation, "generate": generate, "TextSet": TextSet, "GROUPS": GROUPS, "attr": attr,
        "p_base": p_base, "p_tuned": p_tuned, "hf_model": model._hf, "hf": model._hf, "bridge": model.bridge,
        "twin": weight_sharing_twin(model._hf), "doc": _report_document(),
        "standins": papers_standins(tmp_path / "standins", base=base_dir, tuned=tuned_dir),
        "top100": top, "compute": lambda: 0.875,
        "tmp_path": tmp_path, "base_dir": base_dir, "tuned_dir": tuned_dir, "pair": pair, "model": model,
        "probe": probe, "prompts": prompts, "cos": cos, "top": top, "top_neurons": top, "neurons": top,
        "zero": ZeroAblation(top), "base_stats": base_stats, "tuned_stats": tuned_stats,
        "base_act": a_base, "tuned_act": a_tuned, "a_base": a_base, "a_tuned": a_tuned,
        "sentences": sentences, "text": text, "labelled": labelled, "texts": prompts, "data": labelled,
        "eval_data": data, "cfg": cfg, "cache": cache, "scorer": VowelScorer(), "ev": ev, "evaluator": ev,
        "probe_file": probe_file, "ids": ids, "mask": mask, "n_prompts": len(prompts), "tok": model.tokenizer,
    }


@pytest.mark.parametrize("module_name", MODULES)
def test_docstring_examples_run(module_name: str, world: dict[str, Any]) -> None:
    module = importlib.import_module(module_name)
    result = doctest.testmod(module, extraglobs=dict(world), optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE,
                             verbose=False)
    assert result.failed == 0, f"{result.failed} of {result.attempted} docstring examples in {module_name} failed"


def test_no_engine_example_is_skipped() -> None:
    """The engine's examples run against the world above; only examples that need what a test
    machine lacks (a hub download, a real data file, a pytest run, a browser) may be skipped."""
    engine = ("models", "interventions", "generation", "metrics", "neurons", "attribution", "evaluator",
              "selections", "probes", "effects", "figures", "hook_routes", "testing", "data", "storage")
    skipped = {name: (Path(mechtests.__file__).parent / f"{name}.py").read_text().count("doctest: +SKIP")
               for name in engine}
    assert not any(skipped.values()), {k: v for k, v in skipped.items() if v}
