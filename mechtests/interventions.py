"""Interventions as context managers that install hooks and always remove them.

Each intervention is a frozen dataclass with ``.key()`` (content identity for caches) and
``.applied(model)``. None of them touches stored weights: scaling key vectors is done on the
pre-activation, so using the same intervention three times in a row has the same effect three
times (PAPER.md's pitfalls: piled-up hooks, in-place ``x s^3`` scaling).

Example:
    >>> with ZeroAblation(top_neurons).applied(model):
    ...     result = generate(model, prompts)
"""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Protocol, cast

import torch

from mechtests.errors import NumericalError, UsageError
from mechtests.neurons import NeuronSet

if TYPE_CHECKING:
    from mechtests.models import ForwardInputs, LoadedModel


class Intervention(Protocol):
    """What every intervention offers."""

    def key(self) -> str: ...

    def applied(self, model: LoadedModel) -> contextlib.AbstractContextManager[LoadedModel]: ...


def _tensor_key(tensor: torch.Tensor) -> str:
    data = tensor.detach().to("cpu", torch.float64).contiguous()
    return hashlib.sha256(f"{tuple(data.shape)}".encode() + data.numpy().tobytes()).hexdigest()[:16]


def _check_fits(neurons: NeuronSet, model: LoadedModel) -> None:
    if (neurons.n_layers, neurons.d_mlp) != (model.n_layers, model.d_mlp):
        raise UsageError(f"neuron set for a {neurons.n_layers}x{neurons.d_mlp} model used on {model.source} "
                         f"({model.n_layers}x{model.d_mlp})")


def _neuron_values(name: str, values: torch.Tensor, neurons: NeuronSet) -> torch.Tensor:
    if values.shape != (neurons.n_layers, neurons.d_mlp):
        raise UsageError(f"{name}: values must have shape [n_layers, d_mlp] = {(neurons.n_layers, neurons.d_mlp)}, "
                         f"got {tuple(values.shape)}")
    values = values.detach().to("cpu", torch.float32).clone()
    if not bool(torch.isfinite(values[neurons.to_mask()]).all()):
        raise NumericalError(f"{name}: the values for the chosen neurons contain NaN/inf")
    return values


def _per_layer_hooks(model: LoadedModel, neurons: NeuronSet, hook_name: Callable[[int], str],
                     make: Callable[[int, torch.Tensor], Callable[[torch.Tensor], torch.Tensor]]
                     ) -> list[tuple[str, Callable[[torch.Tensor], torch.Tensor]]]:
    _check_fits(neurons, model)
    return [(hook_name(layer), make(layer, idx.to(model.device))) for layer, idx in neurons.by_layer().items()]


@dataclass(frozen=True)
class NoIntervention:
    """The untouched model."""

    row_batchable: ClassVar[bool] = True

    def key(self) -> str:
        return "none"

    @contextlib.contextmanager
    def applied(self, model: LoadedModel) -> Iterator[LoadedModel]:
        yield model


@dataclass(frozen=True)
class ZeroAblation:
    """Set the chosen neurons' activations to 0 at every position."""

    row_batchable: ClassVar[bool] = True

    neurons: NeuronSet

    def key(self) -> str:
        return f"zero({self.neurons.key()})"

    @contextlib.contextmanager
    def applied(self, model: LoadedModel) -> Iterator[LoadedModel]:
        def make(layer: int, idx: torch.Tensor) -> Callable[[torch.Tensor], torch.Tensor]:
            def hook(a: torch.Tensor) -> torch.Tensor:
                a[..., idx] = 0.0
                return a

            return hook

        with model.hooks(_per_layer_hooks(model, self.neurons, model.neuron_hook, make)):
            yield model


def _constant_patch(model: LoadedModel, neurons: NeuronSet, values: torch.Tensor
                    ) -> contextlib.AbstractContextManager[LoadedModel]:
    def make(layer: int, idx: torch.Tensor) -> Callable[[torch.Tensor], torch.Tensor]:
        constants = values[layer].to(model.device, model.dtype)[idx.cpu()].to(model.device)

        def hook(a: torch.Tensor) -> torch.Tensor:
            a[..., idx] = constants
            return a

        return hook

    return model.hooks(_per_layer_hooks(model, neurons, model.neuron_hook, make))


