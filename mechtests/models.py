"""Loading a (base, tuned) model pair through TransformerLens 4's ``TransformerBridge``.

This module and ``hook_routes`` are the only ones that know about TransformerLens and Hugging Face
model internals. Other modules talk to a :class:`LoadedModel` through hook *names* it hands out
(TransformerLens names), :meth:`LoadedModel.hooks` (temporary forward hooks),
:meth:`LoadedModel.observe_inputs` (see every forward call's tokens) and
:meth:`LoadedModel.forward` (one batched forward step with an optional KV cache).

Two backends run the same weights. ``"bridge"``: the ``TransformerBridge`` (every TransformerLens
hook point). ``"plain"``: a Hugging Face twin sharing the parameter tensors, with the engine's hook
names routed to plain ``torch`` hooks (``hook_routes``) — ~1.5x fewer operators per step, which is
what lets generation keep up with Hugging Face ``generate`` on a GPU. With ``backend="auto"`` (the
default) each forward call runs the twin when every active hook has a route, and the bridge
otherwise (a hook name without a route, or hooks added to ``model.bridge`` directly).

Why the Hugging Face model is driven directly: ``TransformerBridge.boot_transformers`` wraps the
Hugging Face modules *in place*, so calling the Hugging Face model runs every bridge hook point,
while its own ``past_key_values`` / ``attention_mask`` / ``position_ids`` handling gives an exact,
fast, batch-independent KV-cached greedy loop (see ``generation.py``).

Example:
    >>> pair = load_pair(base_dir, tuned_dir, name="demo")  # two checkpoint directories
    >>> pair.base.neuron_hook(0)
    'blocks.0.mlp.hook_post'
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import hashlib
import inspect
import os
import tempfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch

from mechtests import hook_routes
from mechtests.checkpoints import (
    LoadRecord,
    ModelFacts,
    ModelSource,
    classify_source,
    compare_facts,
    facts_from,
    load_hf_model,
    resolve_pair_sources,
    tokenizer_signature,
)
from mechtests.config import BACKENDS, Backend
from mechtests.errors import IncompatiblePairError, UsageError

MlpKind = Literal["standard", "gated"]
HookFn = hook_routes.HookFn
"""A forward hook: receives the hook point's tensor, returns a replacement or ``None``."""


@dataclass(frozen=True)
class ForwardInputs:
    """What one forward call of a model received (for interventions that follow the tokens).

    Attributes:
        input_ids: ``[batch, new_pos]`` token ids of this call (only the new tokens when a KV
            cache is continued).
        attention_mask: ``[batch, past + new_pos]`` 0/1 mask, or ``None``.
        position_ids: ``[batch, new_pos]`` positions, or ``None``.
        continues_cache: True when this call extends a KV cache of earlier tokens.
        uses_cache: True when this call builds or extends a KV cache (more calls may follow).
    """

    input_ids: torch.Tensor
    attention_mask: torch.Tensor | None
    position_ids: torch.Tensor | None
    continues_cache: bool
    uses_cache: bool


@dataclass(frozen=True)
class ForwardOutput:
    """Result of :meth:`LoadedModel.forward`: logits ``[batch, pos, vocab]`` and the KV cache."""

    logits: torch.Tensor
    past: Any


def _check_backend(backend: str) -> None:
    if backend not in BACKENDS:
        raise UsageError(f"backend must be one of {', '.join(BACKENDS)}, got {backend!r}")


