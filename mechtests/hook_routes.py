"""The engine's hook names as plain ``torch`` hooks on a weight-sharing Hugging Face twin.

Why: ``TransformerBridge`` wraps every Hugging Face module in place and re-implements parts of
the forward pass in Python (LayerNorm as ~10 operators, attention without SDPA, GPT-2's fused QKV
as three linears): ~1.55x the operators of plain Hugging Face per decoding step, which on a GPU
(launch-bound at generation batch sizes) capped generation at ~0.6x of ``generate``
(docs/PERFORMANCE.md). The twin is a second Hugging Face module tree holding the *same* parameter
tensors (no second copy of the weights); the hook points the engine uses are plain forward hooks
on its submodules. ``LoadedModel`` runs the twin whenever every active hook has a route here
and the bridge otherwise, so results never depend on which names are routed.

Routed (``L`` = layer), for GPT-2 and the gated Llama/Mistral/Qwen2 MLPs:

=========================== ================================= ==================================
hook name                   GPT-2                             Llama / Mistral / Qwen2
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

:class:`HookPlacement` decides where a model's active hooks sit: all on the twin while each has a
route and nobody else has hooks on the bridge, all on the bridge otherwise — one forward call
never runs half its hooks in each tree.

Example:
    >>> twin = weight_sharing_twin(hf_model)
    >>> handle = register(twin, "blocks.0.mlp.hook_post", lambda a: a * 0)
    >>> handle.remove()
"""

from __future__ import annotations

import contextlib
import copy
import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import torch

from mechtests.errors import UsageError

HookFn = Callable[[torch.Tensor], "torch.Tensor | None"]
#: which module tree a forward call runs: the plain Hugging Face twin or the TransformerBridge
Running = Literal["plain", "bridge"]

ROUTED_MODEL_TYPES = frozenset({"gpt2", "llama", "mistral", "qwen2"})
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
        >>> twin = weight_sharing_twin(hf)
        >>> all(a is b for a, b in zip(hf.parameters(), twin.parameters()))
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
        >>> route(twin, "blocks.1.hook_mlp_out").kind
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
    if name == "ln_final.hook_out":
        return Route(twin.transformer.ln_f if gpt2 else twin.model.norm, "output")
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


class _ActiveHook:
    """One hook of :meth:`HookPlacement.installed`, registered in one tree at a time."""

    def __init__(self, name: str, fn: HookFn, routed: bool) -> None:
        self.name, self.fn, self.routed = name, fn, routed
        self.remove: Callable[[], None] | None = None


def _tl_hook(fn: HookFn) -> Callable[..., torch.Tensor | None]:
    """TransformerLens calls ``fn(tensor, hook=...)``; the engine's hooks only take the tensor."""

    def hook(tensor: torch.Tensor, hook: Any = None) -> torch.Tensor | None:
        return fn(tensor)

    return hook


class HookPlacement:
    """Where one model's active hooks run: the weight-sharing twin, or the bridge.

    The twin while every active hook has a route and nobody else's hooks sit on the bridge's
    hook points; the bridge otherwise (or always, without a twin). Moving re-registers every
    active hook in install order, so hooks at one point keep their order.

    Example:
        >>> placement = HookPlacement(bridge, twin, source="ckpt")
        >>> with placement.installed([("blocks.0.mlp.hook_post", lambda a: a * 0)]):
        ...     placement.place()
        'plain'
    """

    def __init__(self, bridge: Any, twin: Any, *, source: str) -> None:
        self.bridge, self.twin, self.source = bridge, twin, source
        self._active: list[_ActiveHook] = []
        self._on_bridge = twin is None
        # The bridge's hook points, to notice hooks added to them behind this class's back.
        self._points = list({id(p): p for p in bridge.hook_dict.values()}.values())

    @contextlib.contextmanager
    def installed(self, fwd_hooks: Sequence[tuple[str, HookFn]]) -> Iterator[None]:
        """Install ``(name, fn)`` hooks for the block; always removed, also on error.

        Raises:
            UsageError: a name that is neither routed nor a bridge hook point.
        """
        added = []
        for name, fn in fwd_hooks:
            routed = self.twin is not None and route(self.twin, name) is not None
            if not routed and name not in self.bridge.hook_dict:
                raise UsageError(f"{self.source}: no hook point named {name!r}. Fix: use a name from "
                                 "model.bridge.hook_dict, e.g. model.neuron_hook(0) = 'blocks.0.mlp.hook_post'")
            added.append(_ActiveHook(name, fn, routed))
        try:
            for hook in added:
                self._active.append(hook)
                self.place()
                if hook.remove is None:
                    self._register(hook)
            yield
        finally:
            for hook in reversed(added):
                if hook in self._active:
                    self._active.remove(hook)
                if hook.remove is not None:
                    hook.remove()
                    hook.remove = None
            self.place()

    def foreign_bridge_hooks(self) -> int:
        """Forward hooks on the bridge's hook points that this placement did not put there.

        TransformerLens registers each hook with one ``register_forward_hook`` on one hook point,
        so the count is the points' hooks minus this placement's own while they sit on the
        bridge. ~40 us for 24 layers: under 1% of a GPU decoding step.
        """
        total = sum(len(point._forward_hooks) for point in self._points)
        ours = sum(hook.remove is not None for hook in self._active) if self._on_bridge else 0
        return total - ours

    def wants_bridge(self) -> bool:
        """Whether the active hooks (and the next forward call) belong on the bridge now."""
        return (self.twin is None or not all(hook.routed for hook in self._active)
                or self.foreign_bridge_hooks() > 0)

    def place(self) -> Running:
        """Move the active hooks to the tree they belong in; returns that tree."""
        want_bridge = self.wants_bridge()
        if want_bridge != self._on_bridge:
            for hook in self._active:
                if hook.remove is not None:
                    hook.remove()
                    hook.remove = None
            self._on_bridge = want_bridge
            for hook in self._active:  # install order
                self._register(hook)
        return "bridge" if self._on_bridge else "plain"

    def _register(self, hook: _ActiveHook) -> None:
        if self._on_bridge:
            context = self.bridge.hooks(fwd_hooks=[(hook.name, _tl_hook(hook.fn))])
            context.__enter__()
            hook.remove = lambda: context.__exit__(None, None, None)
        else:
            hook.remove = register(self.twin, hook.name, hook.fn).remove