@dataclass(frozen=True, eq=False)
class PatchActivations:
    """Set the chosen neurons' activations to per-neuron constants ``values[layer, index]``.

    E.g. the tuned model's mean activations (PAPER.md: "patch TP↓ to post-DPO activations").
    """

    row_batchable: ClassVar[bool] = True

    neurons: NeuronSet
    values: torch.Tensor

    def __post_init__(self) -> None:
        object.__setattr__(self, "values", _neuron_values("PatchActivations", self.values, self.neurons))

    def key(self) -> str:
        return f"patch({self.neurons.key()},{_tensor_key(self.values[self.neurons.to_mask()])})"

    def applied(self, model: LoadedModel) -> contextlib.AbstractContextManager[LoadedModel]:
        return _constant_patch(model, self.neurons, self.values)


@dataclass(frozen=True, eq=False)
class MeanAblation:
    """Set the chosen neurons' activations to their means ``means[layer, index]`` (e.g. over a corpus)."""

    row_batchable: ClassVar[bool] = True

    neurons: NeuronSet
    means: torch.Tensor

    def __post_init__(self) -> None:
        object.__setattr__(self, "means", _neuron_values("MeanAblation", self.means, self.neurons))

    def key(self) -> str:
        return f"mean({self.neurons.key()},{_tensor_key(self.means[self.neurons.to_mask()])})"

    def applied(self, model: LoadedModel) -> contextlib.AbstractContextManager[LoadedModel]:
        return _constant_patch(model, self.neurons, self.means)


@dataclass(frozen=True, eq=False)
class PatchFromModel:
    """Per position, replace the chosen neurons' activations by ``source``'s on the same tokens.

    The source model runs in lockstep: before every forward call of the patched model, the
    source runs on the same ``input_ids``/mask/positions (with its own KV cache during cached
    generation), and its activations replace the patched model's at every position.
    """

    # in a shared batch the source runs on this condition's rows only (`_RowView.observe_inputs`)
    row_batchable: ClassVar[bool] = True

    neurons: NeuronSet
    source: LoadedModel

    def key(self) -> str:
        return f"patch_from({self.neurons.key()},{self.source.fingerprint[:16]})"

    @contextlib.contextmanager
    def applied(self, model: LoadedModel) -> Iterator[LoadedModel]:
        _check_fits(neurons := self.neurons, model)
        _check_fits(neurons, self.source)
        if self.source is _unwrapped(model) or not len(neurons):
            # Patching a model from itself on the same tokens is the identity; running it as its
            # own source would also fire the caller's hooks (e.g. statistics) twice.
            yield model
            return
        by_layer = {layer: idx.to(model.device) for layer, idx in neurons.by_layer().items()}
        captured: dict[int, torch.Tensor] = {}
        state: dict[str, object] = {"past": None, "in_source": False}
        source = self.source

        def capture(layer: int, idx: torch.Tensor) -> Callable[[torch.Tensor], None]:
            def hook(a: torch.Tensor) -> None:
                captured[layer] = a[..., idx].detach().clone()

            return hook

        def run_source(inputs: ForwardInputs) -> None:
            if state.get("in_source"):
                return  # the source is the patched model itself: its own run is not patched
            captured.clear()
            past = state["past"] if inputs.continues_cache else None
            state["in_source"] = True
            try:
                with source.hooks([(source.neuron_hook(layer), capture(layer, idx)) for layer, idx in by_layer.items()]):
                    mask, positions = inputs.attention_mask, inputs.position_ids
                    out = source.forward(inputs.input_ids.to(source.device),
                                         None if mask is None else mask.to(source.device),
                                         position_ids=None if positions is None else positions.to(source.device),
                                         past=past, use_cache=inputs.uses_cache, last_only=True)
            finally:
                state["in_source"] = False
            state["past"] = out.past

        def patch(layer: int, idx: torch.Tensor) -> Callable[[torch.Tensor], torch.Tensor]:
            def hook(a: torch.Tensor) -> torch.Tensor:
                if state.get("in_source"):
                    return a
                values = captured.get(layer)
                if values is None or values.shape[:-1] != a.shape[:-1]:
                    raise UsageError("PatchFromModel: the source model did not run on the same tokens; "
                                     "call the model through LoadedModel.forward with input_ids")
                a[..., idx] = values.to(a.device, a.dtype)
                return a

            return hook

        try:
            with model.observe_inputs(run_source), model.hooks([(model.neuron_hook(layer), patch(layer, idx))
                                                               for layer, idx in by_layer.items()]):
                yield model
        finally:
            state["past"] = None
            captured.clear()