class LoadedModel:
    """One model behind a ``TransformerBridge``, with the facts the engine needs.

    Attributes:
        bridge: the ``TransformerBridge`` (every TransformerLens hook point lives here).
        tokenizer: the model's tokenizer, left padding, with a pad token.
        source: where it came from (a path, hub name or ``"config:<hash>"``).
        fingerprint: sha256 over every weight tensor (names, dtypes, shapes and bytes).
        backend: ``"auto"`` (plain twin when every active hook has a route) or ``"bridge"``.
    """

    def __init__(self, bridge: Any, hf_model: Any, tokenizer: Any, source: str, fingerprint: str, *,
                 plain_twin: Any = None, backend: Backend = "auto",
                 checkpoint_weights: dict[str, torch.Tensor] | None = None) -> None:
        _check_backend(backend)
        self.bridge = bridge
        self._hf = hf_model
        self._plain: Any = plain_twin if backend == "auto" else None
        self.backend: Backend = backend if plain_twin is not None else "bridge"
        self._placement = hook_routes.HookPlacement(bridge, self._plain, source=source)
        self._checkpoint_weights = dict(checkpoint_weights or {})
        self.tokenizer = tokenizer
        self.source = source
        self.fingerprint = fingerprint
        self.load_record: LoadRecord | None = None  # what loading read and assumed (set by load_model)
        cfg = bridge.cfg
        self.n_layers: int = int(cfg.n_layers)
        self.d_model: int = int(cfg.d_model)
        self.d_mlp: int = int(cfg.d_mlp)
        self.d_vocab: int = int(cfg.d_vocab)
        self.n_ctx: int = int(cfg.n_ctx)
        self.mlp_kind: MlpKind = "gated" if bool(getattr(cfg, "gated_mlp", False)) else "standard"
        self.architecture: str = str(getattr(cfg, "architecture", None) or type(hf_model).__name__)
        first = next(hf_model.parameters())
        self.device: torch.device = first.device
        self.dtype: torch.dtype = first.dtype
        # transformers 5.x renamed ``past_key_values`` to ``cache``; older versions use the old name.
        self._cache_kw = "cache" if "cache" in inspect.signature(hf_model.forward).parameters else "past_key_values"
        if self._cache_kw == "cache":
            _bridge_cache_kwarg_fix(bridge, self.n_layers)
        self._check_dense_mlps()

    def _check_dense_mlps(self) -> None:
        """Refuse a model whose MLPs are not one dense ``W_out`` of ``d_mlp`` neurons per layer.

        A mixture-of-experts block has no such matrix: its ``hook_post`` is the block's
        ``d_model``-wide output, so every per-neuron statistic would silently be something else.
        """
        for layer in range(self.n_layers):
            mlp = self.bridge.blocks[layer].mlp
            kind = type(mlp).__name__
            # A MoE bridge may expose a shared expert's W_out: the class decides, not the shape.
            moe = "moe" in kind.lower() or hasattr(mlp, "experts")
            w_out = None if moe else getattr(mlp, "W_out", None)
            shape = tuple(w_out.shape) if isinstance(w_out, torch.Tensor) else None
            if moe or shape != (self.d_mlp, self.d_model):
                raise UsageError(
                    f"{self.source}: layer {layer}'s MLP ({kind}) is " + (
                        "a mixture of experts" if moe else f"not one dense W_out of {self.d_mlp} neurons "
                        f"(found {shape})") + ", so a neuron index does not name one unit of the model and "
                    "mechtests' per-neuron statistics (activations, value vectors, ablations) would read something "
                    "else. Fix: compare dense models (GPT-2, Llama, Mistral, Qwen2, ...)")

    def __repr__(self) -> str:
        return (
            f"LoadedModel({self.source!r}, {self.architecture}, layers={self.n_layers}, "
            f"d_model={self.d_model}, d_mlp={self.d_mlp}, mlp={self.mlp_kind}, sha256={self.fingerprint[:12]})"
        )

    @functools.cached_property
    def tokenizer_fingerprint(self) -> str:
        """sha256 prefix of how this model's text becomes ids: the tokenizer's whole definition (a fast
        tokenizer's JSON: vocabulary, merges, normalizer, pre-tokenizer, post-processor) and its
        start tokens. Part of every cache key: the weights' fingerprint alone would hand one
        tokenizer's results to another."""
        digest = hashlib.sha256()
        backend = getattr(self.tokenizer, "backend_tokenizer", None)
        digest.update((backend.to_str() if backend is not None else tokenizer_signature(self.tokenizer)).encode())
        digest.update(repr(self.start_tokens).encode())
        return digest.hexdigest()[:16]

    @property
    def start_tokens(self) -> tuple[int, ...]:
        """The ids put before every text (`mechtests.data.start_tokens`: a BOS; none for GPT-2)."""
        from mechtests.data import start_tokens

        return start_tokens(self.tokenizer)

    def facts(self) -> ModelFacts:
        """Config and tokenizer facts compared between the two models of a pair."""
        return facts_from(self._hf.config, self.tokenizer)

    # ---- hook names -------------------------------------------------------------------------
    def _check_layer(self, layer: int) -> None:
        if not 0 <= layer < self.n_layers:
            raise UsageError(f"layer {layer} is out of range: {self.source} has layers 0..{self.n_layers - 1}")

    def neuron_hook(self, layer: int) -> str:
        """Hook whose tensor is the neuron activations ``a`` (``[batch, pos, d_mlp]``).

        Standard MLPs: ``act(x W_in + b_in)``; gated MLPs: ``act(x W_gate) * (x W_up)`` (the input
        of ``W_down``). Both are the input of the output projection, TransformerLens' ``hook_post``.
        """
        self._check_layer(layer)
        return f"blocks.{layer}.mlp.hook_post"

    def pre_activation_hook(self, layer: int) -> str:
        """Hook whose tensor is ``x W_in + b_in`` — the product with the key vectors.

        For gated MLPs this is the *up* projection (``hook_pre_linear``), on which the neuron's
        activation depends linearly, so scaling it scales the neuron like scaling its key vector.
        """
        self._check_layer(layer)
        return f"blocks.{layer}.mlp.hook_pre_linear" if self.mlp_kind == "gated" else f"blocks.{layer}.mlp.hook_pre"

    def mlp_out_hook(self, layer: int) -> str:
        """Hook of an MLP's output (what it adds to the residual stream)."""
        self._check_layer(layer)
        return f"blocks.{layer}.hook_mlp_out"

    def attn_out_hook(self, layer: int) -> str:
        """Hook of an attention block's output (what it adds to the residual stream)."""
        self._check_layer(layer)
        return f"blocks.{layer}.hook_attn_out"

    def resid_post_hook(self, layer: int) -> str:
        """Hook of the residual stream after block ``layer``."""
        self._check_layer(layer)
        return f"blocks.{layer}.hook_resid_post"

    @property
    def final_resid_hook(self) -> str:
        """The last block's ``hook_resid_post`` (before the final LayerNorm)."""
        return f"blocks.{self.n_layers - 1}.hook_resid_post"

    @property
    def final_norm_hook(self) -> str:
        """The final LayerNorm's output (Hugging Face's ``hidden_states[-1]``, what the unembedding reads)."""
        return "ln_final.hook_out"

    @property
    def embed_hooks(self) -> tuple[str, ...]:
        """Hooks whose outputs are summed into the residual stream before block 0.

        Learned position embeddings (GPT-2) add a second one; rotary models (Llama) have none.
        """
        if "pos_embed.hook_out" in self.bridge.hook_dict:
            return ("hook_embed", "hook_pos_embed")
        return ("hook_embed",)

    @property
    def has_post_sublayer_norms(self) -> bool:
        """True when attention/MLP outputs pass a norm before entering the residual (Gemma-2/3/4,
        OLMo-2, GLM-4).

        Then an MLP's residual write is ``norm(sum_i a_i w_i + b)``, not linear in the neurons.
        """
        return any(name in dict(block.named_children()) for block in self.bridge.blocks
                   for name in ("ln1_post", "ln2_post"))

    def require_linear_neuron_writes(self, what: str) -> None:
        """Refuse ``what`` (a quantity defined by neuron ``i`` writing ``a_i w_i`` into the residual
        stream) on a model with post-sublayer norms, where that is not what a neuron writes.

        Raises:
            UsageError: the model has post-sublayer norms; the message (`neuron_writes_problem`) says
                which claims still apply.

        Example:
            >>> model.require_linear_neuron_writes("the probe alignment of value vectors")  # GPT-2: nothing happens
        """
        problem = self.neuron_writes_problem(what)
        if problem is not None:
            raise UsageError(problem)

    def neuron_writes_problem(self, what: str) -> str | None:
        """Why ``what`` is undefined on this model (post-sublayer norms), or ``None`` when neuron ``i``
        writes ``a_i w_i``.

        Example:
            >>> model.neuron_writes_problem("a claim on value vectors") is None  # GPT-2
            True
        """
        if not self.has_post_sublayer_norms:
            return None
        return (f"{what} is undefined on {self.architecture} ({self.source}): its MLP output passes a norm before it "
                "enters the residual stream, so neuron i does not write a_i * w_i there and its value vector w_i "
                "(a row of W_out) is not the direction it writes. Claims resting on that (toxic neurons ranked by "
                "cos(value vector, probe) and the ablations, patches and scalings of them, the neuron groups, the "
                "probe-projected attribution, completeness) do not apply; claims on outputs (toxicity, perplexity, "
                "F1, the probe, steering along the probe) do. Fix: state the neuron claims on an architecture "
                "without post-sublayer norms (GPT-2, Llama, Mistral, Qwen2), or deselect them (-m / -k)")

    # ---- weights ----------------------------------------------------------------------------
    def named_weights(self) -> dict[str, torch.Tensor]:
        """The checkpoint's parameters under their Hugging Face names, detached (no copies).

        Unlike ``bridge.named_parameters()``, which adds the bridge's split q/k/v views of
        GPT-2's fused attention matrix, each tensor appears once, as saved (tied weights once).

        Example:
            >>> sorted(model.named_weights())[:2]  # the tied lm_head is not saved: once, as wte
            ['transformer.h.0.attn.c_attn.bias', 'transformer.h.0.attn.c_attn.weight']
        """
        if not self._checkpoint_weights:
            raise UsageError(f"{self.source}: no checkpoint weights recorded; load it with load_model()")
        return {name: tensor.detach() for name, tensor in self._checkpoint_weights.items()}

    def _mlp(self, layer: int) -> Any:
        self._check_layer(layer)
        return self.bridge.blocks[layer].mlp

    def value_vectors(self, layer: int) -> torch.Tensor:
        """Rows of ``W_out`` (``W_down`` for gated MLPs): ``[d_mlp, d_model]``, detached."""
        return self._mlp(layer).W_out.detach()

    def all_value_vectors(self) -> torch.Tensor:
        """``[n_layers, d_mlp, d_model]`` value vectors of every layer (a new stacked copy).

        For projections prefer :meth:`value_projections`, which never holds a second copy of
        every ``W_out`` in memory. Refused on post-sublayer-norm models (:meth:`require_linear_neuron_writes`).
        """
        self.require_linear_neuron_writes("the value vectors as neuron writes")
        return torch.stack([self.value_vectors(layer) for layer in range(self.n_layers)])

    def value_projections(self, direction: torch.Tensor) -> torch.Tensor:
        """``[n_layers, d_mlp]`` float64 (cpu): ``w_i . direction`` for every value vector, layer by layer
        (refused on post-sublayer-norm models, where ``w_i`` is not what a neuron writes)."""
        self.require_linear_neuron_writes("the projection of value vectors on a direction")
        if direction.numel() != self.d_model:
            raise UsageError(f"direction of width {direction.numel()} on {self.source} (d_model={self.d_model})")
        d = direction.reshape(-1).to(self.device, torch.float64)
        return torch.stack([(self.value_vectors(layer).to(torch.float64) @ d).cpu() for layer in range(self.n_layers)])

    def value_norms(self) -> torch.Tensor:
        """``[n_layers, d_mlp]`` float64 (cpu): the norm of every value vector (refused on
        post-sublayer-norm models)."""
        self.require_linear_neuron_writes("the norm of value vectors as neuron writes")
        return torch.stack([self.value_vectors(layer).to(torch.float64).norm(dim=-1).cpu()
                            for layer in range(self.n_layers)])

    def key_vectors(self, layer: int) -> torch.Tensor:
        """Columns of ``W_in`` (``W_up`` for gated MLPs): ``[d_model, d_mlp]``, detached."""
        return self._mlp(layer).W_in.detach()

    def mlp_in_bias(self, layer: int) -> torch.Tensor:
        """``b_in`` (zeros where the architecture has none): ``[d_mlp]``."""
        bias = self._mlp(layer).b_in
        return torch.zeros(self.d_mlp, device=self.device, dtype=self.dtype) if bias is None else bias.detach()

    def mlp_out_bias(self, layer: int) -> torch.Tensor:
        """``b_out`` (zeros where the architecture has none): ``[d_model]``."""
        bias = self._mlp(layer).b_out
        return torch.zeros(self.d_model, device=self.device, dtype=self.dtype) if bias is None else bias.detach()

    # ---- running ----------------------------------------------------------------------------
    @contextlib.contextmanager
    def hooks(self, fwd_hooks: Sequence[tuple[str, HookFn]]) -> Iterator[LoadedModel]:
        """Install forward hooks for the duration of the block; always removed, also on error.

        Each hook receives the tensor at its hook point and returns a replacement or ``None``.
        Names are TransformerLens hook names (``model.bridge.hook_dict``); an unknown name is a
        :class:`UsageError`.

        Example:
            >>> with model.hooks([(model.neuron_hook(0), lambda a: a * 0)]):
            ...     logits = model.forward(ids, mask).logits
        """
        with self._placement.installed(fwd_hooks):
            yield self

    @property
    def running_backend(self) -> hook_routes.Running:
        """Which module tree the next forward call runs: ``"plain"`` (the twin) or ``"bridge"``."""
        return "bridge" if self._placement.wants_bridge() else "plain"

    @contextlib.contextmanager
    def observe_inputs(self, fn: Callable[[ForwardInputs], None]) -> Iterator[LoadedModel]:
        """Call ``fn`` with the inputs of every forward call (before the model runs)."""

        def pre_hook(_module: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
            ids = kwargs.get("input_ids", args[0] if args else None)
            if ids is None:
                raise UsageError("interventions that follow the tokens need input_ids, not inputs_embeds")
            past = kwargs.get("cache", kwargs.get("past_key_values"))
            continues = past is not None and int(past.get_seq_length()) > 0
            uses = past is not None or bool(kwargs.get("use_cache"))
            fn(ForwardInputs(ids, kwargs.get("attention_mask"), kwargs.get("position_ids"), continues, uses))

        # Only one of the two trees runs per call, so registering on both sees each call once.
        handles = [tree.register_forward_pre_hook(pre_hook, with_kwargs=True)
                   for tree in (self._hf, self._plain) if tree is not None]
        try:
            yield self
        finally:
            for handle in handles:
                handle.remove()

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        *,
        position_ids: torch.Tensor | None = None,
        past: Any = None,
        use_cache: bool = False,
        last_only: bool = False,
    ) -> ForwardOutput:
        """One forward pass; positions follow the mask (left padding) when not given.

        Args:
            input_ids: ``[batch, pos]`` new tokens.
            attention_mask: ``[batch, past + pos]`` 0/1 mask (``None``: all real).
            position_ids: ``[batch, pos]``; derived from the mask when ``None``.
            past: a KV cache from an earlier call's ``ForwardOutput.past``.
            use_cache: return a KV cache to continue from.
            last_only: compute logits for the last position only (saves the unembedding).
        """
        if attention_mask is not None and position_ids is None:
            full = attention_mask.long().cumsum(-1) - 1
            position_ids = full.clamp(min=0)[:, -input_ids.shape[1] :]
        kwargs: dict[str, Any] = {"attention_mask": attention_mask, "position_ids": position_ids}
        if past is not None or use_cache:
            kwargs[self._cache_kw] = past
            kwargs["use_cache"] = True
        else:
            kwargs["use_cache"] = False
        if last_only:
            kwargs["logits_to_keep"] = 1
        # Re-placed at every call: hooks may have been added to model.bridge since the last one.
        out = (self._hf if self._placement.place() == "bridge" else self._plain)(input_ids=input_ids, **kwargs)
        past_out = getattr(out, self._cache_kw, None) if kwargs["use_cache"] else None
        return ForwardOutput(out.logits, past_out)


