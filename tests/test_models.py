"""models.py: loading, compatibility checks, fingerprints, hook names and weight accessors."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
import torch
from transformer_lens.config import TransformerBridgeConfig

from mechtests.data import left_padded_batch
from mechtests.errors import CheckpointError, IncompatiblePairError, UsageError
from mechtests.models import LoadedModel, ModelPair, check_compatible, load_model, load_pair, weights_fingerprint
from mechtests.testing import make_tiny_checkpoint, perturbed_copy


def _batch(model: LoadedModel) -> tuple[torch.Tensor, torch.Tensor]:
    return left_padded_batch(model.tokenizer, ["hello there friend", "abc"], max_tokens=32, device=model.device)


def test_loads_local_checkpoint_facts(tiny_pair: ModelPair) -> None:
    base = tiny_pair.base
    assert (base.n_layers, base.d_model, base.d_mlp, base.d_vocab, base.n_ctx) == (2, 32, 64, 257, 64)
    assert base.mlp_kind == ("gated" if "Llama" in base.architecture else "standard")
    assert base.tokenizer.padding_side == "left" and base.tokenizer.pad_token_id is not None
    assert Path(base.source).is_absolute()
    assert base.dtype == torch.float32 and base.device.type == "cpu"


def test_neuron_hook_times_value_vectors_is_mlp_output(tiny_pair: ModelPair) -> None:
    """a @ W_out + b_out reproduces the MLP output: the hook and the value vectors agree."""
    model = tiny_pair.base
    ids, mask = _batch(model)
    got: dict[str, torch.Tensor] = {}
    hooks = []
    for layer in range(model.n_layers):
        hooks.append((model.neuron_hook(layer), lambda a, layer=layer: got.__setitem__(f"a{layer}", a.clone())))
        hooks.append((model.mlp_out_hook(layer), lambda o, layer=layer: got.__setitem__(f"o{layer}", o.clone())))
    with torch.inference_mode(), model.hooks(hooks):
        model.forward(ids, mask)
    for layer in range(model.n_layers):
        expected = got[f"a{layer}"] @ model.value_vectors(layer) + model.mlp_out_bias(layer)
        torch.testing.assert_close(expected, got[f"o{layer}"], rtol=1e-5, atol=1e-5)
    assert model.all_value_vectors().shape == (model.n_layers, model.d_mlp, model.d_model)


def test_gated_activation_is_act_gate_times_up(tiny_pairs: dict[str, ModelPair]) -> None:
    """For Llama the neuron activation is silu(x W_gate) * (x W_up): the input of W_down."""
    model = tiny_pairs["llama"].base
    ids, mask = _batch(model)
    got: dict[str, torch.Tensor] = {}
    with torch.inference_mode(), model.hooks([
        ("blocks.1.mlp.hook_in", lambda x: got.__setitem__("x", x.clone())),
        (model.neuron_hook(1), lambda a: got.__setitem__("a", a.clone())),
        (model.pre_activation_hook(1), lambda u: got.__setitem__("up", u.clone())),
    ]):
        model.forward(ids, mask)
    mlp = model.bridge.blocks[1].mlp
    expected = torch.nn.functional.silu(got["x"] @ mlp.W_gate) * (got["x"] @ mlp.W_in)
    torch.testing.assert_close(got["a"], expected, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(got["up"], got["x"] @ model.key_vectors(1), rtol=1e-5, atol=1e-6)


def test_standard_pre_activation_is_x_w_in_plus_b_in(tiny_pairs: dict[str, ModelPair]) -> None:
    model = tiny_pairs["gpt2"].base
    ids, mask = _batch(model)
    got: dict[str, torch.Tensor] = {}
    with torch.inference_mode(), model.hooks([
        ("blocks.0.mlp.hook_in", lambda x: got.__setitem__("x", x.clone())),
        (model.pre_activation_hook(0), lambda p: got.__setitem__("pre", p.clone())),
    ]):
        model.forward(ids, mask)
    torch.testing.assert_close(got["pre"], got["x"] @ model.key_vectors(0) + model.mlp_in_bias(0), rtol=1e-5, atol=1e-5)


def test_hook_names(tiny_pair: ModelPair) -> None:
    model = tiny_pair.base
    assert model.neuron_hook(1) == "blocks.1.mlp.hook_post"
    assert model.final_resid_hook == "blocks.1.hook_resid_post"
    expected_pre = "blocks.0.mlp.hook_pre_linear" if model.mlp_kind == "gated" else "blocks.0.mlp.hook_pre"
    assert model.pre_activation_hook(0) == expected_pre
    assert model.embed_hooks == (("hook_embed",) if model.mlp_kind == "gated" else ("hook_embed", "hook_pos_embed"))
    with pytest.raises(UsageError, match="layer 2 is out of range"):
        model.neuron_hook(2)
    assert not model.has_post_sublayer_norms


def test_named_weights_are_the_checkpoint_tensors_once_each(tiny_checkpoints: dict[str, tuple[Path, Path]],
                                                            tiny_pairs: dict[str, ModelPair]) -> None:
    from safetensors import safe_open

    for arch, pair in tiny_pairs.items():
        weights = pair.base.named_weights()
        with safe_open(str(tiny_checkpoints[arch][0] / "model.safetensors"), framework="pt") as saved:
            names = set(saved.keys())
            # Same names as the saved file (a tied lm_head is saved once, under the embedding).
            assert set(weights) == names, (arch, set(weights) ^ names)
            for name in names:
                assert torch.equal(weights[name].cpu(), saved.get_tensor(name)), name
        # The model's own storage, not copies; the bridge's split q/k/v views of GPT-2's fused
        # attention matrix are not listed.
        held = {param.data_ptr() for param in pair.base.bridge.parameters()}
        assert {w.data_ptr() for w in weights.values()} <= held
        if arch == "gpt2":
            assert len(weights) < len(dict(pair.base.bridge.named_parameters()))


def test_fingerprints(tiny_checkpoints: dict[str, tuple[Path, Path]], tiny_pairs: dict[str, ModelPair]) -> None:
    base_dir, _ = tiny_checkpoints["gpt2"]
    pair = tiny_pairs["gpt2"]
    again = load_model(base_dir)
    assert again.fingerprint == pair.base.fingerprint
    assert pair.base.fingerprint != pair.tuned.fingerprint
    assert len(pair.base.fingerprint) == 64 and int(pair.base.fingerprint, 16) >= 0


def test_weights_fingerprint_known_answer() -> None:
    tensor = torch.tensor([1.0, 2.0], dtype=torch.float32)
    expected = hashlib.sha256(b"w|torch.float32|(2,)\n" + tensor.numpy().tobytes()).hexdigest()
    assert weights_fingerprint({"w": tensor}) == expected
    assert weights_fingerprint({"w": tensor + 1e-7}) != expected


def test_config_source_random_init_is_seeded() -> None:
    cfg = TransformerBridgeConfig(d_model=16, d_head=8, n_layers=1, n_ctx=32, n_heads=2, d_mlp=32, seed=3)
    a, b = load_model(cfg), load_model(cfg)
    assert a.fingerprint == b.fingerprint and a.source.startswith("config:")
    other = load_model(TransformerBridgeConfig(d_model=16, d_head=8, n_layers=1, n_ctx=32, n_heads=2, d_mlp=32, seed=4))
    assert other.fingerprint != a.fingerprint
    gated = load_model(TransformerBridgeConfig(d_model=16, d_head=8, n_layers=1, n_ctx=32, n_heads=2, d_mlp=32,
                                               seed=3, gated_mlp=True))
    assert gated.mlp_kind == "gated" and a.mlp_kind == "standard"


def test_config_source_with_foreign_vocab_is_rejected() -> None:
    cfg = TransformerBridgeConfig(d_model=16, d_head=8, n_layers=1, n_ctx=32, n_heads=2, d_mlp=32, d_vocab=1000)
    with pytest.raises(UsageError, match="d_vocab=1000"):
        load_model(cfg)


def test_bad_source_type() -> None:
    with pytest.raises(UsageError, match="path, a hub name or a TransformerBridgeConfig"):
        load_model(42)


@pytest.mark.parametrize(
    ("field", "kwargs", "base_value", "tuned_value"),
    [
        ("n_layers", {"n_layers": 3}, 2, 3),
        ("d_model", {"d_model": 48}, 32, 48),
        ("d_mlp", {"d_mlp": 96}, 64, 96),
        ("n_ctx", {"n_ctx": 128}, 64, 128),
        ("architecture", {"arch": "llama"}, "GPT2LMHeadModel", "LlamaForCausalLM"),
    ],
)
def test_mismatched_pair_names_field_and_values(tmp_path: Path, tiny_checkpoints: dict[str, tuple[Path, Path]],
                                                field: str, kwargs: dict[str, object], base_value: object,
                                                tuned_value: object) -> None:
    base_dir, _ = tiny_checkpoints["gpt2"]
    other = make_tiny_checkpoint(tmp_path / "other", **kwargs)  # type: ignore[arg-type]
    with pytest.raises(IncompatiblePairError) as info:
        load_pair(base_dir, other)
    err = info.value
    assert (err.field, err.base_value, err.tuned_value) == (field, base_value, tuned_value)
    assert field in str(err) and repr(base_value) in str(err) and repr(tuned_value) in str(err)
    assert str(base_dir.resolve()) in str(err)


def test_mismatched_tokenizer_is_named(tmp_path: Path, tiny_checkpoints: dict[str, tuple[Path, Path]]) -> None:
    import json

    base_dir, _ = tiny_checkpoints["gpt2"]
    other = perturbed_copy(base_dir, tmp_path / "other", scale=0.0)
    tok_file = other / "tokenizer.json"
    spec = json.loads(tok_file.read_text())
    vocab = spec["model"]["vocab"]
    # Swap two tokens' ids: same size, different vocabulary.
    a, b = "a", "b"
    vocab[a], vocab[b] = vocab[b], vocab[a]
    tok_file.write_text(json.dumps(spec))
    with pytest.raises(IncompatiblePairError, match="tokenizer vocabulary"):
        load_pair(base_dir, other)


def test_a_bos_on_one_side_only_is_refused_before_and_after_loading(tmp_path: Path,
                                                                    tiny_checkpoints: dict[str, tuple[Path, Path]]) -> None:
    """Each model reads the prompts with its own tokenizer: a tuned tokenizer saved adding a BOS the
    base one does not add would give the two models other inputs, confounded with the fine-tune."""
    from mechtests.checkpoints import ModelSource, compare_facts, inspect_source
    from mechtests.testing import byte_tokenizer

    base_dir, _ = tiny_checkpoints["gpt2"]
    other = perturbed_copy(base_dir, tmp_path / "with-bos", scale=0.0)
    tokenizer = byte_tokenizer()
    tokenizer.add_bos_token = True
    tokenizer.save_pretrained(other)
    match = r"differ in tokens the tokenizer puts before every text \(a BOS\): base has \(\), tuned has \(256,\)"
    with_bos = inspect_source(ModelSource(str(other), "directory"))
    with pytest.raises(IncompatiblePairError, match=match):
        compare_facts(inspect_source(ModelSource(str(base_dir), "directory")).facts, with_bos.facts, where="start-up")
    from mechtests.preflight import _describe

    assert _describe("tuned", with_bos).endswith("; every text starts with token id(s) [256] (the tokenizer's BOS)")
    with pytest.raises(IncompatiblePairError, match=match):
        load_pair(base_dir, other)


def test_check_compatible_accepts_twins(tiny_pair: ModelPair) -> None:
    check_compatible(tiny_pair.base, tiny_pair.tuned)
    assert tiny_pair.role("base") is tiny_pair.base and tiny_pair.role("tuned") is tiny_pair.tuned
    with pytest.raises(UsageError, match="role"):
        tiny_pair.role("other")  # type: ignore[arg-type]


def test_missing_checkpoint_names_path(tmp_path: Path) -> None:
    missing = tmp_path / "no-such-model"
    with pytest.raises(CheckpointError, match="no such directory") as info:
        load_model(missing)
    assert str(missing) in str(info.value) and "Fix:" in str(info.value)


def test_directory_without_config_names_path(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointError, match="config.json") as info:
        load_model(tmp_path / "empty")
    assert str(tmp_path / "empty") in str(info.value)


def test_corrupt_weights_name_path(tmp_path: Path, tiny_checkpoints: dict[str, tuple[Path, Path]]) -> None:
    base_dir, _ = tiny_checkpoints["gpt2"]
    broken = perturbed_copy(base_dir, tmp_path / "broken", scale=0.0)
    weights = broken / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:200])
    with pytest.raises(CheckpointError, match="not a readable safetensors file") as info:
        load_model(broken)
    assert str(broken) in str(info.value) and "truncated" in str(info.value)


def test_missing_tokenizer_names_path(tmp_path: Path, tiny_checkpoints: dict[str, tuple[Path, Path]]) -> None:
    base_dir, _ = tiny_checkpoints["gpt2"]
    broken = perturbed_copy(base_dir, tmp_path / "notok", scale=0.0)
    for name in ("tokenizer.json", "tokenizer_config.json"):
        (broken / name).unlink()
    with pytest.raises(CheckpointError) as info:
        load_model(broken)
    assert str(broken) in str(info.value) and "tokenizer" in str(info.value)


def test_hub_name_goes_through_the_same_loader(monkeypatch: pytest.MonkeyPatch) -> None:
    """A hub name is handed to from_pretrained; unreachable here, so it must fail naming the source."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    import huggingface_hub.constants as hub_constants

    monkeypatch.setattr(hub_constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(CheckpointError) as info:
        load_model("mechtests-nonexistent-org/no-such-model")
    assert "mechtests-nonexistent-org/no-such-model" in str(info.value)
    assert "not a local path" in str(info.value) and "unreachable" in str(info.value)


def test_value_projections_and_norms(tiny_pair: ModelPair) -> None:
    model = tiny_pair.base
    direction = torch.randn(model.d_model, generator=torch.Generator().manual_seed(0))
    values = model.all_value_vectors().double()
    torch.testing.assert_close(model.value_projections(direction), values @ direction.double())
    torch.testing.assert_close(model.value_norms(), values.norm(dim=-1))
    with pytest.raises(UsageError, match="width 3"):
        model.value_projections(torch.ones(3))


def test_post_sublayer_norm_models_refuse_what_rests_on_linear_neuron_writes(tmp_path: Path,
                                                                             tiny_pair: ModelPair) -> None:
    """Gemma-2 adds norm(sum_i a_i w_i) to the residual stream: the value vectors' projections, norms
    and cosines (and so every selection and attribution built on them) are refused with which claims
    still apply; the weights themselves and the activations stay readable. GPT-2 / Llama: no refusal."""
    from mechtests.neurons import neuron_cosines
    from mechtests.premises import require_linear_neuron_writes
    from mechtests.probes import Probe

    gemma = load_model(make_tiny_checkpoint(tmp_path / "gemma2", arch="gemma2"))
    assert gemma.has_post_sublayer_norms
    probe = Probe(torch.ones(gemma.d_model), 0.0)
    direction = torch.ones(gemma.d_model)
    for call in (lambda: gemma.value_projections(direction), gemma.value_norms, gemma.all_value_vectors,
                 lambda: neuron_cosines(gemma, probe)):
        with pytest.raises(UsageError, match=r"undefined on Gemma2ForCausalLM .*passes a norm before it enters the "
                                             r"residual stream.*claims on outputs \(toxicity"):
            call()
    assert gemma.value_vectors(0).shape == (gemma.d_mlp, gemma.d_model)  # the raw rows of W_out
    ids, mask = _batch(gemma)
    seen: list[tuple[int, ...]] = []
    with gemma.hooks([(gemma.neuron_hook(0), lambda a: seen.append(tuple(a.shape)))]):
        gemma.forward(ids, mask)
    assert seen == [(2, ids.shape[1], gemma.d_mlp)]
    with pytest.raises(pytest.fail.Exception, match="^undefined: a claim on neurons' value vectors is undefined on "
                                                    "Gemma2ForCausalLM"):
        require_linear_neuron_writes(ModelPair("g", gemma, gemma))

    assert not tiny_pair.base.has_post_sublayer_norms
    tiny_pair.base.require_linear_neuron_writes("anything")  # nothing happens
    require_linear_neuron_writes(tiny_pair)


def test_mixture_of_experts_is_refused_from_its_config_before_its_keys(tmp_path: Path) -> None:
    """A Mixtral checkpoint (saved by save_pretrained, so its keys are the legacy per-expert names)
    is refused as a mixture of experts, not as a key mismatch with the wrong fix; a MoE model
    booted by hand is refused by LoadedModel itself (its hook_post is d_model wide, not d_mlp)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer, GPT2Config, LlamaConfig, MixtralConfig, Qwen2MoeConfig

    from mechtests.checkpoints import ModelSource, inspect_source, refuse_mixture_of_experts
    from mechtests.models import _boot
    from mechtests.testing import byte_tokenizer

    config = MixtralConfig(vocab_size=257, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                           num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=64,
                           num_local_experts=4, num_experts_per_tok=2)
    hf = AutoModelForCausalLM.from_config(config)
    hf.save_pretrained(tmp_path / "mixtral")
    byte_tokenizer().save_pretrained(tmp_path / "mixtral")
    expected = r"mixture-of-experts model \(mixtral, num_local_experts=4\).*Fix: compare dense models"
    with pytest.raises(UsageError, match=expected):
        inspect_source(ModelSource(str(tmp_path / "mixtral"), "directory"))
    with pytest.raises(UsageError, match=expected):
        load_model(tmp_path / "mixtral")
    with pytest.raises(UsageError, match=r"layer 0's MLP \(MoEBridge\) is a mixture of experts"):
        _boot(hf, AutoTokenizer.from_pretrained(tmp_path / "mixtral"), "by-hand", "0" * 64, "cpu", torch.float32,
              tokenizer_dir=str(tmp_path / "mixtral"))
    with pytest.raises(UsageError, match=r"qwen2_moe, num_experts=60"):
        refuse_mixture_of_experts(Qwen2MoeConfig(), "q")
    for dense in (GPT2Config(), LlamaConfig(), Qwen2MoeConfig(num_experts=1)):
        refuse_mixture_of_experts(dense, "dense")  # nothing happens
