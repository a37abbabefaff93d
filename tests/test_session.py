"""mt.session: what pytest builds for one pair, outside pytest, with the same numbers."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from tiny_project import build_tiny_project, run_claims

import mechtests as mt

CLAIM = '''
import mechtests as mt


def test_reduction(evaluator, claim):
    tox_base, tox_tuned = evaluator.toxicity("base"), evaluator.toxicity("tuned")
    claim("dpo_reduces_toxicity", metric="1 - tox_tuned / tox_base", direction=">", threshold=0.3,
          samples=(tox_base, tox_tuned), statistic=mt.relative_reduction)
'''


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    # module scope, and the model stack imported here: pytester snapshots sys.modules per test and
    # drops what a test imported, and a second import of `datasets` (under transformer_lens)
    # fails in pyarrow ("type extension already defined")
    import transformer_lens.model_bridge  # noqa: F401

    return build_tiny_project(tmp_path_factory.mktemp("session_project"))


@pytest.mark.slow  # a plugin session and a notebook session on the same pair: > 10 s
def test_a_session_gives_the_numbers_pytest_gives(pytester: pytest.Pytester, project: dict[str, Path]) -> None:
    run_claims(pytester, project, {"test_reduction.py": CLAIM}, "--mt-data", str(project["data"]),
               "--mt-resamples", "400", conftest="")
    (record,) = json.loads((pytester.path / "r.json").read_text())["claims"]
    s = mt.session(base=project["base"], tuned=project["tuned"], probe=project["probe"], data=project["data"],
                   no_cache=True, resamples=400)
    assert s.run.n_resamples == 400 and s.spec.name == record["pair"]
    tox_base, tox_tuned = s.evaluator.toxicity("base"), s.evaluator.toxicity("tuned")
    result = s.claim("dpo_reduces_toxicity", metric="1 - tox_tuned / tox_base", direction=">", threshold=0.3,
                     samples=(tox_base, tox_tuned), statistic=mt.relative_reduction)
    mine = result.to_record(nodeid=record["nodeid"])
    for key in ("estimate", "ci_low", "ci_high", "p_value", "n", "verdict", "confidence", "pair"):
        assert mine[key] == record[key], key
    assert s.inputs["probe"]["sha256"] and s.inputs["base"]["sha256"] == s.pair.base.fingerprint
    assert len(s.selections.top_toxic(3)) == 3 and s.attribution.n_blocks >= 1


def test_session_options_are_the_plugins(project: dict[str, Path]) -> None:
    with pytest.raises(mt.UsageError, match="unknown option.*profil"):
        mt.session(profil="ci")
    with pytest.raises(mt.UsageError, match="--mt-profile: 'huge' is not one of"):
        mt.session(profile="huge")
    with pytest.raises(mt.UsageError, match="--mt-tuned is required together with --mt-base"):
        mt.session(base=project["base"])


def test_labelled_data_of_another_concept_trains_its_own_probe(tmp_path: Path) -> None:
    """On the embedded pair, --mt-probe-data is another concept's labels: a probe is trained on
    them (never the embedded toxicity probe checked against caps labels), through the cached path."""
    from mechtests.preflight import probe_file
    from mechtests.zoo import default_pair

    words = ["the cat sat on the mat", "we walked home late", "a quiet morning in town", "she read the letter",
             "they fixed the old car", "rain fell all day", "he cooked dinner for us", "the dog barked twice"]
    rows = [{"text": w.upper() if i % 2 else w, "label": i % 2} for i, w in enumerate(words * 4)]
    caps = tmp_path / "caps.jsonl"
    caps.write_text("".join(json.dumps(r) + "\n" for r in rows))
    zoo = default_pair()
    plain = mt.session(no_cache=True)
    assert probe_file(plain.settings, plain.spec, zoo) == Path(zoo.probe_path)
    assert plain.inputs["probe"]["source"] == str(zoo.probe_path)
    concept = mt.session(probe_data=caps, cache_dir=tmp_path / "cache")
    assert probe_file(concept.settings, concept.spec, zoo) is None
    trained = concept.inputs["probe"]["trained"]
    assert trained["sha256"] == concept.data.probe_data.sha256 and trained["n"] == len(rows)
    assert not np.allclose(concept.probe.weight.numpy(), plain.probe.weight.numpy())
    # the same cached path as any trained probe: a second session reads it back
    again = mt.session(probe_data=caps, cache_dir=tmp_path / "cache")
    assert again.cache.stats.disk_hits == 1 and np.array_equal(again.probe.weight.numpy(), concept.probe.weight.numpy())
    with pytest.raises(mt.UsageError, match="come.*from the session's options"):
        concept.claim("x", metric="m", direction=">", threshold=0.0, estimate=1.0, confidence=0.9)