def _bridge_cache_kwarg_fix(bridge: Any, n_layers: int) -> None:
    """Hand each attention bridge the KV cache under the name it reads.

    TransformerLens 4.3's attention bridges look for ``past_key_values`` (or ``layer_past``),
    while transformers 5.x passes the cache as ``cache``: without this, cached decoding silently
    attends to the new token only (a test compares cached generation with full forward passes).
    A forward pre-hook on the bridge's own attention modules copies the kwarg; nothing is patched.
    """

    def pre_hook(_module: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[tuple[Any, ...], dict[str, Any]]:
        if kwargs.get("cache") is not None and kwargs.get("past_key_values") is None:
            kwargs = {**kwargs, "past_key_values": kwargs["cache"]}
        return args, kwargs

    for layer in range(n_layers):
        bridge.blocks[layer].attn.register_forward_pre_hook(pre_hook, with_kwargs=True)


@dataclass(frozen=True)
class ModelPair:
    """A base model and its fine-tuned twin, loaded with identical flags and checked compatible."""

    name: str
    base: LoadedModel
    tuned: LoadedModel

    def role(self, role: Literal["base", "tuned"]) -> LoadedModel:
        """The model playing ``role``."""
        if role == "base":
            return self.base
        if role == "tuned":
            return self.tuned
        raise UsageError(f"role must be 'base' or 'tuned', got {role!r}")

    def check_same_tokenization(self, texts: Sequence[str], what: str) -> None:
        """Refuse ``texts`` that the two models' tokenizers turn into different ids.

        Each model reads a text with its own tokenizer; `check_compatible` compares their
        vocabularies and start tokens, but a normalizer or pre-tokenizer setting (GPT-2's
        ``add_prefix_space``) can still split the same text otherwise, and the pair would then be
        compared on other inputs. Free when both tokenizers are the same definition.

        Raises:
            IncompatiblePairError: naming the first text that differs and both token sequences.

        Example:
            >>> pair.check_same_tokenization(["a prompt"], "challenge prompt")  # one tokenizer: nothing happens
        """
        if self.base.tokenizer_fingerprint == self.tuned.tokenizer_fingerprint:
            return
        items = list(texts)
        base = self.base.tokenizer(items, add_special_tokens=False)["input_ids"]
        tuned = self.tuned.tokenizer(items, add_special_tokens=False)["input_ids"]
        for i, (b, t) in enumerate(zip(base, tuned, strict=True)):
            if list(b) != list(t):
                at = next((j for j, (x, y) in enumerate(zip(b, t, strict=False)) if x != y), min(len(b), len(t)))
                raise IncompatiblePairError(
                    f"the tokenization of {what} {i} ({items[i][:60]!r}) from token {at} on",
                    list(b)[at : at + 6], list(t)[at : at + 6], f"{self.base.source} vs {self.tuned.source}")


# ---- loading ---------------------------------------------------------------------------------
def weights_fingerprint(state: dict[str, torch.Tensor]) -> str:
    """sha256 over the names, dtypes, shapes and bytes of every tensor, in name order."""
    digest = hashlib.sha256()
    for name in sorted(state):
        tensor = state[name].detach().to("cpu").contiguous()
        digest.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}\n".encode())
        if tensor.numel():
            digest.update(tensor.view(torch.uint8).numpy().data)  # a buffer view: no copy
    return digest.hexdigest()


