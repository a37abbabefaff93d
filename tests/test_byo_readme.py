"""README's "Bring your own pair": each command runs as written on tiny stand-ins of the papers'
artifacts in their exact formats, and the report records exactly what was read."""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path

import pytest

from mechtests.testing import make_tiny_checkpoint, papers_standins, perturbed_copy

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"


def readme_commands() -> list[list[str]]:
    text = README.read_text(encoding="utf-8")
    section = text.split("## Bring your own pair", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```bash\n(.*?)```", section, re.S)
    commands = [shlex.split(line) for block in blocks for line in block.splitlines() if line.startswith("pytest ")]
    assert len(commands) == 2, "README's 'Bring your own pair' section should hold two pytest commands"
    return commands


@pytest.fixture(scope="module")
def papers(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("papers")
    base = make_tiny_checkpoint(root / "gpt2-medium-standin", n_layers=2, d_model=32, d_mlp=64, n_ctx=64)
    tuned = perturbed_copy(base, root / "dpo-standin", scale=0.05)
    return {"root": root, "base": base, "tuned": tuned, **papers_standins(root / "work", base=base, tuned=tuned)}


def _run(pytester: pytest.Pytester, papers: dict[str, Path], command: list[str]) -> tuple[pytest.RunResult, dict]:
    # Only what this machine needs changes: the hub name (unreachable here) becomes the tiny
    # base checkpoint, hypotheses/ is this checkout's; fewer resamples keep the test quick.
    args = [arg.replace("--mt-base=gpt2-medium", f"--mt-base={papers['base']}") for arg in command[1:]]
    args = [str(ROOT / "hypotheses") if arg == "hypotheses/" else arg for arg in args]
    for name in ("checkpoints", "toxic_rep", "data"):
        target = pytester.path / name
        if not target.exists():
            target.symlink_to(papers["root"] / "work" / name)
    result = pytester.runpytest_subprocess(*args, "--mt-resamples=400", "--mt-cache-dir=cache", "-p", "no:cacheprovider",
                                           f"--rootdir={ROOT}")
    report = json.loads((pytester.path / "report.json").read_text())
    return result, report


@pytest.mark.slow  # a full plugin session (or several): > 10 s
def test_lee_artifacts_run_as_written(pytester: pytest.Pytester, papers: dict[str, Path]) -> None:
    result, report = _run(pytester, papers, readme_commands()[0])
    assert result.ret in (0, 1), result.stdout.str()[-3000:] + result.stderr.str()[-2000:]
    outcomes = result.parseoutcomes()
    assert "error" not in outcomes and "errors" not in outcomes, result.stdout.str()[-3000:]
    assert len(report["claims"]) >= 20
    inputs = report["pairs"]["custom"]["inputs"]
    tuned, probe, data = inputs["tuned"], inputs["probe"], inputs["data"]
    assert tuned["kind"] == "state_dict" and tuned["nested_under"] == "state" and tuned["config_from"] == str(papers["base"])
    assert tuned["sha256"] == report["pairs"]["custom"]["tuned"]["sha256"]
    from mechtests.models import load_model

    assert tuned["sha256"] == load_model(papers["tuned"]).fingerprint  # the weights meant, exactly
    assert probe["format"] == "raw tensor (32,)" and probe["bias_source"] == "fitted" and probe["hook"] == "resid_final"
    assert data["challenge"]["path"].endswith("challenge_prompts.jsonl") and data["challenge"]["count"] == 40
    assert data["f1"]["format"].startswith("jsonl prompt + gold") and data["f1"]["count"] == 40
    assert data["perplexity"]["path"].endswith("wiki.test.raw")
    assert data["probe"]["format"] == "csv comment_text/toxic" and data["probe"]["count"] == 120
    out = result.stdout.str()
    assert "tuned: state dict" in out and "(nested under 'state')" in out  # said in the header too


@pytest.mark.slow  # a full plugin session (or several): > 10 s
def test_reference_probe_and_realtoxicityprompts_run_as_written(pytester: pytest.Pytester,
                                                                 papers: dict[str, Path]) -> None:
    result, report = _run(pytester, papers, readme_commands()[1])
    assert result.ret in (0, 1), result.stdout.str()[-3000:] + result.stderr.str()[-2000:]
    assert "error" not in result.parseoutcomes()
    inputs = report["pairs"]["custom"]["inputs"]
    assert inputs["probe"]["format"] == "raw tensor (1, 32)" and inputs["probe"]["hook"] == "ln_final"
    assert inputs["probe"]["hook_name"] == "ln_final.hook_out"
    challenge = inputs["data"]["challenge"]
    assert (challenge["count"], challenge["read"]) == (14, 40) and "challenging == true only" in challenge["note"]
    assert "challenging == true only (14 of 40)" in result.stdout.str()


def _claims(report: dict) -> list[tuple]:
    return [(c["nodeid"], c["claim"], c["estimate"], c["ci_low"], c["ci_high"], c["verdict"]) for c in report["claims"]]


@pytest.mark.slow  # a full plugin session (or several): > 10 s
def test_a_state_dict_file_gives_the_directory_checkpoints_report(pytester: pytest.Pytester,
                                                                   papers: dict[str, Path]) -> None:
    """Round trip: Lee et al.'s dpo.pt (the tuned weights nested under "state") and the tuned
    checkpoint directory give the same fingerprint and the same claims, number for number."""
    common = ["hypotheses/", f"--mt-base={papers['base']}", "--mt-probe=checkpoints/probe.pt",
              "--mt-data=data/intervene_data", "--mt-perplexity-data=data/wikitext-2-raw-v1",
              "--mt-probe-data=data/jigsaw/train.csv", "--mt-json", "report.json", "-k", "toxicity or weights or probe"]
    _, from_file = _run(pytester, papers, ["pytest", *common, "--mt-tuned=checkpoints/dpo.pt"])
    _, from_dir = _run(pytester, papers, ["pytest", *common, f"--mt-tuned={papers['tuned']}"])
    assert from_file["pairs"]["custom"]["tuned"]["sha256"] == from_dir["pairs"]["custom"]["tuned"]["sha256"]
    assert len(_claims(from_file)) >= 4 and _claims(from_file) == _claims(from_dir)


@pytest.mark.slow  # a full plugin session (or several): > 10 s
def test_identical_models_give_clear_fails_not_errors_or_false_passes(pytester: pytest.Pytester,
                                                                      papers: dict[str, Path]) -> None:
    command = ["pytest", "hypotheses/", f"--mt-base={papers['base']}", f"--mt-tuned={papers['base']}",
               "--mt-probe=checkpoints/probe.pt", "--mt-data=data/intervene_data",
               "--mt-perplexity-data=data/wikitext-2-raw-v1", "--mt-probe-data=data/jigsaw/train.csv",
               "--mt-json", "report.json"]
    result, report = _run(pytester, papers, command)
    outcomes = result.parseoutcomes()
    assert result.ret == 1 and "error" not in outcomes and "errors" not in outcomes, result.stdout.str()[-3000:]
    out = result.stdout.str()
    assert "Traceback" not in out and "NumericalError" not in out
    assert "undefined: no neuron's probe projection differs" in out
    assert "undefined: the tuned model does not reduce toxicity" in out
    # Claim 8 used to "pass" on identical models (exact zeros counted as moving toward toxicity).
    assert not any(c["claim"] == "adjustments_are_noisy_fraction" for c in report["claims"])
