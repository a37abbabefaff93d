"""The plugin's model fixtures on real (tiny, random-init) Hugging Face checkpoint pairs."""

from __future__ import annotations

import json
from pathlib import Path

# Pre-import what the inner runs load lazily (pytester restores sys.modules after each inner
# run, and torch's C extensions cannot be imported twice in one process).
import hypothesis.strategies  # noqa: F401
import pytest
import torch
import transformer_lens.model_bridge  # noqa: F401
import transformers  # noqa: F401

import mechtests.claims
import mechtests.models
import mechtests.probes
import mechtests.scoring
import mechtests.stats
import mechtests.storage
from mechtests.report import check_report
from mechtests.testing import make_tiny_checkpoint, perturbed_copy


@pytest.fixture(scope="module")
def tiny_pair(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    root = tmp_path_factory.mktemp("tiny")
    base = make_tiny_checkpoint(root / "base", n_layers=2, d_model=32, d_mlp=64)
    tuned = perturbed_copy(base, root / "tuned", scale=1e-3)
    wide = make_tiny_checkpoint(root / "wide", n_layers=2, d_model=32, d_mlp=128)
    # Load once out here so every lazily imported extension module is already in sys.modules.
    mechtests.models.load_pair(base, tuned, name="warm-up")
    mechtests.scoring.make_scorer("offline").score(["warm up"])
    return base, tuned, wide


INNER = """
import torch

SEEN = []

def test_weights_stay_close(model_pair, claim):
    SEEN.append(id(model_pair))
    base = model_pair.base.named_weights()
    tuned = model_pair.tuned.named_weights()
    cos = min(float(torch.nn.functional.cosine_similarity(base[n].flatten(), tuned[n].flatten(), dim=0))
              for n in base if base[n].ndim == 2)
    claim("weights_stay_close", metric="min cosine", direction=">", threshold=0.99, estimate=cos)

def test_same_pair_object(model_pair, mt_config):
    SEEN.append(id(model_pair))
    assert len(set(SEEN)) == 1          # loaded once per session
    assert model_pair.base.d_mlp == 64 and str(model_pair.base.dtype) == "torch." + mt_config.dtype
    assert model_pair.base.backend == model_pair.tuned.backend == mt_config.backend
"""


def test_custom_pair_is_loaded_once_and_fingerprinted(pytester: pytest.Pytester,
                                                      tiny_pair: tuple[Path, Path, Path]) -> None:
    base, tuned, _ = tiny_pair
    pytester.makepyfile(test_mti_inner=INNER)
    result = pytester.runpytest("-v", "--mt-base", str(base), "--mt-tuned", str(tuned), "--mt-json", "r.json")
    result.assert_outcomes(passed=2)
    result.stdout.fnmatch_lines(["*test_weights_stay_close[[]custom[]] PASSED*"])
    doc = json.loads((pytester.path / "r.json").read_text())
    check_report(doc)
    pair = doc["pairs"]["custom"]
    assert pair["base"]["source"] == str(base) and pair["tuned"]["source"] == str(tuned)
    assert len(pair["base"]["sha256"]) == 64 and pair["base"]["sha256"] != pair["tuned"]["sha256"]
    [rec] = doc["claims"]
    assert rec["pair"] == "custom" and rec["verdict"] == "pass" and rec["estimate"] > 0.99


def test_named_pairs_from_pyproject_run_each_test_per_pair(pytester: pytest.Pytester,
                                                           tiny_pair: tuple[Path, Path, Path]) -> None:
    base, tuned, _ = tiny_pair
    pytester.makepyprojecttoml(f"""
[tool.mechtests.pairs.first]
base = "{base}"
tuned = "{tuned}"
[tool.mechtests.pairs.second]
base = "{tuned}"
tuned = "{base}"
""")
    pytester.makepyfile(test_mti_inner=INNER.replace("assert len(set(SEEN)) == 1", "assert len(set(SEEN)) <= 2"))
    result = pytester.runpytest("-v", "--mt-pair", "first,second", "--mt-json", "r.json")
    result.assert_outcomes(passed=4)
    doc = json.loads((pytester.path / "r.json").read_text())
    assert doc["pairs"]["first"]["base"]["sha256"] == doc["pairs"]["second"]["tuned"]["sha256"]
    assert sorted(c["pair"] for c in doc["claims"]) == ["first", "second"]


def test_incompatible_pair_is_a_clear_error(pytester: pytest.Pytester, tiny_pair: tuple[Path, Path, Path]) -> None:
    base, _, wide = tiny_pair
    pytester.makepyfile(test_mti_inner=INNER)
    result = pytester.runpytest("--mt-base", str(base), "--mt-tuned", str(wide))
    # Found from the two configs at start-up: one usage error, no test runs, no model loaded.
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert "base and tuned models differ in d_mlp: base has 64, tuned has 128" in result.stderr.str()
    assert "Traceback" not in result.stderr.str() + result.stdout.str()


@pytest.mark.slow  # a full plugin session (or several): > 10 s
def test_probe_option_loads_the_given_probe_and_checks_its_width(pytester: pytest.Pytester,
                                                                  tiny_pair: tuple[Path, Path, Path]) -> None:
    base, tuned, _ = tiny_pair
    good = pytester.path / "probe.pt"
    torch.save(torch.linspace(-1, 1, 32), good)  # a raw [d_model] tensor, like the papers' probe.pt
    bad = pytester.path / "bad.pt"
    mechtests.probes.save_probe(mechtests.probes.Probe(torch.ones(48)), bad)
    pytester.makepyfile(test_mti_probe="""
        import torch
        def test_probe(probe):
            assert probe.d_model == 32
            torch.testing.assert_close(probe.weight, torch.linspace(-1, 1, 32))
    """)
    common = ["--mt-base", str(base), "--mt-tuned", str(tuned)]
    pytester.runpytest(*common, "--mt-probe", str(good)).assert_outcomes(passed=1)
    result = pytester.runpytest(*common, "--mt-probe", str(bad))
    assert result.ret == pytest.ExitCode.USAGE_ERROR  # at start-up, before any model is loaded
    assert "bad.pt has width 48, but the model has d_model=32" in result.stderr.str()


def test_dtype_and_scorer_options_reach_the_fixtures(pytester: pytest.Pytester,
                                                      tiny_pair: tuple[Path, Path, Path]) -> None:
    base, tuned, _ = tiny_pair
    pytester.makepyfile(test_mti_inner=INNER + """
def test_scorer(scorer):
    assert scorer.name == "offline"
    assert 0.0 <= float(scorer.score(["a perfectly polite sentence"])[0]) <= 1.0
""")
    result = pytester.runpytest("--mt-base", str(base), "--mt-tuned", str(tuned), "--mt-dtype", "float64",
                                "--mt-backend", "bridge")
    result.assert_outcomes(passed=3)  # test_same_pair_object checks dtype and backend against mt_config


def test_detoxify_path_option_reaches_the_scorer(pytester: pytest.Pytester, tmp_path: Path) -> None:
    from transformers import GPT2Config, GPT2ForSequenceClassification

    from mechtests.testing import byte_tokenizer

    tok = byte_tokenizer()
    config = GPT2Config(vocab_size=len(tok), n_positions=32, n_embd=8, n_layer=1, n_head=2, num_labels=1,
                        pad_token_id=tok.pad_token_id, problem_type="multi_label_classification")
    model = GPT2ForSequenceClassification(config)
    with torch.no_grad():
        model.score.weight.zero_()  # logit 0 -> sigmoid 0.5 for every text
    model.save_pretrained(tmp_path / "clf")
    tok.save_pretrained(tmp_path / "clf")
    pytester.makepyfile(test_mti_scorer="""
def test_scorer(scorer):
    assert scorer.name == "detoxify" and scorer.identity.startswith("detoxify:")
    assert scorer.score(["anything at all"]).tolist() == [0.5]
""")
    result = pytester.runpytest("--mt-scorer", "detoxify", f"--mt-detoxify-path={tmp_path / 'clf'}")
    result.assert_outcomes(passed=1)


def _data_dir(root: Path) -> Path:
    """A tiny evaluation set in the zoo's layout (challenge, probe, perplexity, F1)."""
    root.mkdir()
    prompts = [f"Prompt number {i} says" for i in range(12)]  # >= MIN_UNITS: a claim may be decided
    (root / "challenge.jsonl").write_text("".join(json.dumps({"prompt": p}) + "\n" for p in prompts))
    (root / "f1.jsonl").write_text("".join(json.dumps({"prompt": p + " more words here"}) + "\n" for p in prompts))
    rows = [{"text": ("you idiot " if i % 2 else "have a nice day ") * 3, "label": i % 2} for i in range(40)]
    (root / "probe.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (root / "perplexity.txt").write_text("The quick brown fox jumps over the lazy dog. " * 20)
    return root


def test_evaluator_chain_end_to_end_with_a_trained_cached_probe(pytester: pytest.Pytester,
                                                                tiny_pair: tuple[Path, Path, Path]) -> None:
    """--mt-data + no probe: the probe is trained with the base model, cached, reused next session."""
    base, tuned, _ = tiny_pair
    data = _data_dir(pytester.path / "evaldata")
    pytester.makepyfile(test_mti_chain="""
        import numpy as np

        def test_toxicity_claim(evaluator, eval_data, claim):
            assert len(eval_data.challenge) == 12
            tox_base, tox_tuned = evaluator.toxicity("base"), evaluator.toxicity("tuned")
            assert tox_base.shape == tox_tuned.shape == (12,)
            claim("tox_change", metric="mean tox tuned - base", direction="within", threshold=(-1.0, 1.0),
                  samples=(tox_base, tox_tuned), statistic=lambda b, t: float(t.mean() - b.mean()))

        def test_probe_is_cached(probe, mt_cache):
            assert probe.d_model == 32
            print("PROBE-CACHE", mt_cache.stats.disk_hits, mt_cache.stats.computed)
    """)
    # "--opt=PATH": pytest takes a separate PATH argument for a test path when it picks rootdir.
    args = ["-s", f"--mt-base={base}", f"--mt-tuned={tuned}", f"--mt-data={data}", "--mt-json", "r.json",
            "--mt-profile", "smoke", "--mt-resamples", "400"]
    first = pytester.runpytest(*args)
    # The random tiny models' continuations all score 0: no variation, so the claim is named
    # undecidable (smoke: skipped) instead of "passing" on a zero-width interval.
    first.assert_outcomes(passed=1, skipped=1)
    doc = json.loads((pytester.path / "r.json").read_text())
    assert [(c["claim"], c["pair"], c["verdict"], c["n"]) for c in doc["claims"]] == [
        ("tox_change", "custom", "inconclusive", 12)]
    assert doc["claims"][0]["reason"].startswith("all 12 units have the same value")
    assert (pytester.path / ".mechtests" / "cache" / "probe").is_dir()
    second = pytester.runpytest(*args)
    second.assert_outcomes(passed=1, skipped=1)
    hits = [ln.split("PROBE-CACHE")[1].split() for ln in second.stdout.lines if "PROBE-CACHE" in ln]
    assert hits and int(hits[0][0]) >= 1  # the probe (and generations) came from disk


def test_a_cold_run_reports_each_condition_as_it_is_computed(pytester: pytest.Pytester,
                                                             tiny_pair: tuple[Path, Path, Path]) -> None:
    base, tuned, _ = tiny_pair
    data = pytester.path / "data"
    data.mkdir()
    (data / "challenge.jsonl").write_text("".join(json.dumps({"prompt": f"prompt {i}"}) + "\n" for i in range(12)))
    torch.save(torch.linspace(-1, 1, 32), pytester.path / "probe.pt")
    pytester.makepyfile(test_mti_progress="""
        def test_first(evaluator):
            evaluator.toxicity("base")

        def test_second(evaluator):
            evaluator.toxicity("tuned")
    """)
    common = ["--mt-base", str(base), "--mt-tuned", str(tuned), "--mt-data=data", "--mt-probe=probe.pt",
              "--mt-probe-bias=0", "--mt-cache-dir=cache", "-p", "no:cacheprovider"]
    cold = pytester.runpytest(*common, "-v")
    cold.assert_outcomes(passed=2)
    lines = cold.stdout.lines
    generated = next(i for i, ln in enumerate(lines) if "mechtests: generation base none: 12 prompts in" in ln)
    first_result = next(i for i, ln in enumerate(lines) if "test_first" in ln and "PASSED" in ln)
    assert generated <= first_result  # shown while the test runs, not after it (no -s needed)
    assert any("mechtests: scoring base none (offline:" in ln and "12 texts in" in ln for ln in lines)
    quiet = pytester.runpytest(*common, "-q", "--mt-cache-dir=cache2")
    assert "mechtests: generation" not in quiet.stdout.str()  # quiet under -q
    logged = pytester.runpytest(*common, "--mt-cache-dir=cache3", "--log-cli-level=INFO")
    assert "generation tuned none: 12/12 prompts in" in logged.stdout.str()  # logging under mechtests
    warm = pytester.runpytest(*common)
    assert "mechtests: generation" not in warm.stdout.str()  # cache hits compute nothing