def _as_source(source: str | os.PathLike[str] | ModelSource, config_from: str | None, where: str) -> ModelSource:
    if isinstance(source, ModelSource):
        spec = source
    else:
        spec = classify_source(source, Path.cwd(), where=where)
    if spec.kind == "state_dict" and spec.config_from is None and config_from is not None:
        spec = dataclasses.replace(spec, config_from=config_from)
    return spec


def _hf_from_config(cfg: Any, dtype: torch.dtype) -> tuple[Any, Any]:
    """Random-init Hugging Face model mirroring a ``TransformerBridgeConfig`` (same code path as a checkpoint)."""
    from mechtests.testing import byte_tokenizer, hf_config_for

    d_vocab = int(cfg.d_vocab) if int(cfg.d_vocab) > 0 else 257
    if d_vocab != 257:
        raise UsageError(
            f"TransformerBridgeConfig source has d_vocab={d_vocab}; random-init models use the built-in "
            "byte-level tokenizer, which needs d_vocab=257 (or -1). Fix: set d_vocab=257 or save a checkpoint"
        )
    gated = bool(getattr(cfg, "gated_mlp", False))
    d_mlp = int(cfg.d_mlp) if cfg.d_mlp and int(cfg.d_mlp) > 0 else 4 * int(cfg.d_model)
    hf_config = hf_config_for(
        "llama" if gated else "gpt2", n_layers=int(cfg.n_layers), d_model=int(cfg.d_model), d_mlp=d_mlp,
        n_heads=int(cfg.n_heads), n_ctx=int(cfg.n_ctx), d_vocab=257,
    )
    from transformers import AutoModelForCausalLM

    seed = int(cfg.seed) if getattr(cfg, "seed", None) is not None else 0
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = AutoModelForCausalLM.from_config(hf_config, dtype=dtype)
    model.eval()
    return model, byte_tokenizer()


