"""Start-up checks: every bad model or data input is one usage error (exit 4) before any test runs."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
import transformers  # noqa: F401
from safetensors.torch import load_file, save_file

# Pre-import what the inner runs load lazily (pytester restores sys.modules after each run).
import mechtests.checkpoints
import mechtests.preflight
import mechtests.probes  # noqa: F401
from mechtests.testing import make_tiny_checkpoint, perturbed_copy

INNER = """
import pytest

@pytest.mark.mechtests_data("challenge", "f1")
def test_never(model_pair, eval_data, probe):
    raise AssertionError("must not run: pre-flight should have refused the inputs")
"""


@pytest.fixture(scope="module")
def ckpts(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("pre")
    base = make_tiny_checkpoint(root / "base", n_layers=2, d_model=32, d_mlp=64, n_ctx=64)
    return {"root": root, "base": base, "tuned": perturbed_copy(base, root / "tuned", scale=1e-2),
            "wide": make_tiny_checkpoint(root / "wide", n_layers=2, d_model=32, d_mlp=128, n_ctx=64),
            "short": make_tiny_checkpoint(root / "short", n_layers=2, d_model=32, d_mlp=64, n_ctx=32)}


def _broken_copy(src: Path, dst: Path, edit: Callable[[Path], None]) -> Path:
    if dst.exists():
        shutil.rmtree(dst)
    shutil.copytree(src, dst)
    edit(dst)
    return dst


def _truncate(d: Path) -> None:
    w = d / "model.safetensors"
    w.write_bytes(w.read_bytes()[: w.stat().st_size // 2])


def _garbage(d: Path) -> None:
    (d / "model.safetensors").write_bytes(b"\x00not safetensors" * 8)


def _no_tokenizer(d: Path) -> None:
    for name in ("tokenizer.json", "tokenizer_config.json"):
        (d / name).unlink()


def _other_tokenizer(d: Path) -> None:
    doc = json.loads((d / "tokenizer.json").read_text())
    vocab = doc["model"]["vocab"]
    vocab["a"], vocab["b"] = vocab["b"], vocab["a"]  # same size, other vocabulary
    (d / "tokenizer.json").write_text(json.dumps(doc))


def _nan_weight(d: Path) -> None:
    state = load_file(str(d / "model.safetensors"))
    state["transformer.h.0.mlp.c_fc.weight"][0, 0] = float("inf")
    save_file(state, str(d / "model.safetensors"))


MODEL_CASES = {
    "truncated safetensors": (_truncate, "not a readable safetensors file"),
    "garbage safetensors": (_garbage, "not a readable safetensors file"),
    "no tokenizer": (_no_tokenizer, "tokenizer"),
    "other tokenizer": (_other_tokenizer, "differ in tokenizer vocabulary (sha256 prefix)"),
    "inf weight": (_nan_weight, "transformer.h.0.mlp.c_fc.weight holds 1 NaN/inf"),
}


def _assert_one_usage_error(result: pytest.RunResult, message: str) -> None:
    err, out = result.stderr.str(), result.stdout.str()
    assert result.ret == pytest.ExitCode.USAGE_ERROR, out + err
    assert err.count("ERROR: mechtests: ") == 1 and message in err, err
    assert "Traceback" not in err + out and "must not run" not in out


@pytest.mark.parametrize("case", sorted(MODEL_CASES))
def test_bad_tuned_checkpoint_is_one_usage_error(pytester: pytest.Pytester, ckpts: dict[str, Path], case: str) -> None:
    edit, message = MODEL_CASES[case]
    broken = _broken_copy(ckpts["tuned"], pytester.path / "broken", edit)
    pytester.makepyfile(test_inner=INNER)
    _assert_one_usage_error(pytester.runpytest(f"--mt-base={ckpts['base']}", f"--mt-tuned={broken}"), message)


@pytest.mark.parametrize("other, message", [("wide", "differ in d_mlp: base has 64, tuned has 128"),
                                            ("short", "differ in n_ctx")])
def test_incompatible_pairs_are_refused_from_the_configs(pytester: pytest.Pytester, ckpts: dict[str, Path],
                                                        other: str, message: str) -> None:
    pytester.makepyfile(test_inner=INNER)
    _assert_one_usage_error(pytester.runpytest(f"--mt-base={ckpts['base']}", f"--mt-tuned={ckpts[other]}"), message)


def test_a_context_too_short_for_the_protocol(pytester: pytest.Pytester, ckpts: dict[str, Path]) -> None:
    short_twin = perturbed_copy(ckpts["short"], pytester.path / "short2", scale=1e-2)
    pytester.makepyfile(test_inner=INNER)
    result = pytester.runpytest(f"--mt-base={ckpts['short']}", f"--mt-tuned={short_twin}")
    _assert_one_usage_error(result, "the models' context is 32 tokens, but the protocol needs 32 prompt + 20")


def test_an_uncached_hub_name_fails_at_once(pytester: pytest.Pytester, ckpts: dict[str, Path],
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    import huggingface_hub.constants as hub_constants

    monkeypatch.setattr(hub_constants, "HF_HUB_OFFLINE", True)
    pytester.makepyfile(test_inner=INNER)
    result = pytester.runpytest(f"--mt-base={ckpts['base']}", "--mt-tuned=mechtests-nonexistent/model")
    _assert_one_usage_error(result, "is not in the Hugging Face cache, and the hub is unreachable")


PROBES = {
    "wrong width": (lambda p: torch.save(torch.ones(16), p), "has width 16, but the model has d_model=32"),
    "nan": (lambda p: torch.save(torch.full((32,), float("nan")), p), "probe weight or bias contains NaN"),
    "text": (lambda p: p.write_text("0.1 0.2 0.3"), "not a readable torch file"),
    "matrix": (lambda p: torch.save(torch.ones(4, 32), p), "probe tensor has shape (4, 32)"),
    "zero": (lambda p: torch.save(torch.zeros(32), p), "probe weight is all zeros"),
    "unknown keys": (lambda p: torch.save({"w": torch.ones(32)}, p), "probe dict has unknown key(s) ['w']"),
}


@pytest.mark.parametrize("case", sorted(PROBES))
def test_bad_probe_files_are_one_usage_error(pytester: pytest.Pytester, ckpts: dict[str, Path], case: str) -> None:
    write, message = PROBES[case]
    write(pytester.path / "probe.pt")
    pytester.makepyfile(test_inner=INNER)
    result = pytester.runpytest(f"--mt-base={ckpts['base']}", f"--mt-tuned={ckpts['tuned']}", "--mt-probe=probe.pt")
    _assert_one_usage_error(result, message)
    assert "probe.pt" in result.stderr.str()


PROMPT_FILES = {
    "empty": (b"", "contains no prompts"),
    "blank lines": (b"\n  \n\n", "contains no prompts"),
    "not json": (b'{"prompt": "a"}\nnot json\n', "p.jsonl:2: not valid JSON"),
    "invalid utf-8": (b'{"prompt": "\xff\xfe"}\n', "not UTF-8 text"),
    "empty prompt": (b'{"prompt": "a"}\n{"prompt": ""}\n', "p.jsonl:2: the prompt is empty"),
    "no field": (b'{"text": "a"}\n', "p.jsonl:1: no prompt text"),
}


@pytest.mark.parametrize("case", sorted(PROMPT_FILES))
def test_bad_prompt_files_are_one_usage_error(pytester: pytest.Pytester, ckpts: dict[str, Path], case: str) -> None:
    content, message = PROMPT_FILES[case]
    (pytester.path / "p.jsonl").write_bytes(content)
    pytester.makepyfile(test_inner=INNER)
    result = pytester.runpytest(f"--mt-base={ckpts['base']}", f"--mt-tuned={ckpts['tuned']}", "--mt-prompts=p.jsonl")
    _assert_one_usage_error(result, message)


def test_a_data_directory_missing_what_the_claims_need(pytester: pytest.Pytester, ckpts: dict[str, Path]) -> None:
    data = pytester.path / "data"
    data.mkdir()
    (data / "challenge_prompts.jsonl").write_text('{"prompt": "hello there"}\n')
    pytester.makepyfile(test_inner=INNER)
    result = pytester.runpytest(f"--mt-base={ckpts['base']}", f"--mt-tuned={ckpts['tuned']}", "--mt-data=data")
    _assert_one_usage_error(result, "no f1 data for the claims that need it")
    assert "--mt-f1-data FILE" in result.stderr.str()
    # Claims that do not read F1 data run with the same directory (each role only where used).
    pytester.makepyfile(test_inner="import pytest\n\n@pytest.mark.mechtests_data('challenge')\n"
                                   "def test_ok(eval_data):\n    assert len(eval_data.challenge) == 1\n")
    ok = pytester.runpytest(f"--mt-base={ckpts['base']}", f"--mt-tuned={ckpts['tuned']}", "--mt-data=data")
    ok.assert_outcomes(passed=1)
    assert "challenge: " in ok.stdout.str() and "f1: none" in ok.stdout.str()


def test_a_probe_without_bias_needs_data_or_an_option(pytester: pytest.Pytester, ckpts: dict[str, Path]) -> None:
    torch.save(torch.ones(32), pytester.path / "probe.pt")
    data = pytester.path / "data"
    data.mkdir()
    (data / "challenge.jsonl").write_text('{"prompt": "hello there"}\n')
    pytester.makepyfile(test_inner="import pytest\n\n@pytest.mark.mechtests_data('challenge')\n"
                                   "def test_ok(probe):\n    assert probe.bias == 0.5\n")
    args = [f"--mt-base={ckpts['base']}", f"--mt-tuned={ckpts['tuned']}", "--mt-data=data", "--mt-probe=probe.pt"]
    _assert_one_usage_error(pytester.runpytest(*args), "the file has no bias and there is no labelled probe data")
    pytester.runpytest(*args, "--mt-probe-bias=0.5").assert_outcomes(passed=1)


def test_a_test_reading_only_the_pair_config_needs_no_valid_models(pytester: pytest.Pytester,
                                                                   ckpts: dict[str, Path]) -> None:
    """Pre-flight checks what the selected tests will read: models for model_pair users, data for
    eval_data users, the probe for probe users; a test of the pair's settings alone reads none."""
    broken = _broken_copy(ckpts["tuned"], pytester.path / "broken", _garbage)
    pytester.makepyfile(test_inner="def test_spec(mt_pair):\n    assert mt_pair.tuned.kind == 'directory'\n")
    pytester.runpytest(f"--mt-base={ckpts['base']}", f"--mt-tuned={broken}").assert_outcomes(passed=1)


def test_only_pairs_the_selected_tests_use_are_checked(pytester: pytest.Pytester, ckpts: dict[str, Path]) -> None:
    broken = _broken_copy(ckpts["tuned"], pytester.path / "broken", _garbage)
    pytester.makepyfile(test_inner="def test_model_free(claim):\n    claim('c', metric='m', direction='>', "
                                   "threshold=0, estimate=1.0)\n")
    pytester.runpytest(f"--mt-base={ckpts['base']}", f"--mt-tuned={broken}").assert_outcomes(passed=1)
