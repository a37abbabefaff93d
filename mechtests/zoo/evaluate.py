"""The model card's measurements of a (base, tuned) pair, by the papers' protocol (PAPER.md).

Everything goes through the library's own loading path and metrics (``load_pair``,
``generation.generate``, ``metrics``), so the card reports what ``pytest hypotheses/`` measures.

Example:
    >>> summary = evaluate_pair(Path("base"), Path("tuned"), Path("probe.pt"), Path("data"))  # doctest: +SKIP
    >>> summary["toxicity"]["ratio"]  # doctest: +SKIP
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

if TYPE_CHECKING:
    from mechtests.evaluator import Role

CARD_PROMPTS: tuple[str, ...] = (
    "The history of the city begins",
    "Thanks for your edit to the article, but",
    "I think the best way to",
)


def _ratio(tuned: np.ndarray, base: np.ndarray, axis: int = -1) -> np.ndarray:
    return np.mean(tuned, axis=axis) / np.mean(base, axis=axis)


def weight_cosines(base_dir: Path, tuned_dir: Path) -> dict[str, float]:
    """Cosine between base and tuned for every weight matrix (2-D tensor of the safetensors), by name."""
    from safetensors.torch import load_file

    base_state = load_file(str(Path(base_dir) / "model.safetensors"))
    tuned_state = load_file(str(Path(tuned_dir) / "model.safetensors"))
    out: dict[str, float] = {}
    for name, w in sorted(base_state.items()):
        if w.ndim == 2 and w.is_floating_point():
            a, b = w.double().flatten(), tuned_state[name].double().flatten()
            out[name] = float(torch.dot(a, b) / (a.norm() * b.norm()))
    return out


def evaluate_pair(base_dir: Path, tuned_dir: Path, probe_path: Path, data_dir: Path, *, seed: int = 0,
                  n_resamples: int = 9999) -> dict[str, Any]:
    """Toxicity (with bootstrap CI of the tuned/base ratio), perplexity, F1, weight cosines, samples."""
    from mechtests.data import TextSet
    from mechtests.generation import GenerationConfig, generate
    from mechtests.metrics import f1_scores, perplexity, perplexity_windows, toxicity_scores
    from mechtests.models import load_pair
    from mechtests.probes import load_probe, probe_correct
    from mechtests.scoring import OfflineScorer
    from mechtests.stats import bootstrap_estimate
    from mechtests.zoo import load_eval_data

    pair = load_pair(base_dir, tuned_dir, name="zoo")
    data = load_eval_data(data_dir)
    scorer = OfflineScorer()
    gen_cfg = GenerationConfig(max_new_tokens=20, max_prompt_tokens=32, batch_size=32)
    out: dict[str, Any] = {"n_challenge": len(data.challenge), "n_f1": len(data.f1_sentences)}
    tox: dict[str, np.ndarray] = {}
    ppl: dict[str, float] = {}
    f1: dict[str, np.ndarray] = {}
    continuations: dict[str, tuple[str, ...]] = {}
    for role in ("base", "tuned"):
        model = pair.role(role)
        result = generate(model, data.challenge, config=gen_cfg)
        continuations[role] = result.continuations
        tox[role] = toxicity_scores(result.continuations, scorer)
        nll, n = perplexity_windows(model, data.perplexity_text, window=model.n_ctx)
        ppl[role] = perplexity(nll, n)
        f1[role] = f1_scores(model, data.f1_sentences, prompt_tokens=32, new_tokens=20)
    est = bootstrap_estimate((tox["tuned"], tox["base"]), _ratio, paired=True, n_resamples=n_resamples, seed=seed)
    out["toxicity"] = {"base": float(tox["base"].mean()), "tuned": float(tox["tuned"].mean()),
                       "ratio": est.value, "ratio_ci": [est.ci_low, est.ci_high], "ci_method": est.method}
    out["perplexity"] = {"base": ppl["base"], "tuned": ppl["tuned"],
                         "relative_increase": ppl["tuned"] / ppl["base"] - 1.0}
    out["f1"] = {"base": float(f1["base"].mean()), "tuned": float(f1["tuned"].mean()),
                 "change": float(f1["tuned"].mean() - f1["base"].mean())}
    cos = weight_cosines(base_dir, tuned_dir)
    out["weight_cosine"] = {"min": min(cos.values()), "argmin": min(cos, key=lambda k: cos[k]), "n_matrices": len(cos)}
    probe = load_probe(probe_path, d_model=pair.base.d_model)
    held = data.probe_data
    out["probe_accuracy_all_probe_data"] = float(probe_correct(pair.base, probe, held).mean())
    samples = [{"prompt": data.challenge.texts[i], "base": continuations["base"][i],
                "tuned": continuations["tuned"][i]} for i in range(6)]
    neutral = TextSet("card", CARD_PROMPTS)
    roles: tuple[Role, ...] = ("base", "tuned")
    for role in roles:
        res = generate(pair.role(role), neutral, config=gen_cfg)
        for i, text in enumerate(res.continuations):
            if role == "base":
                samples.append({"prompt": CARD_PROMPTS[i], "base": text})
            else:
                samples[6 + i]["tuned"] = text
    out["generations"] = samples
    return out
