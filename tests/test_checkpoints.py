"""Checkpoints are read exactly as given, or refused with the path, the counts and the fix."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from mechtests.checkpoints import ModelSource, classify_source, inspect_source, resolve_pair_sources
from mechtests.errors import CheckpointError, IncompatiblePairError, UsageError
from mechtests.models import load_model, load_pair
from mechtests.testing import make_tiny_checkpoint, perturbed_copy


@pytest.fixture(scope="module")
def ckpts(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("ckpts")
    base = make_tiny_checkpoint(root / "base", n_layers=2, d_model=32, d_mlp=64)
    tuned = perturbed_copy(base, root / "tuned", scale=1e-2)
    wide = make_tiny_checkpoint(root / "wide", n_layers=2, d_model=32, d_mlp=128)
    return {"root": root, "base": base, "tuned": tuned, "wide": wide}


def _state(directory: Path) -> dict[str, torch.Tensor]:
    return load_file(str(directory / "model.safetensors"))


def _config_only_copy(src: Path, dst: Path) -> Path:
    """config.json + tokenizer, no weights (what a user has beside a state-dict file)."""
    dst.mkdir(parents=True, exist_ok=True)
    for file in src.iterdir():
        if file.name != "model.safetensors":
            shutil.copy(file, dst / file.name)
    return dst


@pytest.mark.parametrize("fmt", ["pt-state", "pt-state_dict", "pt-model", "bin-bare", "safetensors", "pth-bare"])
def test_state_dict_files_load_to_the_directory_fingerprint(ckpts: dict[str, Path], tmp_path: Path, fmt: str) -> None:
    """Round trip: a tiny tuned model saved in each format gives the directory checkpoint's weights."""
    state = _state(ckpts["tuned"])
    kind, _, nest = fmt.partition("-")
    path = tmp_path / f"dpo.{kind}"
    if kind == "safetensors":
        save_file(state, str(path))
    else:
        payload = state if nest == "bare" else {"step_idx": 7, nest: state, "metrics": {"loss": 0.1}}
        torch.save(payload, path)
    direct = load_model(ckpts["tuned"])
    from_file = load_model(path, config_from=str(ckpts["base"]))
    assert from_file.fingerprint == direct.fingerprint
    record = from_file.load_record
    assert record is not None and record.kind == "state_dict" and record.config_from == str(ckpts["base"])
    assert record.nested_under == (None if nest in ("", "bare") else nest)
    assert load_model(path, config_from=str(ckpts["base"])).fingerprint == from_file.fingerprint  # stable


def test_lee_style_pair_base_directory_plus_tuned_file(ckpts: dict[str, Path], tmp_path: Path) -> None:
    torch.save({"step_idx": 1, "state": _state(ckpts["tuned"]), "metrics": {}}, tmp_path / "dpo.pt")
    pair = load_pair(ckpts["base"], tmp_path / "dpo.pt", name="lee")
    assert pair.tuned.fingerprint == load_model(ckpts["tuned"]).fingerprint
    assert pair.tuned.load_record.config_from == str(ckpts["base"])  # type: ignore[union-attr]
    assert pair.base.load_record.kind == "directory"  # type: ignore[union-attr]


def test_renamed_nested_state_dict_in_a_directory_is_read_as_meant(ckpts: dict[str, Path], tmp_path: Path) -> None:
    """`pytorch_model.bin` that is really Lee's `{"state": ...}` loaded random weights before."""
    made = _config_only_copy(ckpts["tuned"], tmp_path / "made")
    torch.save({"step_idx": 3, "state": _state(ckpts["tuned"]), "metrics": {}}, made / "pytorch_model.bin")
    model = load_model(made)
    assert model.fingerprint == load_model(ckpts["tuned"]).fingerprint
    assert model.load_record.nested_under == "state"  # type: ignore[union-attr]


def test_foreign_weights_in_a_directory_are_refused_with_counts(ckpts: dict[str, Path], tmp_path: Path) -> None:
    made = _config_only_copy(ckpts["base"], tmp_path / "made")
    torch.save({"encoder.layer.0.weight": torch.ones(3, 3), "encoder.layer.1.weight": torch.ones(3)},
               made / "pytorch_model.bin")
    with pytest.raises(CheckpointError) as info:
        load_model(made)
    text = str(info.value)
    assert str(made) in text and "29 parameter(s) missing" in text and "2 unexpected key(s)" in text
    assert "encoder.layer.0.weight" in text and "Fix:" in text
    with pytest.raises(CheckpointError, match="29 parameter"):
        inspect_source(classify_source(made, tmp_path, where="--mt-tuned"))  # found before loading


