"""Streaming statistics keep peak memory independent of the number of prompts (issue 6, item 2).

Each measurement is a fresh process (`python -m benchmarks.memory_probe`), because the peak
resident set size is a high-water mark that only grows. The model is small but has wide MLPs
(4 layers x 4,096 neurons), so storing activations per prompt instead of streaming them would
cost ~1.3 MiB per prompt — hundreds of MiB at the larger N, far outside the 10% band. The
negative control stores exactly that and checks the probe sees it, so the main test can fail.
The papers'-scale measurement (GPT-2-medium shape, N = 64 vs 1,199) is in docs/PERFORMANCE.md.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from mechtests.config import N_BLOCKS

REPO_ROOT = Path(__file__).resolve().parents[1]
N_SMALL, N_LARGE, TOKENS, BATCH = 32, 320, 20, 32
LAYERS, D_MLP = 4, 4096


@pytest.fixture(scope="module")
def wide_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from mechtests.testing import make_tiny_checkpoint

    return make_tiny_checkpoint(tmp_path_factory.mktemp("wide"), n_layers=LAYERS, d_model=64, d_mlp=D_MLP,
                                n_heads=2, n_ctx=64, seed=0)


def probe(checkpoint: Path, n: int, *, hoard: bool = False) -> dict[str, Any]:
    """Run one memory measurement in a fresh single-threaded process and parse its JSON line."""
    cmd = [sys.executable, "-m", "benchmarks.memory_probe", "--source", str(checkpoint), "--n", str(n),
           "--tokens", str(TOKENS), "--batch", str(BATCH)] + (["--hoard"] if hoard else [])
    # glibc keeps freed heap pages (per-arena caches, no trimming), so without these two settings
    # the resident high-water mark drifts by 10-100 MiB with the mix of batch shapes, not with N
    # (measured: +86 MiB at N=320 but +12 MiB at N=640). Trimming makes RSS track live memory.
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false",
           "MALLOC_ARENA_MAX": "1", "MALLOC_TRIM_THRESHOLD_": "0"}
    done = subprocess.run(cmd, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, f"memory probe failed:\n{done.stderr[-3000:]}"
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def small_run(wide_checkpoint: Path) -> dict[str, Any]:
    return probe(wide_checkpoint, N_SMALL)


@pytest.mark.slow  # a full plugin session (or several): > 10 s
def test_peak_memory_does_not_grow_with_prompt_count(wide_checkpoint: Path, small_run: dict[str, Any]) -> None:
    large = probe(wide_checkpoint, N_LARGE)
    # Same statistics either way: [n_blocks, L, d_mlp] accumulators.
    assert large["stats_shape"] == small_run["stats_shape"] == [N_BLOCKS, LAYERS, D_MLP]
    assert large["peak_rss_mib"] == pytest.approx(small_run["peak_rss_mib"], rel=0.10), (small_run, large)


@pytest.mark.slow  # a full plugin session (or several): > 10 s
def test_probe_detects_memory_that_grows_with_prompt_count(wide_checkpoint: Path, small_run: dict[str, Any]) -> None:
    hoarding = probe(wide_checkpoint, N_LARGE, hoard=True)
    expected = N_LARGE * TOKENS * LAYERS * D_MLP * 4 / 2**20  # float32 last-position activations
    assert hoarding["hoarded_mib"] == pytest.approx(expected, rel=1e-6)
    # What makes the main test able to fail: the same 10% band rejects the hoarding run.
    assert hoarding["peak_rss_mib"] > 1.10 * small_run["peak_rss_mib"], (small_run, hoarding)
    # The peak grows past the warm-up's high-water mark by roughly what is kept: less when the
    # hoard reuses pages the warm-up's temporaries had touched (measured 0.74-0.96x) or, probably, when the
    # kernel's proactive reclaim (kdamond runs on this machine) pages out the hoard's cold pages
    # while a loaded machine runs the probe slowly (0.42x measured with two other jobs running),
    # more with heap fragmentation between the 512 KiB tensors (up to 1.6x).
    growth = hoarding["growth_after_warmup_mib"]
    assert 0.3 * expected <= growth <= 2.0 * expected, (growth, expected)
