"""Shared fixtures for the test suite.

The engine fixtures build tiny random-init Hugging Face checkpoints once per session (GPT-2 and
Llama, each with a perturbed "fine-tuned" twin) and load each pair once: interventions always
restore the models, so sharing them across tests is safe (and is itself tested).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import settings

pytest_plugins = ["pytester"]

# CI must be reproducible: under CI=true hypothesis replays the same examples every run
# (derandomize); locally it keeps exploring new ones. `--hypothesis-profile` overrides either.
settings.register_profile("ci", derandomize=True, print_blob=True)
if os.environ.get("CI"):
    settings.load_profile("ci")

ARCHS = ("gpt2", "llama")


@pytest.fixture(scope="session")
def tiny_checkpoints(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, Path]]:
    """``{arch: (base_dir, tuned_dir)}`` tiny checkpoints (2 layers, d_model 32, d_mlp 64, n_ctx 64)."""
    from mechtests.testing import make_tiny_checkpoint, perturbed_copy

    root = tmp_path_factory.mktemp("engine-ckpts")
    out: dict[str, tuple[Path, Path]] = {}
    for arch in ARCHS:
        base = make_tiny_checkpoint(root / f"{arch}-base", arch=arch, seed=0)
        tuned = perturbed_copy(base, root / f"{arch}-tuned", scale=0.05, seed=1)
        out[arch] = (base, tuned)
    return out


@pytest.fixture(scope="session")
def tiny_pairs(tiny_checkpoints: dict[str, tuple[Path, Path]]) -> dict[str, object]:
    """``{arch: ModelPair}`` loaded once per session."""
    from mechtests.models import load_pair

    return {arch: load_pair(base, tuned, name=f"tiny-{arch}") for arch, (base, tuned) in tiny_checkpoints.items()}


@pytest.fixture(params=ARCHS)
def tiny_pair(request: pytest.FixtureRequest, tiny_pairs: dict[str, object]) -> object:
    """The tiny pair of each architecture (standard GPT-2 MLP, gated Llama MLP)."""
    return tiny_pairs[request.param]
