"""What the benchmarks run on: sizes (`BenchSettings`) and models with prompts (`Subject`)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from benchmarks.shapes import SHAPES, build_pair, synthetic_prompts


@dataclass(frozen=True)
class BenchSettings:
    """Sizes and placement shared by every benchmark of a session."""

    prompts: int
    tokens: int
    batch: int
    rounds: int
    device: str
    dtype: str
    root: Path
    window: int = 1024
    windows: int = 4

    @property
    def torch_dtype(self) -> Any:
        import torch

        return getattr(torch, self.dtype)


@dataclass(frozen=True)
class Subject:
    """A model to benchmark: its checkpoint, the engine's `LoadedModel`, and prompts.

    `hf_dir` is a Hugging Face checkpoint; the plain-HF baseline loads its own copy from it
    (booting a `TransformerBridge` wraps the HF modules in place, so the engine's model object
    cannot serve as the unhooked baseline).
    """

    name: str
    hf_dir: Path
    tuned_dir: Path
    model: Any
    prompts: Any


def subject_dirs(name: str, settings: BenchSettings) -> tuple[Path, Path, Any]:
    """(base_dir, tuned_dir, prompts TextSet) of a subject; builds random-init checkpoints once."""
    from mechtests.data import TextSet

    if name == "default":
        try:
            from mechtests.zoo import default_pair, load_eval_data
        except ImportError as exc:
            pytest.skip(f"the default pair is not available yet ({exc})")
        zoo = default_pair()
        data = load_eval_data(zoo.data_dir)
        return Path(zoo.base_dir), Path(zoo.tuned_dir), data.challenge
    base_dir, tuned_dir = build_pair(SHAPES[name], settings.root)
    return base_dir, tuned_dir, TextSet(f"synthetic-{name}", synthetic_prompts(max(settings.prompts, 1)))