@dataclass(frozen=True)
class ScaleKeys:
    """Scale the chosen neurons' key vectors (``W_in`` columns; ``W_up`` for gated MLPs) by ``factor``.

    Done on the pre-activation without touching the weights: ``pre' = factor * (pre - b_in) + b_in``,
    which equals the pre-activation of a model whose key columns were multiplied by ``factor``.
    """

    row_batchable: ClassVar[bool] = True

    neurons: NeuronSet
    factor: float

    def __post_init__(self) -> None:
        if not torch.isfinite(torch.tensor(float(self.factor))):
            raise UsageError(f"ScaleKeys factor must be finite, got {self.factor}")

    def key(self) -> str:
        return f"scale_keys({self.neurons.key()},{float(self.factor)!r})"

    @contextlib.contextmanager
    def applied(self, model: LoadedModel) -> Iterator[LoadedModel]:
        factor = float(self.factor)
        if factor == 1.0:
            # Exactly the identity: skip the hook, whose (pre - b) + b would round.
            _check_fits(self.neurons, model)
            yield model
            return

        def make(layer: int, idx: torch.Tensor) -> Callable[[torch.Tensor], torch.Tensor]:
            bias = model.mlp_in_bias(layer)[idx]

            def hook(pre: torch.Tensor) -> torch.Tensor:
                pre[..., idx] = factor * (pre[..., idx] - bias) + bias
                return pre

            return hook

        with model.hooks(_per_layer_hooks(model, self.neurons, model.pre_activation_hook, make)):
            yield model


@dataclass(frozen=True, eq=False)
class SubtractDirection:
    """Subtract ``alpha * direction`` (unit-normalised when ``normalize``) at a hook point, every position.

    PAPER.md (B): the probe direction, alpha 50, at the last MLP's output.
    """

    row_batchable: ClassVar[bool] = True

    hook_name: str
    direction: torch.Tensor
    alpha: float
    normalize: bool = True

    def __post_init__(self) -> None:
        direction = torch.as_tensor(self.direction).detach().to("cpu", torch.float32).reshape(-1)
        if not bool(torch.isfinite(direction).all()) or not torch.isfinite(torch.tensor(float(self.alpha))):
            raise NumericalError("SubtractDirection: direction or alpha contains NaN/inf")
        if self.normalize:
            norm = float(direction.norm())
            if norm == 0.0:
                raise UsageError("SubtractDirection: the direction is all zeros")
            direction = direction / norm
        object.__setattr__(self, "direction", direction)

    def key(self) -> str:
        return f"subtract({self.hook_name},{_tensor_key(self.direction)},{float(self.alpha)!r},{self.normalize})"

    @contextlib.contextmanager
    def applied(self, model: LoadedModel) -> Iterator[LoadedModel]:
        if self.direction.numel() != model.d_model:
            raise UsageError(f"SubtractDirection: direction of width {self.direction.numel()} on {model.source} "
                             f"(d_model={model.d_model})")
        delta = (float(self.alpha) * self.direction).to(model.device, model.dtype)

        def hook(x: torch.Tensor) -> torch.Tensor:
            return x - delta

        with model.hooks([(self.hook_name, hook)]):
            yield model


@dataclass(frozen=True, eq=False)
class Compose:
    """Several interventions at once, entered in order and exited in reverse order."""

    interventions: tuple[Intervention, ...]

    def __init__(self, *interventions: Intervention) -> None:
        object.__setattr__(self, "interventions", tuple(interventions))

    @property
    def row_batchable(self) -> bool:
        return all(row_batchable(i) for i in self.interventions)

    def key(self) -> str:
        return "compose(" + ";".join(i.key() for i in self.interventions) + ")"

    @contextlib.contextmanager
    def applied(self, model: LoadedModel) -> Iterator[LoadedModel]:
        with contextlib.ExitStack() as stack:
            for intervention in self.interventions:
                stack.enter_context(intervention.applied(model))
            yield model


# ---- several conditions in one batch ------------------------------------------------------------

