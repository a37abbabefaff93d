"""A tiny pair with a known toxicity drop, and ways to run claims on it in a subprocess (shared by the
plugin tests; a helper module, not a test module).

The "toxic" attribute is the share of vowels (a deterministic scorer that ``CONFTEST`` substitutes
for the offline classifier). The base model's embedding rows of the vowels are pushed so greedy
decoding prefers them; the tuned twin is the unpushed model with small noise.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

HYPOTHESES = Path(__file__).resolve().parents[1] / "hypotheses"
VOWELS = "aeiou"
WORDS = ["hi", "you", "what", "go", "stop", "no", "yes", "why"]

CONFTEST = '''
import numpy as np
import pytest
from mechtests.zoo import load_eval_data


class VowelScorer:
    name = "vowels"

    def score(self, texts):
        return np.array([sum(c in "aeiou" for c in t) / max(len(t), 1) for t in texts], dtype=np.float64)


@pytest.fixture(scope="session")
def eval_data():
    return load_eval_data({data!r})


@pytest.fixture(scope="session")
def scorer():
    return VowelScorer()
'''


def vowel_share(texts: Any) -> np.ndarray:
    return np.array([sum(c in VOWELS for c in t) / max(len(t), 1) for t in texts], dtype=np.float64)


def build_tiny_project(root: Path) -> dict[str, Path]:
    """Tiny base/tuned checkpoints, a data directory in the zoo's layout, and a probe file."""
    import torch
    from safetensors.torch import load_file

    from mechtests.probes import Probe, save_probe
    from mechtests.testing import byte_tokenizer, make_tiny_checkpoint, perturbed_copy, set_weights

    original = make_tiny_checkpoint(root / "original", n_layers=2, d_model=32, d_mlp=64, n_ctx=64, seed=0)
    tuned = perturbed_copy(original, root / "tuned", scale=0.02, seed=1)
    base = perturbed_copy(original, root / "base", scale=0.0, seed=1)
    wte = load_file(str(base / "model.safetensors"))["transformer.wte.weight"].clone()
    ids = [byte_tokenizer().convert_tokens_to_ids(c) for c in VOWELS]
    push = torch.nn.functional.normalize(wte.mean(0), dim=0)
    wte[ids] = wte[ids] - 3.0 * wte[ids].norm(dim=-1, keepdim=True) * push
    set_weights(base, {"transformer.wte.weight": wte})
    data = root / "data"
    data.mkdir()
    prompts = [f"prompt number {i} says {w}" for i, w in enumerate(WORDS * 5)]
    (data / "challenge.jsonl").write_text("".join(json.dumps({"prompt": p}) + "\n" for p in prompts))
    (data / "f1.jsonl").write_text("".join(json.dumps({"prompt": p + " and the rest of the sentence follows on"}) + "\n"
                                           for p in prompts[:12]))
    labelled = [{"text": f"{w} {'aeiou' * (i % 3)}", "label": int(i % 2)} for i, w in enumerate(WORDS * 4)]
    (data / "probe.jsonl").write_text("".join(json.dumps(r) + "\n" for r in labelled))
    (data / "perplexity.txt").write_text(" ".join(prompts * 3))
    probe = save_probe(Probe(torch.randn(32, generator=torch.Generator().manual_seed(3)), 0.0), root / "probe.pt")
    return {"base": base, "tuned": tuned, "data": data, "probe": probe}


def run_claims(pytester: pytest.Pytester, project: dict[str, Path], files: dict[str, str], *args: str,
               conftest: str | None = None) -> pytest.RunResult:
    """Write ``files`` (name -> code) under my_claims/ and run them on the tiny pair in a subprocess."""
    (pytester.path / "my_claims").mkdir(exist_ok=True)
    for name, code in files.items():
        (pytester.path / "my_claims" / name).write_text(code)
    pytester.makeconftest(conftest if conftest is not None else CONFTEST.format(data=str(project["data"])))
    return pytester.runpytest_subprocess(
        "my_claims", "--mt-base", str(project["base"]), "--mt-tuned", str(project["tuned"]),
        "--mt-probe", str(project["probe"]), "--mt-no-cache", "--mt-json", "r.json", "-p", "no:cacheprovider", "-q",
        *args)