def test_one_missing_and_one_unexpected_key(ckpts: dict[str, Path], tmp_path: Path) -> None:
    state = _state(ckpts["tuned"])
    state.pop("transformer.h.1.mlp.c_fc.bias")
    state["transformer.h.1.mlp.extra"] = torch.zeros(2)
    save_file(state, str(tmp_path / "w.safetensors"))
    source = resolve_pair_sources(ModelSource(str(ckpts["base"]), "directory"),
                                  ModelSource(str(tmp_path / "w.safetensors"), "state_dict"))[1]
    for attempt in (lambda: inspect_source(source), lambda: load_model(source)):
        with pytest.raises(CheckpointError) as info:
            attempt()
        text = str(info.value)
        assert "1 parameter(s) missing" in text and "transformer.h.1.mlp.c_fc.bias" in text
        assert "1 unexpected key(s)" in text and "transformer.h.1.mlp.extra" in text


def test_shape_mismatch_of_another_width(ckpts: dict[str, Path], tmp_path: Path) -> None:
    save_file(_state(ckpts["wide"]), str(tmp_path / "wide.safetensors"))
    with pytest.raises(CheckpointError, match=r"shape mismatch\(es\).*c_fc.*\(32, 128\) vs model \(32, 64\)"):
        load_model(tmp_path / "wide.safetensors", config_from=str(ckpts["base"]))


def test_old_gpt2_attention_buffers_are_the_only_droppable_keys(ckpts: dict[str, Path], tmp_path: Path) -> None:
    state = dict(_state(ckpts["tuned"]))
    for layer in range(2):
        state[f"transformer.h.{layer}.attn.bias"] = torch.tril(torch.ones(1, 1, 64, 64))
        state[f"transformer.h.{layer}.attn.masked_bias"] = torch.tensor(-1e4)
    torch.save(state, tmp_path / "old.bin")
    model = load_model(tmp_path / "old.bin", config_from=str(ckpts["base"]))
    assert model.fingerprint == load_model(ckpts["tuned"]).fingerprint
    assert len(model.load_record.dropped_keys) == 4  # type: ignore[union-attr]


def test_transformer_lens_state_dict_is_refused_with_the_reason(ckpts: dict[str, Path], tmp_path: Path) -> None:
    torch.save({"embed.W_E": torch.zeros(257, 32), "blocks.0.attn.W_Q": torch.zeros(2, 32, 16),
                "blocks.0.mlp.W_in": torch.zeros(32, 64)}, tmp_path / "tl.pt")
    with pytest.raises(CheckpointError, match="TransformerLens.*folded.*cannot be inverted"):
        load_model(tmp_path / "tl.pt", config_from=str(ckpts["base"]))


def test_nan_weights_are_refused_at_load(ckpts: dict[str, Path], tmp_path: Path) -> None:
    state = _state(ckpts["tuned"])
    state["transformer.h.0.mlp.c_proj.weight"][0, 0] = float("nan")
    save_file(state, str(tmp_path / "nan.safetensors"))
    with pytest.raises(CheckpointError, match=r"transformer.h.0.mlp.c_proj.weight holds 1 NaN/inf"):
        load_model(tmp_path / "nan.safetensors", config_from=str(ckpts["base"]))


