"""The engine's hook names as plain ``torch`` hooks on a weight-sharing Hugging Face twin.

Why: ``TransformerBridge`` wraps every Hugging Face module in place and re-implements parts of
the forward pass in Python (LayerNorm as ~10 operators, attention without SDPA, GPT-2's fused QKV
as three linears): ~1.55x the operators of plain Hugging Face per decoding step, which on a GPU
(launch-bound at generation batch sizes) capped generation at ~0.6x of ``generate``
(docs/PERFORMANCE.md). The twin is a second Hugging Face module tree holding the *same* parameter
tensors (no second copy of the weights); the hook points the engine uses are plain forward hooks
on its submodules. ``LoadedModel`` runs the twin whenever every active hook has a route here
and the bridge otherwise, so results never depend on which names are routed.

Routed (``L`` = layer), for GPT-2 and the gated Llama/Mistral MLPs:

=========================== ================================= ==================================
hook name                   GPT-2                             Llama / Mistral
=========================== ================================= ==================================
``blocks.L.mlp.hook_post``  output of ``mlp.act``             input of ``mlp.down_proj``
``blocks.L.mlp.hook_pre``   input of ``mlp.act``              output of ``mlp.gate_proj``
``blocks.L.mlp.hook_pre_linear``  (none)                      output of ``mlp.up_proj``
``blocks.L.hook_mlp_out``   output of ``mlp``                 output of ``mlp``
``blocks.L.hook_attn_out``  output of ``attn`` (first item)   output of ``self_attn`` (first)
``blocks.L.hook_resid_post`` output of block ``L``            output of decoder layer ``L``
``hook_embed``              output of ``wte``                 output of ``embed_tokens``
``hook_pos_embed``          output of ``wpe``                 (none: rotary)
=========================== ================================= ==================================

A test compares every routed tensor with the bridge's hook of the same name.

Example:
    >>> twin = weight_sharing_twin(hf_model)  # doctest: +SKIP
    >>> handle = register(twin, "blocks.0.mlp.hook_post", lambda a: a * 0)  # doctest: +SKIP
    >>> handle.remove()  # doctest: +SKIP
"""

from __future__ import annotations

import copy
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import torch

HookFn = Callable[[torch.Tensor], "torch.Tensor | None"]

ROUTED_MODEL_TYPES = frozenset({"gpt2", "llama", "mistral"})
"""Hugging Face ``model_type`` values with a route table (others always run the bridge)."""

_LAYER_HOOK = re.compile(r"^blocks\.(\d+)\.(mlp\.hook_post|mlp\.hook_pre|mlp\.hook_pre_linear|hook_mlp_out|"
                         r"hook_attn_out|hook_resid_post)$")


@dataclass(frozen=True)
class Route:
    """Where a hook name lives on the twin.

    Attributes:
        module: the submodule the torch hook is registered on.
        kind: ``"output"`` (forward hook on what the module returns) or ``"input"`` (forward
            pre-hook on its first positional argument).
    """

    module: torch.nn.Module
    kind: Literal["output", "input"]


def weight_sharing_twin(hf_model: torch.nn.Module) -> torch.nn.Module:
    """A copy of ``hf_model``'s module tree whose parameters are ``hf_model``'s own tensors.

    Buffers (attention masks, rotary frequencies) are copied; they are small. Must be called
    before ``TransformerBridge.boot_transformers`` wraps ``hf_model`` in place.

    Example:
        >>> twin = weight_sharing_twin(hf)  # doctest: +SKIP
        >>> all(a is b for a, b in zip(hf.parameters(), twin.parameters()))  # doctest: +SKIP
        True
    """
    shared = {id(param): param for param in hf_model.parameters()}
    twin = copy.deepcopy(hf_model, memo=shared)
    twin.eval()
    return twin


def _layers(twin: Any, model_type: str) -> Any:
    return twin.transformer.h if model_type == "gpt2" else twin.model.layers


def route(twin: Any, name: str) -> Route | None:
    """The route of hook ``name`` on ``twin``, or ``None`` when it has none (use the bridge).

    Example:
        >>> route(twin, "blocks.1.hook_mlp_out").kind  # doctest: +SKIP
        'output'
    """
    model_type = str(getattr(twin.config, "model_type", ""))
    if model_type not in ROUTED_MODEL_TYPES:
        return None
    gpt2 = model_type == "gpt2"
    if name == "hook_embed":
        return Route(twin.get_input_embeddings(), "output")
    if name == "hook_pos_embed":
        return Route(twin.transformer.wpe, "output") if gpt2 else None
    match = _LAYER_HOOK.match(name)
    if match is None:
        return None
    layers = _layers(twin, model_type)
    layer, point = int(match.group(1)), match.group(2)
    if layer >= len(layers):
        return None
    block = layers[layer]
    if point == "hook_resid_post":
        return Route(block, "output")
    if point == "hook_attn_out":
        return Route(block.attn if gpt2 else block.self_attn, "output")
    if point == "hook_mlp_out":
        return Route(block.mlp, "output")
    if gpt2:
        return {"mlp.hook_post": Route(block.mlp.act, "output"), "mlp.hook_pre": Route(block.mlp.act, "input")}.get(point)
    return {"mlp.hook_post": Route(block.mlp.down_proj, "input"), "mlp.hook_pre": Route(block.mlp.gate_proj, "output"),
            "mlp.hook_pre_linear": Route(block.mlp.up_proj, "output")}[point]


def _replace_first(value: Any, fn: HookFn) -> Any:
    """Apply ``fn`` to a tensor, or to the first item of a tuple (attention and block outputs)."""
    if isinstance(value, tuple):
        new = fn(value[0])
        return None if new is None else (new, *value[1:])
    return fn(value)


def register(twin: Any, name: str, fn: HookFn) -> torch.utils.hooks.RemovableHandle:
    """Register ``fn`` at hook ``name`` on ``twin``; returns the handle that removes it.

    ``fn`` receives the hook point's tensor and returns a replacement or ``None``, as with
    ``LoadedModel.hooks``.

    Raises:
        KeyError: ``name`` has no route (check with :func:`route` first).
    """
    where = route(twin, name)
    if where is None:
        raise KeyError(name)
    if where.kind == "output":

        def forward_hook(_module: Any, _inputs: Any, output: Any) -> Any:
            return _replace_first(output, fn)

        return where.module.register_forward_hook(forward_hook)

    def pre_hook(_module: Any, inputs: tuple[Any, ...]) -> Any:
        return _replace_first(inputs, fn)

    return where.module.register_forward_pre_hook(pre_hook)
