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
    # The papers' tokenizer call (truncation=True) keeps a long prompt's *first* tokens.
    assert ids.tolist() == [[pad, 97, 98, 99], [pad, pad, pad, 122], [48, 49, 50, 51]]
    assert mask.tolist() == [[0, 1, 1, 1], [0, 0, 0, 1], [1, 1, 1, 1]]
    last, _ = left_padded_batch(tok, ["0123456789"], max_tokens=4, keep="last")
    assert last.tolist() == [[54, 55, 56, 57]]


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


# ---------------------------------------------------------------- the papers' formats


def _jsonl(path: Path, rows: list[object]) -> Path:
    import json

    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def test_realtoxicityprompts_uses_only_challenging_prompts(tmp_path: Path) -> None:
    from mechtests.data import read_prompts

    rows = [{"filename": f"{i}.txt", "challenging": i % 3 == 0, "prompt": {"text": f"prompt {i}", "toxicity": 0.1},
             "continuation": {"text": "..."}} for i in range(9)]
    path = _jsonl(tmp_path / "prompts.jsonl", rows)
    prompts, record = read_prompts(path)
    assert prompts.texts == ("prompt 0", "prompt 3", "prompt 6")
    assert (record.count, record.read) == (3, 9) and "challenging == true only (3 of 9)" in record.note
    assert record.sha256 == __import__("hashlib").sha256(path.read_bytes()).hexdigest()
    everything, record_all = read_prompts(path, all_prompts=True)
    assert len(everything) == 9 and record_all.count == 9 and "all 9" in record_all.note


def test_lee_challenge_prompts_and_errors_by_line(tmp_path: Path) -> None:
    from mechtests.data import read_prompts

    prompts, record = read_prompts(_jsonl(tmp_path / "challenge_prompts.jsonl", [{"prompt": "a b"}, {"prompt": "c"}]))
    assert prompts.texts == ("a b", "c") and record.note == "" and record.format == "jsonl prompt"
    with pytest.raises(DataError, match=r"challenge_prompts.jsonl:2: the prompt is empty"):
        read_prompts(_jsonl(tmp_path / "challenge_prompts.jsonl", [{"prompt": "a"}, {"prompt": "  "}]))
    with pytest.raises(DataError, match=r"bad.jsonl:1: no prompt text.*keys on this line: \['text'\]"):
        read_prompts(_jsonl(tmp_path / "bad.jsonl", [{"text": "a"}]))
    with pytest.raises(DataError, match='"challenging" must be true or false'):
        read_prompts(_jsonl(tmp_path / "rtp.jsonl", [{"challenging": "yes", "prompt": {"text": "a"}}]))


def test_lee_wiki_samples_gold_is_the_truth(tmp_path: Path) -> None:
    from mechtests.data import read_f1_items

    items, record = read_f1_items(_jsonl(tmp_path / "wiki_samples.jsonl", [
        {"prompt": "The cat", "gold": " sat on the mat"},
        {"prompt": "A dog", "gold": "A dog ran away"},  # gold repeats its prompt: removed
    ]))
    assert items.golds == (" sat on the mat", " ran away") and "1 gold(s) repeated the prompt" in record.note
    assert record.format.startswith("jsonl prompt + gold")
    with pytest.raises(DataError, match=r"w.jsonl:1: \"gold\" has no continuation"):
        read_f1_items(_jsonl(tmp_path / "w.jsonl", [{"prompt": "The cat", "gold": "The cat"}]))
    with pytest.raises(DataError, match='1 of 2 lines have "gold"'):
        read_f1_items(_jsonl(tmp_path / "w.jsonl", [{"prompt": "a", "gold": " b"}, {"prompt": "c"}]))


def test_labelled_corpora_in_jigsaw_and_csv_form(tmp_path: Path) -> None:
    from mechtests.data import read_labelled

    csv_path = tmp_path / "train.csv"
    csv_path.write_text('id,comment_text,toxic,severe_toxic\n1,"you idiot, go",1,0\n2,thanks a lot,0,0\n', encoding="utf-8")
    data, record = read_labelled(csv_path)
    assert data.texts == ("you idiot, go", "thanks a lot") and data.labels == (1, 0)
    assert record.format == "csv comment_text/toxic" and "1 labelled 1, 1 labelled 0" in record.note
    jig = _jsonl(tmp_path / "j.jsonl", [{"comment_text": "bad", "toxic": 1}, {"comment_text": "good", "toxic": 0}])
    assert read_labelled(jig)[0].labels == (1, 0)
    with pytest.raises(DataError, match=r"every example has label \[1\].*both classes"):
        read_labelled(_jsonl(tmp_path / "one.jsonl", [{"text": "a", "label": 1}, {"text": "b", "label": 1}]))
    with pytest.raises(DataError, match=r"two.jsonl:1: more than one label field"):
        read_labelled(_jsonl(tmp_path / "two.jsonl", [{"text": "a", "label": 1, "toxic": 1}]))


