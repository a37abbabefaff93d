"""Fixtures for the speed benchmarks (`pytest benchmarks/`).

Subjects: the embedded default pair's base model (`default`) and random-init models of the
papers' shape (`gpt2-medium`, see `benchmarks/shapes.py`). Sizes are options so the same code
runs a seconds-long smoke check on a laptop and the papers' sizes on a GPU:

    pytest benchmarks/ --mt-bench-shapes default,gpt2-medium --mt-bench-prompts 16
    pytest benchmarks/ --mt-bench-device cuda --mt-bench-dtype bfloat16 --mt-bench-prompts 128

Every benchmark records a ratio measured in one run in `benchmark.extra_info` (see
`--benchmark-json`); none asserts a time.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from benchmarks.shapes import DEFAULT_ROOT, SHAPES
from benchmarks.subjects import BenchSettings, Subject, subject_dirs


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("mechtests-bench", "mechtests benchmarks")
    group.addoption("--mt-bench-shapes", default=os.environ.get("MT_BENCH_SHAPES", "default,gpt2-medium"),
                    help="comma-separated subjects: default (the zoo pair), gpt2-medium, gpt2-small, tiny")
    group.addoption("--mt-bench-prompts", type=int, default=int(os.environ.get("MT_BENCH_PROMPTS", "16")),
                    help="prompts per generation benchmark (papers: 1,199)")
    group.addoption("--mt-bench-tokens", type=int, default=int(os.environ.get("MT_BENCH_TOKENS", "20")),
                    help="new tokens per prompt (papers: 20)")
    group.addoption("--mt-bench-batch", type=int, default=int(os.environ.get("MT_BENCH_BATCH", "16")),
                    help="generation batch size")
    group.addoption("--mt-bench-rounds", type=int, default=int(os.environ.get("MT_BENCH_ROUNDS", "3")),
                    help="timed rounds per benchmark (plus one warm-up round)")
    group.addoption("--mt-bench-window", type=int, default=int(os.environ.get("MT_BENCH_WINDOW", "1024")),
                    help="perplexity window in tokens (papers: 1,024; at most the model's context)")
    group.addoption("--mt-bench-windows", type=int, default=int(os.environ.get("MT_BENCH_WINDOWS", "4")),
                    help="perplexity windows per condition")
    group.addoption("--mt-bench-device", default=os.environ.get("MT_BENCH_DEVICE", "cpu"))
    group.addoption("--mt-bench-dtype", default=os.environ.get("MT_BENCH_DTYPE", "float32"),
                    choices=("float32", "bfloat16", "float16"))
    group.addoption("--mt-bench-root", default=os.environ.get("MT_BENCH_ROOT", str(DEFAULT_ROOT)),
                    help="where random-init benchmark checkpoints are written (reused across runs)")


def _settings(config: pytest.Config) -> BenchSettings:
    return BenchSettings(
        prompts=config.getoption("--mt-bench-prompts"),
        tokens=config.getoption("--mt-bench-tokens"),
        batch=config.getoption("--mt-bench-batch"),
        rounds=config.getoption("--mt-bench-rounds"),
        window=config.getoption("--mt-bench-window"),
        windows=config.getoption("--mt-bench-windows"),
        device=config.getoption("--mt-bench-device"),
        dtype=config.getoption("--mt-bench-dtype"),
        root=Path(config.getoption("--mt-bench-root")),
    )


def subject_names(config: pytest.Config) -> list[str]:
    names = [s.strip() for s in str(config.getoption("--mt-bench-shapes")).split(",") if s.strip()]
    unknown = [n for n in names if n != "default" and n not in SHAPES]
    if unknown:
        raise pytest.UsageError(
            f"--mt-bench-shapes: unknown {unknown}; choose from default, {', '.join(SHAPES)}"
        )
    return names


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "subject_name" in metafunc.fixturenames:
        metafunc.parametrize("subject_name", subject_names(metafunc.config), scope="session")


@pytest.fixture(scope="session")
def bench_settings(pytestconfig: pytest.Config) -> BenchSettings:
    return _settings(pytestconfig)


@pytest.fixture(scope="session")
def subject(subject_name: str, bench_settings: BenchSettings) -> Iterator[Subject]:
    from mechtests.models import load_model

    base_dir, tuned_dir, prompts = subject_dirs(subject_name, bench_settings)
    model = load_model(base_dir, device=bench_settings.device, dtype=bench_settings.torch_dtype)
    yield Subject(subject_name, base_dir, tuned_dir, model, prompts.head(bench_settings.prompts))
    del model