def load_model(source: str | os.PathLike[str] | ModelSource | Any, *, device: str | torch.device = "cpu",
               dtype: torch.dtype = torch.float32, backend: Backend = "auto",
               config_from: str | None = None) -> LoadedModel:
    """Load one model: a checkpoint dir, a state-dict file, a hub name, or a ``TransformerBridgeConfig``.

    Every source goes through the same path: a Hugging Face causal-LM loaded strictly
    (``mechtests.checkpoints``: every weight from the file, or a :class:`CheckpointError`) and
    booted into a ``TransformerBridge`` (no compatibility mode, so the numerics are the
    checkpoint's own). A state-dict file is applied to the config and tokenizer of
    ``config_from`` (a directory or hub name). ``backend="auto"`` also keeps a weight-sharing
    plain twin for routed hooks (module docstring); ``"bridge"`` runs everything through the bridge.

    Raises:
        CheckpointError: the source is missing, its weights do not all load, hold NaN/inf, or
            its tokenizer cannot be read.

    Example:
        >>> m = load_model(base_dir)  # a checkpoint directory (or a hub name, a state-dict file)
        >>> m.n_layers, m.d_mlp
        (2, 64)
    """
    from transformer_lens.config import TransformerBridgeConfig
    from transformers import AutoTokenizer

    if isinstance(source, TransformerBridgeConfig):
        hf, tokenizer = _hf_from_config(source, dtype)
        digest = weights_fingerprint(hf.state_dict())
        # The bridge re-reads the tokenizer from its name_or_path, so it must exist on disk
        # while booting.
        with tempfile.TemporaryDirectory(prefix="mechtests-tok-") as tmp:
            tokenizer.save_pretrained(tmp)
            tokenizer = AutoTokenizer.from_pretrained(tmp)
            return _boot(hf, tokenizer, f"config:{digest[:12]}", digest, device, dtype, backend)
    if isinstance(source, (str, os.PathLike, ModelSource)):
        spec = _as_source(source, config_from, "model source")
        hf, tokenizer, record = load_hf_model(spec, dtype)
        model = _boot(hf, tokenizer, spec.location, weights_fingerprint(hf.state_dict()), device, dtype, backend,
                      tokenizer_dir=spec.config_location)
        model.load_record = record
        return model
    raise UsageError(f"model source must be a path, a hub name or a TransformerBridgeConfig, got {type(source).__name__}")