def test_perplexity_text_from_raw_files_and_datasets_directories(tmp_path: Path) -> None:
    datasets = pytest.importorskip("datasets")
    from mechtests.data import read_perplexity_text

    raw = tmp_path / "wikitext-2-raw-v1"
    raw.mkdir()
    (raw / "wiki.test.raw").write_text(" = Title = \n\n Some text .\n", encoding="utf-8")
    text, record = read_perplexity_text(raw)
    assert text == " = Title = \n\n Some text .\n" and record.path.endswith("wiki.test.raw")  # exactly as written
    rows = [" = Title = \n", "", " Some text .\n"]
    datasets.DatasetDict({"test": datasets.Dataset.from_dict({"text": rows}),
                          "train": datasets.Dataset.from_dict({"text": ["x"]})}).save_to_disk(str(tmp_path / "ds"))
    joined, ds_record = read_perplexity_text(tmp_path / "ds")
    assert joined == "\n\n".join(rows) and ds_record.read == 3 and "test split" in ds_record.format
    (tmp_path / "empty.txt").write_text("  \n", encoding="utf-8")
    with pytest.raises(DataError, match=r"empty.txt: the perplexity text is empty"):
        read_perplexity_text(tmp_path / "empty.txt")
    for suffix in (".jsonl", ".json", ".csv", ".TSV"):  # read as text, their syntax would be scored as prose
        (tmp_path / f"wiki{suffix}").write_text('{"text": "Some text ."}\n', encoding="utf-8")
        with pytest.raises(DataError, match=rf"wiki\{suffix}: a \{suffix} file is structured data, not held-out text"):
            read_perplexity_text(tmp_path / f"wiki{suffix}")


def test_text_is_read_as_written_whatever_its_line_ends_marks_and_separators(tmp_path: Path) -> None:
    """Jigsaw's comments span lines inside quoted CSV fields; web text holds form feeds and U+2028
    (raw inside a JSON string is valid JSON); editors add a byte-order mark and CRLF line ends.
    Every text is read exactly as written: a multi-line comment keeps its line breaks (they were
    dropped, gluing "line" and "second"), one prompt stays one prompt, the mark is not content, and
    error messages name the physical line."""
    import csv
    import io

    from mechtests.data import read_f1_items, read_labelled, read_perplexity_text, read_prompts

    weird = "a\u2028b, c\x0cd \x85e"
    table = ('id,comment_text,toxic\r\n1,"first line\n\nsecond line",1\r\n'
             f'2,"{weird}",0\r\n3,"said ""hi""\r\nthen left",0\r\n')
    csv_path = tmp_path / "train.csv"
    csv_path.write_bytes(b"\xef\xbb\xbf" + table.encode())  # Excel's UTF-8 export
    data, record = read_labelled(csv_path)
    truth = [row["comment_text"] for row in csv.DictReader(io.StringIO(table, newline=""))]
    assert list(data.texts) == truth == ["first line\n\nsecond line", weird, 'said "hi"\r\nthen left']
    assert data.labels == (1, 0, 0) and record.count == 3 and record.format == "csv comment_text/toxic"
    csv_path.write_text(table + '4,"two\nlines",maybe\r\n', encoding="utf-8", newline="")
    with pytest.raises(DataError, match=r"train.csv:9: \"toxic\" must be 0 or 1, got 'maybe'"):
        read_labelled(csv_path)  # line 9: the row's last physical line

    rows = [{"prompt": weird}, {"prompt": {"text": "line\u2029two"}, "challenging": True}]
    jsonl = tmp_path / "prompts.jsonl"
    jsonl.write_bytes(b"\xef\xbb\xbf" + "\r\n".join(json.dumps(r, ensure_ascii=False) for r in rows).encode())
    prompts, record = read_prompts(jsonl, all_prompts=True)
    assert prompts.texts == (weird, "line\u2029two") and record.read == 2

    txt = tmp_path / "prompts.txt"
    txt.write_bytes(b"\xef\xbb\xbf" + f"one {weird}\r\ntwo\rthree\n\nfour".encode())
    assert read_prompts(txt)[0].texts == (f"one {weird}", "two", "three", "four")

    f1 = tmp_path / "wiki_samples.jsonl"
    f1.write_text(json.dumps({"prompt": "The\u2028cat", "gold": " sat"}, ensure_ascii=False) + "\r\n", encoding="utf-8")
    assert read_f1_items(f1)[0].prompts == ("The\u2028cat",)

    raw = tmp_path / "wiki.test.raw"
    raw.write_bytes(b"\xef\xbb\xbf = Title = \r\n\r\n Some\x0ctext .\r\n")
    text, _ = read_perplexity_text(raw)
    assert text == " = Title = \r\n\r\n Some\x0ctext .\r\n"  # line ends as written, the mark gone
