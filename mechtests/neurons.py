"""Sets of MLP neurons, selection by cosine with the probe, and PAPER.md's eight groups.

A neuron is ``(layer, index)``; its value vector is row ``index`` of ``W_out`` (``W_down`` for
gated MLPs) in that layer.

Example:
    >>> s = NeuronSet.from_pairs([(1, 3), (0, 2)], n_layers=2, d_mlp=4)
    >>> list(s), len(s)
    ([(0, 2), (1, 3)], 2)
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from functools import cached_property
from typing import TYPE_CHECKING, Any, overload

import torch

from mechtests.effects import GROUP_LABELS, GROUP_NAMES, MIRROR_NAMES  # noqa: F401 (GROUP_LABELS re-exported)
from mechtests.errors import UsageError

if TYPE_CHECKING:
    import numpy as np

    from mechtests.models import LoadedModel
    from mechtests.probes import Probe

GROUPS, MIRRORS = GROUP_NAMES, MIRROR_NAMES  # the names this module always used


@dataclass(frozen=True)
class NeuronSet:
    """A validated, sorted, duplicate-free set of neurons of a model with ``n_layers x d_mlp`` neurons."""

    layers: tuple[int, ...]
    indices: tuple[int, ...]
    n_layers: int
    d_mlp: int

    def __post_init__(self) -> None:
        if self.n_layers < 1 or self.d_mlp < 1:
            raise UsageError(f"NeuronSet needs n_layers >= 1 and d_mlp >= 1, got {self.n_layers}, {self.d_mlp}")
        if len(self.layers) != len(self.indices):
            raise UsageError(f"NeuronSet: {len(self.layers)} layers but {len(self.indices)} indices")
        pairs = sorted(set(zip((int(v) for v in self.layers), (int(v) for v in self.indices), strict=True)))
        for layer, index in pairs:
            if not (0 <= layer < self.n_layers and 0 <= index < self.d_mlp):
                raise UsageError(
                    f"neuron ({layer}, {index}) is outside the model's {self.n_layers} layers x {self.d_mlp} neurons"
                )
        object.__setattr__(self, "layers", tuple(p[0] for p in pairs))
        object.__setattr__(self, "indices", tuple(p[1] for p in pairs))

    @classmethod
    def from_pairs(cls, pairs: Iterable[tuple[int, int]], *, n_layers: int, d_mlp: int) -> NeuronSet:
        """From ``(layer, index)`` pairs (duplicates merged)."""
        items = list(pairs)
        return cls(tuple(p[0] for p in items), tuple(p[1] for p in items), n_layers, d_mlp)

    @classmethod
    def from_mask(cls, mask: torch.Tensor) -> NeuronSet:
        """From a boolean ``[n_layers, d_mlp]`` mask."""
        if mask.ndim != 2 or mask.dtype != torch.bool:
            raise UsageError(f"from_mask needs a bool [n_layers, d_mlp] tensor, got {mask.dtype} {tuple(mask.shape)}")
        where = mask.nonzero().cpu()
        return cls(tuple(where[:, 0].tolist()), tuple(where[:, 1].tolist()), int(mask.shape[0]), int(mask.shape[1]))

    @classmethod
    def empty(cls, *, n_layers: int, d_mlp: int) -> NeuronSet:
        return cls((), (), n_layers, d_mlp)

    @classmethod
    def from_flat(cls, flat: Iterable[int], *, n_layers: int, d_mlp: int) -> NeuronSet:
        """From flat indices ``layer * d_mlp + index`` (the order of ``[n_layers, d_mlp]`` arrays
        flattened, as `BlockAttribution` keeps them).

        Example:
            >>> list(NeuronSet.from_flat([5, 0], n_layers=2, d_mlp=4))
            [(0, 0), (1, 1)]
        """
        items = [int(f) for f in flat]
        bad = [f for f in items if not 0 <= f < n_layers * d_mlp]
        if bad:
            raise UsageError(f"flat neuron index {bad[0]} is outside the model's {n_layers} x {d_mlp} = "
                             f"{n_layers * d_mlp} neurons")
        return cls(tuple(f // d_mlp for f in items), tuple(f % d_mlp for f in items), n_layers, d_mlp)

    @classmethod
    def top_k(cls, scores: torch.Tensor, k: int, *, among: torch.Tensor | None = None,
              largest: bool = True) -> NeuronSet:
        """The ``k`` neurons with the largest (``largest=False``: smallest) ``scores[n_layers, d_mlp]``,
        optionally only ``among`` a boolean mask of the same shape; ties broken by flat index.

        Example:
            >>> list(NeuronSet.top_k(torch.tensor([[0.1, 0.9], [0.5, 0.2]]), 2))
            [(0, 1), (1, 0)]
        """
        if scores.ndim != 2:
            raise UsageError(f"scores must be [n_layers, d_mlp], got shape {tuple(scores.shape)}")
        n_layers, d_mlp = (int(n) for n in scores.shape)
        flat = scores.detach().to("cpu", torch.float64).reshape(-1)
        candidates = torch.arange(flat.numel())
        if among is not None:
            if among.shape != scores.shape or among.dtype != torch.bool:
                raise UsageError(f"among must be a bool mask of shape {tuple(scores.shape)}")
            candidates = candidates[among.cpu().reshape(-1)]
        if not 0 <= k <= candidates.numel():
            raise UsageError(f"k={k} but only {candidates.numel()} candidate neurons "
                             f"({n_layers} layers x {d_mlp}{' after the filter' if among is not None else ''}); "
                             "choose 0 <= k <= that number")
        values = flat[candidates]
        # A stable sort keeps the lower flat index first among equal scores.
        order = torch.sort(-values if largest else values, stable=True).indices[:k]
        return cls.from_flat(candidates[order].tolist(), n_layers=n_layers, d_mlp=d_mlp)

    def flat(self) -> list[int]:
        """Flat indices ``layer * d_mlp + index``, in the set's (sorted) order.

        Example:
            >>> NeuronSet((1, 0), (1, 0), 2, 4).flat()
            [0, 5]
        """
        return [layer * self.d_mlp + index for layer, index in self]

    def to_mask(self, device: str | torch.device = "cpu") -> torch.Tensor:
        """Boolean ``[n_layers, d_mlp]`` mask."""
        mask = torch.zeros(self.n_layers, self.d_mlp, dtype=torch.bool, device=device)
        if self.layers:
            mask[torch.tensor(self.layers), torch.tensor(self.indices)] = True
        return mask

    def by_layer(self) -> dict[int, torch.Tensor]:
        """``{layer: LongTensor of indices}`` for the layers that hold neurons of the set."""
        out: dict[int, list[int]] = {}
        for layer, index in zip(self.layers, self.indices, strict=True):
            out.setdefault(layer, []).append(index)
        return {layer: torch.tensor(idx, dtype=torch.long) for layer, idx in out.items()}

    def __len__(self) -> int:
        return len(self.layers)

    def __iter__(self) -> Iterator[tuple[int, int]]:
        return iter(zip(self.layers, self.indices, strict=True))

    @cached_property
    def _pairs(self) -> frozenset[tuple[int, int]]:
        return frozenset(zip(self.layers, self.indices, strict=True))

    def __contains__(self, item: object) -> bool:
        return item in self._pairs

    def key(self) -> str:
        """Stable content identity for cache keys."""
        digest = hashlib.sha256(f"{self.n_layers}x{self.d_mlp}:".encode())
        digest.update(",".join(f"{layer}.{index}" for layer, index in self).encode())
        return f"neurons[{len(self)}]:{digest.hexdigest()[:16]}"

    def _check_same_shape(self, other: NeuronSet) -> None:
        if (self.n_layers, self.d_mlp) != (other.n_layers, other.d_mlp):
            raise UsageError(f"neuron sets of different models: {self.n_layers}x{self.d_mlp} vs {other.n_layers}x{other.d_mlp}")

    def __or__(self, other: NeuronSet) -> NeuronSet:
        self._check_same_shape(other)
        return NeuronSet.from_pairs(list(self) + list(other), n_layers=self.n_layers, d_mlp=self.d_mlp)

    def __sub__(self, other: NeuronSet) -> NeuronSet:
        self._check_same_shape(other)
        drop = other._pairs
        return NeuronSet.from_pairs([p for p in self if p not in drop], n_layers=self.n_layers, d_mlp=self.d_mlp)


def neuron_cosines(model: LoadedModel, probe: Probe) -> torch.Tensor:
    """``[L, d_mlp]`` cosine similarity of every value vector with the probe weight (cpu float32).

    Example:
        >>> neuron_cosines(model, probe).shape  # [n_layers, d_mlp] of the tiny example model
        torch.Size([2, 64])
    """
    probe.check_width(model)
    dots = model.value_projections(probe.direction)
    norms = model.value_norms()
    # A zero value vector has no direction: cosine 0 puts it in no group.
    return torch.where(norms > 0, dots / norms.clamp(min=1e-300), torch.zeros_like(dots)).to(torch.float32)


def top_k_by_cosine(cosines: torch.Tensor, k: int, *, among: torch.Tensor | None = None) -> NeuronSet:
    """The ``k`` neurons with the largest cosine over all layers, optionally only ``among`` a bool mask.

    Ties are broken by (layer, index) order, so the result is deterministic.

    Raises:
        UsageError: ``k`` < 0 or larger than the number of candidate neurons.

    Example:
        >>> top_k_by_cosine(torch.tensor([[0.1, 0.9], [0.5, -1.0]]), 2)
        NeuronSet(layers=(0, 1), indices=(1, 0), n_layers=2, d_mlp=2)
    """
    return NeuronSet.top_k(cosines, k, among=among)


def positively_activated(cosines: torch.Tensor, mean_activation: torch.Tensor) -> torch.Tensor:
    """Bool mask of "toxic and positively activated" neurons (PAPER.md): cos > 0 and mean act > 0."""
    if cosines.shape != mean_activation.shape:
        raise UsageError(f"cosines {tuple(cosines.shape)} and activations {tuple(mean_activation.shape)} differ in shape")
    return (cosines.cpu() > 0) & (mean_activation.cpu() > 0)


def k_for_fraction(fraction: float, n_neurons: int) -> int:
    """The papers' k scaled to another model: ``max(1, round(fraction * n_neurons))``, capped at ``n_neurons``.

    Example:
        >>> k_for_fraction(100 / 98304, 98304), k_for_fraction(100 / 98304, 256)
        (100, 1)
    """
    if not 0.0 < fraction <= 1.0:
        raise UsageError(f"fraction must be in (0, 1], got {fraction}")
    if n_neurons < 1:
        raise UsageError(f"n_neurons must be >= 1, got {n_neurons}")
    return min(n_neurons, max(1, round(fraction * n_neurons)))


def group_masks(cosines: torch.Tensor, base_activation: torch.Tensor,
                tuned_activation: torch.Tensor) -> dict[str, torch.Tensor]:
    """Bool ``[L, d_mlp]`` masks of the eight groups (PAPER.md's table).

    cos sign: toxic-aligned (T, cos > 0) / anti-toxic (A, cos < 0); base activation: positive
    (P, ``>= 0``) / negative (N, ``< 0``); change of the mean activation, tuned minus base:
    ``down`` (< 0) / ``up`` (> 0). Neurons with cos == 0 or no change belong to no group.
    """
    if not (cosines.shape == base_activation.shape == tuned_activation.shape):
        raise UsageError(f"shapes differ: cosines {tuple(cosines.shape)}, base {tuple(base_activation.shape)}, "
                         f"tuned {tuple(tuned_activation.shape)}")
    cos, base, tuned = cosines.cpu(), base_activation.cpu().to(torch.float64), tuned_activation.cpu().to(torch.float64)
    return group_rule(cos, base, tuned)


@overload
def group_rule(cos: np.ndarray, base: np.ndarray, tuned: np.ndarray) -> dict[str, np.ndarray]: ...
@overload
def group_rule(cos: torch.Tensor, base: torch.Tensor, tuned: torch.Tensor) -> dict[str, torch.Tensor]: ...
def group_rule(cos: Any, base: Any, tuned: Any) -> dict[str, Any]:
    """PAPER.md's group table as element-wise masks: the one place the eight groups are defined.

    Works on numpy arrays and torch tensors of any (equal) shape alike, so the engine's
    :func:`group_masks` and the evaluator's vectorised bootstrap share this definition (the
    original analysis code mislabelled a group; two copies of the rule could drift apart).

    Example:
        >>> import numpy as np
        >>> m = group_rule(np.array([1.0, -1.0]), np.array([0.5, -0.5]), np.array([0.2, -0.1]))
        >>> [name for name in GROUPS + MIRRORS if m[name].any()]
        ['TP_down', 'AN_up']
    """
    toxic, anti = cos > 0, cos < 0
    positive, negative = base >= 0, base < 0
    down, up = tuned < base, tuned > base
    return {
        "TP_down": toxic & positive & down, "TN_down": toxic & negative & down,
        "AP_up": anti & positive & up, "AN_up": anti & negative & up,
        "TP_up": toxic & positive & up, "TN_up": toxic & negative & up,
        "AP_down": anti & positive & down, "AN_down": anti & negative & down,
    }


def classify_neurons(cosines: torch.Tensor, base_activation: torch.Tensor,
                     tuned_activation: torch.Tensor) -> dict[str, NeuronSet]:
    """The eight groups as :class:`NeuronSet` s, keyed by ``GROUPS + MIRRORS`` names.

    Example:
        >>> groups = classify_neurons(cos, base_act, tuned_act)
        >>> len(groups["TP_down"])  # of the tiny example pair's 128 neurons
        14
    """
    return {name: NeuronSet.from_mask(mask) for name, mask in group_masks(cosines, base_activation, tuned_activation).items()}