def _boot(hf: Any, tokenizer: Any, label: str, digest: str, device: str | torch.device, dtype: torch.dtype,
          backend: Backend = "auto", *, tokenizer_dir: str | None = None) -> LoadedModel:
    from transformer_lens.model_bridge import TransformerBridge

    _check_backend(backend)
    if tokenizer.pad_token_id is None:
        # GPT-2 style tokenizers have no pad token; padding is masked, so any id works.
        if tokenizer.eos_token is not None:
            tokenizer.pad_token = tokenizer.eos_token
        else:
            tokenizer.pad_token = tokenizer.convert_ids_to_tokens(0)
    tokenizer.padding_side = "left"
    hf.eval()
    for param in hf.parameters():
        param.requires_grad_(False)
    hf.to(device)
    routed = backend == "auto" and str(getattr(hf.config, "model_type", "")) in hook_routes.ROUTED_MODEL_TYPES
    # The twin and the weights' names must be taken before the bridge wraps ``hf``'s modules in place.
    twin = hook_routes.weight_sharing_twin(hf) if routed else None
    weights = dict(hf.named_parameters())
    # The bridge reads the tokenizer's name_or_path again: for a state-dict file that is the config's directory.
    bridge = TransformerBridge.boot_transformers(tokenizer_dir or label, hf_model=hf, tokenizer=tokenizer, device=device,
                                                 dtype=dtype)
    bridge.eval()
    return LoadedModel(bridge, hf, tokenizer, label, digest, plain_twin=twin, backend=backend,
                       checkpoint_weights=weights)