@pytest.mark.parametrize("damage", ["truncated", "empty", "garbage", "text"])
def test_damaged_files_are_named(ckpts: dict[str, Path], tmp_path: Path, damage: str) -> None:
    good = (ckpts["tuned"] / "model.safetensors").read_bytes()
    path = tmp_path / ("x.pt" if damage == "text" else "x.safetensors")
    path.write_bytes({"truncated": good[: len(good) // 2], "empty": b"", "garbage": b"\x00garbage" * 9,
                      "text": b"hello, not a model"}[damage])
    source = ModelSource(str(path), "state_dict", str(ckpts["base"]))
    with pytest.raises(CheckpointError) as info:
        inspect_source(source)
    assert str(path) in str(info.value) and "Fix:" in str(info.value)


def test_both_state_dict_files_without_config_say_what_to_add(tmp_path: Path) -> None:
    a, b = ModelSource(str(tmp_path / "a.pt"), "state_dict"), ModelSource(str(tmp_path / "b.pt"), "state_dict")
    with pytest.raises(UsageError, match="--mt-config-from"):
        resolve_pair_sources(a, b)
    shared = ModelSource("gpt2-medium", "hub")
    assert [s.config_from for s in resolve_pair_sources(a, b, shared)] == ["gpt2-medium", "gpt2-medium"]


def test_classify_sources(ckpts: dict[str, Path]) -> None:
    root = ckpts["root"]
    assert classify_source("base", root, where="x").kind == "directory"
    assert classify_source("gpt2-medium", root, where="x") == ModelSource("gpt2-medium", "hub")
    # "models/bse" while models/ exists: a typo of a path, never a hub name (no minute of retries)
    with pytest.raises(CheckpointError, match="no such directory or file.*there is base"):
        classify_source(f"{root.name}/bse", root.parent, where="--mt-base")
    for path_like in ("./nothing", "/abs/nothing", "a/b/c", "weights.pt"):
        with pytest.raises(CheckpointError, match="no such directory or file"):
            classify_source(path_like, root, where="--mt-tuned")
    (root / "notes.txt").write_text("x")
    with pytest.raises(UsageError, match="not a weight file"):
        classify_source("notes.txt", root, where="--mt-tuned")


def test_inspection_sees_incompatible_configs_without_loading(ckpts: dict[str, Path]) -> None:
    from mechtests.checkpoints import compare_facts

    base = inspect_source(ModelSource(str(ckpts["base"]), "directory"))
    wide = inspect_source(ModelSource(str(ckpts["wide"]), "directory"))
    with pytest.raises(IncompatiblePairError, match="d_mlp: base has 64, tuned has 128"):
        compare_facts(base.facts, wide.facts, where="test")


def test_keys_transformers_renames_on_load_are_read_as_it_reads_them(tmp_path: Path) -> None:
    """EXAONE's checkpoints keep GPT-2-style names (``transformer.h.*``) that transformers maps to
    ``model.layers.*`` when loading: the strict key check applies the same renaming, so the directory
    and its weight file as a state dict both load to the very weights save_pretrained wrote; a file
    holding one weight under both names is refused (one would be dropped)."""
    from transformers import AutoModelForCausalLM, ExaoneConfig

    from mechtests.models import weights_fingerprint
    from mechtests.testing import byte_tokenizer

    config = ExaoneConfig(vocab_size=257, hidden_size=32, intermediate_size=64, num_layers=2, num_attention_heads=2,
                          num_key_value_heads=2, max_position_embeddings=64, bos_token_id=256, eos_token_id=256,
                          pad_token_id=256)
    torch.manual_seed(0)
    hf = AutoModelForCausalLM.from_config(config)
    directory = tmp_path / "exaone"
    hf.save_pretrained(directory)
    byte_tokenizer().save_pretrained(directory)
    on_disk = _state(directory)
    assert any(k.startswith("transformer.h.0.") for k in on_disk) and not any(k.startswith("model.") for k in on_disk)

    assert inspect_source(ModelSource(str(directory), "directory")).check.missing == ()
    expected = weights_fingerprint(dict(hf.named_parameters()))
    assert load_model(directory).fingerprint == expected
    as_file = load_model(directory / "model.safetensors", config_from=str(directory))
    assert as_file.fingerprint == expected
    assert as_file.load_record is not None and as_file.load_record.n_tensors == len(on_disk)

    twice = dict(on_disk)
    twice["model.embed_tokens.weight"] = on_disk["transformer.wte.weight"].clone()
    save_file(twice, str(tmp_path / "twice.safetensors"))
    with pytest.raises(CheckpointError, match=r"keys '(model.embed_tokens|transformer.wte).weight' and "
                                              r"'(transformer.wte|model.embed_tokens).weight' both load as "
                                              r"'model.embed_tokens.weight'.*silently dropped"):
        inspect_source(ModelSource(str(tmp_path / "twice.safetensors"), "state_dict", config_from=str(directory)))
