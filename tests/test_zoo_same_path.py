"""The default pair loads by exactly the path a user's checkpoint does (issue 4, point 2):
`--mt-base`/`--mt-tuned` (with the zoo's probe and data) pointed at the zoo directories give the
same report as the default pair."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest

# Claims touching every stage (weights, probe, generation + scoring, attribution), kept small.
SUBSET = "weights_stay_close or probe_separates_toxic_text or dpo_reduces_toxicity or attribution_is_complete"


def _claims(report: Path) -> dict[tuple[str, str], dict[str, Any]]:
    doc = json.loads(report.read_text(encoding="utf-8"))
    return {(c["claim"], json.dumps(c["params"], sort_keys=True)): c for c in doc["claims"]}


@pytest.mark.slow  # a full plugin session (or several): > 10 s
def test_explicit_zoo_paths_give_the_default_pairs_report(pytester: pytest.Pytester) -> None:
    from mechtests.errors import CheckpointError
    from mechtests.zoo import default_pair

    try:
        zoo = default_pair()
    except CheckpointError as exc:
        pytest.skip(f"the embedded default pair is not built: {exc}")
    hypotheses = Path(__file__).resolve().parents[1] / "hypotheses"
    shutil.copytree(hypotheses, pytester.path / "hypotheses", ignore=shutil.ignore_patterns("__pycache__", "results"))
    common = ("hypotheses", "--mt-profile", "smoke", "-k", SUBSET, "-p", "no:cacheprovider", "-q",
              "--mt-inconclusive", "pass")
    default = pytester.runpytest_subprocess(*common, "--mt-cache-dir", "cache-default", "--mt-json", "default.json")
    explicit = pytester.runpytest_subprocess(
        *common, "--mt-cache-dir", "cache-explicit", "--mt-json", "explicit.json",
        f"--mt-base={zoo.base_dir}", f"--mt-tuned={zoo.tuned_dir}", f"--mt-probe={zoo.probe_path}",
        f"--mt-data={zoo.data_dir}")
    assert default.ret == explicit.ret == 0, default.stdout.str()[-2000:] + explicit.stdout.str()[-2000:]

    a, b = _claims(pytester.path / "default.json"), _claims(pytester.path / "explicit.json")
    assert sorted(a) == sorted(b) and len(a) >= 4
    for key, claim in a.items():
        for field in ("estimate", "ci_low", "ci_high", "n", "verdict"):
            assert b[key][field] == pytest.approx(claim[field], rel=1e-9, abs=1e-12) if isinstance(claim[field], float) \
                else b[key][field] == claim[field], (key, field)
    pairs_a = json.loads((pytester.path / "default.json").read_text())["pairs"]
    pairs_b = json.loads((pytester.path / "explicit.json").read_text())["pairs"]
    (fingerprints_a,), (fingerprints_b,) = pairs_a.values(), pairs_b.values()
    assert [fingerprints_a[r]["sha256"] for r in ("base", "tuned")] == [fingerprints_b[r]["sha256"] for r in ("base", "tuned")]