def check_compatible(base: LoadedModel, tuned: LoadedModel, *, where: str = "") -> None:
    """Raise :class:`IncompatiblePairError` naming the first field in which the two models differ.

    Checked: architecture, MLP kind, then ``checkpoints.compare_facts`` (model type, n_layers,
    d_model, d_mlp, d_vocab, n_ctx, tokenizer size and vocabulary) — the same comparison the
    plugin's start-up check makes from the configs alone.
    """
    where = where or f"{base.source} vs {tuned.source}"
    for name in ("architecture", "mlp_kind", "n_layers", "d_model", "d_mlp", "d_vocab", "n_ctx"):
        b, t = getattr(base, name), getattr(tuned, name)
        if b != t:
            raise IncompatiblePairError(name, b, t, where)
    compare_facts(base.facts(), tuned.facts(), where=where)


def load_pair(base_source: str | os.PathLike[str] | Any, tuned_source: str | os.PathLike[str] | Any, *,
              name: str = "pair", device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32,
              backend: Backend = "auto", config_from: str | os.PathLike[str] | None = None) -> ModelPair:
    """Load base and tuned with identical flags and check they are comparable neuron by neuron.

    A state-dict file on one side is applied to the other side's config and tokenizer (or to
    ``config_from``), as in Lee et al.'s ``gpt2-medium`` + ``dpo.pt``:
    ``load_pair("gpt2-medium", "checkpoints/dpo.pt", name="lee")``.

    Example:
        >>> pair = load_pair(base_dir, tuned_dir, name="toy")
        >>> pair.base.fingerprint != pair.tuned.fingerprint
        True
    """
    from transformer_lens.config import TransformerBridgeConfig

    if not isinstance(base_source, TransformerBridgeConfig) and not isinstance(tuned_source, TransformerBridgeConfig):
        here = Path.cwd()
        base_spec = _as_source(base_source, None, "base model")
        tuned_spec = _as_source(tuned_source, None, "tuned model")
        shared = classify_source(config_from, here, where="config_from") if config_from is not None else None
        base_source, tuned_source = resolve_pair_sources(base_spec, tuned_spec, shared)
    base = load_model(base_source, device=device, dtype=dtype, backend=backend)
    tuned = load_model(tuned_source, device=device, dtype=dtype, backend=backend)
    check_compatible(base, tuned, where=f"base={base.source}, tuned={tuned.source}")
    return ModelPair(name, base, tuned)