def row_batchable(intervention: object) -> bool:
    """Whether ``intervention`` may share a batch with other conditions (`row_batched`): it only
    installs hooks through ``model.hooks`` that rewrite the rows they are given (and follows the
    tokens, if at all, through ``model.observe_inputs``, which then shows its rows only).
    Interventions from elsewhere must say so with ``row_batchable = True``; without it they run alone.

    Example:
        >>> row_batchable(None), row_batchable(NoIntervention())
        (True, True)
    """
    return intervention is None or bool(getattr(intervention, "row_batchable", False))


class RowLayout:
    """How the rows of the current batch are shared: row ``r`` belongs to condition ``r % count``.
    ``rows`` is set by the caller before each forward pass, so a hook can check its tensor."""

    def __init__(self, count: int) -> None:
        self.count = count
        self.rows: int | None = None


def _on_rows(fn: Callable[[torch.Tensor], torch.Tensor | None], index: int, layout: RowLayout, name: str
             ) -> Callable[[torch.Tensor], torch.Tensor]:
    def hook(t: torch.Tensor) -> torch.Tensor:
        if layout.rows is None or t.shape[0] != layout.rows:
            raise UsageError(f"hook {name}: a row-batched pass expected a tensor of {layout.rows} rows (prompts x "
                             f"conditions) on dim 0, got shape {tuple(t.shape)}. Fix: run this intervention alone "
                             "(row_batchable = False)")
        part = t[index :: layout.count]
        out = fn(part)
        if out is not None and out is not part:
            t[index :: layout.count] = out
        return t

    return hook


class _RowView:
    """``model`` as one condition of a row-batched pass sees it: the hooks it installs touch only
    its own rows; everything else is the model's."""

    def __init__(self, model: LoadedModel, index: int, layout: RowLayout) -> None:
        self._model, self._index, self._layout = model, index, layout

    def __getattr__(self, name: str) -> Any:
        return getattr(self._model, name)

    def hooks(self, pairs: Sequence[tuple[str, Callable[[torch.Tensor], torch.Tensor | None]]]
              ) -> contextlib.AbstractContextManager[object]:
        return self._model.hooks([(name, _on_rows(fn, self._index, self._layout, name)) for name, fn in pairs])

    def observe_inputs(self, fn: Callable[[ForwardInputs], None]) -> contextlib.AbstractContextManager[object]:
        """The model's inputs as this condition's rows only (so a source model run in lockstep, as
        `PatchFromModel`'s, sees the tokens, mask and positions of exactly the rows it patches)."""
        from mechtests.models import ForwardInputs

        index, count = self._index, self._layout.count

        def own_rows(inputs: ForwardInputs) -> None:
            mask, positions = inputs.attention_mask, inputs.position_ids
            fn(ForwardInputs(inputs.input_ids[index::count], None if mask is None else mask[index::count],
                             None if positions is None else positions[index::count], inputs.continues_cache,
                             inputs.uses_cache))

        return self._model.observe_inputs(own_rows)


def _unwrapped(model: object) -> object:
    """The model behind a row view (`_RowView`), or ``model`` itself."""
    return model._model if isinstance(model, _RowView) else model


@contextlib.contextmanager
def row_batched(model: LoadedModel, interventions: Sequence[Intervention | None]) -> Iterator[RowLayout]:
    """Install ``interventions[c]`` on rows ``c, c + C, c + 2C, ...`` of every batch (``C`` =
    ``len(interventions)``; ``None`` = no intervention), all at once; yields the `RowLayout`, whose
    ``rows`` the caller sets before each forward. Raises `UsageError` for one that is not
    `row_batchable`.

    Example:
        >>> with row_batched(model, [None, ZeroAblation(top)]) as layout:
        ...     layout.rows = 2 * n_prompts  # rows 0, 2, ... untouched; rows 1, 3, ... ablated
        ...     logits = model.forward(ids.repeat_interleave(2, dim=0), mask.repeat_interleave(2, dim=0)).logits
        >>> bool((logits[0::2] != logits[1::2]).any()), logits.shape[0] == 2 * n_prompts
        (True, True)
    """
    for iv in interventions:
        if not row_batchable(iv):
            raise UsageError(f"{type(iv).__name__} cannot share a batch with other conditions (it is not "
                             "row_batchable). Fix: run it alone")
    layout = RowLayout(len(interventions))
    with contextlib.ExitStack() as stack:
        for index, iv in enumerate(interventions):
            if iv is not None:
                stack.enter_context(iv.applied(cast("LoadedModel", _RowView(model, index, layout))))
        yield layout
