"""data.py: text sets, prompt/corpus files, left padding and padding-aware pooling."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from mechtests.data import TextSet, left_padded_batch, load_labelled, load_prompts, masked_mean
from mechtests.errors import DataError, UsageError
from mechtests.testing import byte_tokenizer


def test_textset_basics() -> None:
    s = TextSet("x", ("a", "bb", "ccc"), (0, 1, 0))
    assert len(s) == 3
    assert s.head(2) == TextSet("x", ("a", "bb"), (0, 1))
    assert s.subset([2, 0]).texts == ("ccc", "a") and s.subset([2, 0]).labels == (0, 0)
    assert s.sha256 == TextSet("other name", ("a", "bb", "ccc"), (0, 1, 0)).sha256
    assert s.sha256 != TextSet("x", ("a", "bb", "ccc"), (0, 1, 1)).sha256
    # Length-prefixed hashing: moving a character across a boundary changes the hash.
    assert TextSet("x", ("ab", "c")).sha256 != TextSet("x", ("a", "bc")).sha256
    assert TextSet("x", ["a"]).texts == ("a",)


def test_textset_rejects_bad_items() -> None:
    with pytest.raises(DataError, match="2 texts but 1 labels"):
        TextSet("x", ("a", "b"), (1,))
    with pytest.raises(DataError, match="item 1 is int"):
        TextSet("x", ("a", 3))  # type: ignore[arg-type]
    with pytest.raises(UsageError):
        TextSet("x", ("a",)).head(-1)


def test_load_prompts_formats(tmp_path: Path) -> None:
    plain = tmp_path / "p.jsonl"
    plain.write_text(json.dumps({"prompt": "Hello"}) + "\n\n" + json.dumps({"prompt": {"text": "So, I'm"}}) + "\n")
    assert load_prompts(plain).texts == ("Hello", "So, I'm")
    assert load_prompts(plain).name == "p"
    txt = tmp_path / "q.txt"
    txt.write_text("one\n\ntwo\n")
    assert load_prompts(txt).texts == ("one", "two")


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ('{"prompt": "ok"}\n{not json}\n', r"p.jsonl:2: not valid JSON"),
        ('{"prompt": "ok"}\n[1, 2]\n', r"p.jsonl:2: expected a JSON object"),
        ('{"text": "no prompt key"}\n', r"p.jsonl:1: no prompt text"),
        ("\n\n", r"p.jsonl: contains no prompts"),
    ],
)
def test_load_prompts_errors_name_file_and_line(tmp_path: Path, content: str, message: str) -> None:
    path = tmp_path / "p.jsonl"
    path.write_text(content)
    with pytest.raises(DataError, match=message):
        load_prompts(path)


def test_load_prompts_missing_file(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="no such file"):
        load_prompts(tmp_path / "nope.jsonl")


def test_load_labelled(tmp_path: Path) -> None:
    path = tmp_path / "d.jsonl"
    path.write_text('{"text": "bad", "label": 1}\n{"text": "good", "label": 0}\n')
    data = load_labelled(path)
    assert data.texts == ("bad", "good") and data.labels == (1, 0)
    path.write_text('{"text": "bad", "label": 2}\n')
    with pytest.raises(DataError, match=r"d.jsonl:1: \"label\" must be 0 or 1"):
        load_labelled(path)
    path.write_text('{"text": 5, "label": 1}\n')
    with pytest.raises(DataError, match=r"d.jsonl:1: \"text\" must be a string"):
        load_labelled(path)


def test_left_padded_batch_known_answer() -> None:
    tok = byte_tokenizer()
    ids, mask = left_padded_batch(tok, ["abc", "z", "0123456789"], max_tokens=4)
    pad = tok.pad_token_id
    assert ids.tolist() == [[pad, 97, 98, 99], [pad, pad, pad, 122], [54, 55, 56, 57]]
    assert mask.tolist() == [[0, 1, 1, 1], [0, 0, 0, 1], [1, 1, 1, 1]]


def test_left_padded_batch_bad_input() -> None:
    tok = byte_tokenizer()
    with pytest.raises(UsageError, match="empty list"):
        left_padded_batch(tok, [], max_tokens=4)
    with pytest.raises(DataError, match="text 1 .* has no tokens"):
        left_padded_batch(tok, ["a", ""], max_tokens=4)
    with pytest.raises(UsageError, match="max_tokens"):
        left_padded_batch(tok, ["a"], max_tokens=0)


def test_masked_mean_known_answer_ignores_padding_values() -> None:
    x = torch.tensor([[[float("nan"), 1.0], [2.0, 3.0], [4.0, 5.0]], [[1.0, 1.0], [1.0, 1.0], [7.0, 9.0]]])
    mask = torch.tensor([[0, 1, 1], [0, 0, 1]])
    torch.testing.assert_close(masked_mean(x, mask), torch.tensor([[3.0, 4.0], [7.0, 9.0]]), rtol=0, atol=0)


def test_masked_mean_errors() -> None:
    with pytest.raises(DataError, match="no real tokens"):
        masked_mean(torch.ones(1, 2, 3), torch.zeros(1, 2))
    with pytest.raises(UsageError, match="needs x"):
        masked_mean(torch.ones(2, 3), torch.ones(2, 3))


@settings(max_examples=25, deadline=None)
@given(st.lists(st.integers(min_value=1, max_value=6), min_size=1, max_size=4), st.integers(min_value=0, max_value=5),
       st.integers(min_value=0, max_value=2**31 - 1))
def test_masked_mean_padding_invariance(lengths: list[int], extra_pad: int, seed: int) -> None:
    """Adding more left padding (with garbage values) never changes the pooled vectors."""
    gen = torch.Generator().manual_seed(seed)
    width = max(lengths)
    x = torch.randn(len(lengths), width, 3, generator=gen, dtype=torch.float64)
    mask = torch.zeros(len(lengths), width, dtype=torch.long)
    for i, n in enumerate(lengths):
        mask[i, width - n :] = 1
    padded_x = torch.cat([torch.randn(len(lengths), extra_pad, 3, generator=gen, dtype=torch.float64) * 1e6, x], dim=1)
    padded_mask = torch.cat([torch.zeros(len(lengths), extra_pad, dtype=torch.long), mask], dim=1)
    torch.testing.assert_close(masked_mean(padded_x, padded_mask), masked_mean(x, mask), rtol=1e-12, atol=1e-12)
