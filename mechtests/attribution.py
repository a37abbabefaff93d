"""Per-neuron probe-projection changes, group sums and shares, and the completeness identity.

PAPER.md (A): ``proj_i(model) = mean a_i * (w_i . p_unit)``; ``reduction_i = proj_i(base) -
proj_i(tuned)`` (positive = the tuned model writes less along the probe).

Example:
    >>> base_proj = neuron_projections(pair.base, probe, base_stats.mean_activation())
    >>> tuned_proj = neuron_projections(pair.tuned, probe, tuned_stats.mean_activation())
    >>> ga = group_attribution(cos, base_act, tuned_act, base_proj, tuned_proj)
    >>> round(ga.shares["TP_down"], 3)  # on the tiny example pair (PAPER.md: 0.318 on GPT-2 medium)
    0.314
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

from mechtests.data import TextSet, left_padded_batch, masked_mean, start_tokens, without_start_tokens
from mechtests.errors import NumericalError, UsageError
from mechtests.neurons import GROUPS, MIRRORS, NeuronSet, group_masks

if TYPE_CHECKING:
    from mechtests.models import LoadedModel, ModelPair
    from mechtests.probes import Probe


def neuron_projections(model: LoadedModel, probe: Probe, mean_activation: torch.Tensor) -> torch.Tensor:
    """``[L, d_mlp]`` float64: each neuron's mean write along the unit probe direction, ``a_i * (w_i . p_unit)``.

    Each model uses its own value vectors.
    """
    probe.check_width(model)
    expected = (model.n_layers, model.d_mlp)
    if tuple(mean_activation.shape) != expected:
        raise UsageError(f"mean_activation has shape {tuple(mean_activation.shape)}, expected {expected}")
    value_dots = model.value_projections(probe.direction)
    out = mean_activation.detach().to("cpu", torch.float64) * value_dots
    if not bool(torch.isfinite(out).all()):
        raise NumericalError(f"{model.source}: NaN/inf in the neuron projections")
    return out


@dataclass(frozen=True, eq=False)
class GroupAttribution:
    """Per-neuron reductions and their split over PAPER.md's eight groups.

    Attributes:
        reduction: ``[L, d_mlp]`` float64, ``base_projection - tuned_projection``.
        groups: the eight groups (``GROUPS + MIRRORS``).
        sums: sum of ``reduction`` per group.
        counts: neurons per group.
        shares: each of the four ``GROUPS``' sum over the four groups' total (mirrors: over the
            same total, so they come out negative).
        net: sum of every neuron's reduction.
        gross_decrease: sum of the positive reductions (toxicity-decreasing moves).
        gross_increase: minus the sum of the negative reductions (toxicity-increasing moves).
    """

    reduction: torch.Tensor
    groups: Mapping[str, NeuronSet]
    sums: Mapping[str, float]
    counts: Mapping[str, int]
    shares: Mapping[str, float]
    net: float
    gross_decrease: float
    gross_increase: float

    @property
    def fraction_toward_toxicity(self) -> float:
        """Fraction of the neurons that moved (reduction != 0) whose reduction is negative; a
        neuron with exactly no change counts neither way. NaN when none moved."""
        moved = self.reduction != 0
        return float((self.reduction[moved] < 0).double().mean()) if bool(moved.any()) else float("nan")


def group_attribution(cosines: torch.Tensor, base_activation: torch.Tensor, tuned_activation: torch.Tensor,
                      base_projection: torch.Tensor, tuned_projection: torch.Tensor) -> GroupAttribution:
    """Group sums and shares of the per-neuron reduction (PAPER.md's table, all eight groups).

    Example:
        >>> ga = group_attribution(cos, a_base, a_tuned, p_base, p_tuned)
        >>> sum(ga.shares[g] for g in GROUPS)
        1.0
    """
    if base_projection.shape != tuned_projection.shape or base_projection.shape != cosines.shape:
        raise UsageError(f"shapes differ: cosines {tuple(cosines.shape)}, projections {tuple(base_projection.shape)} "
                         f"and {tuple(tuned_projection.shape)}")
    reduction = base_projection.detach().cpu().to(torch.float64) - tuned_projection.detach().cpu().to(torch.float64)
    masks = group_masks(cosines, base_activation, tuned_activation)
    sums = {name: float(reduction[mask].sum()) for name, mask in masks.items()}
    counts = {name: int(mask.sum()) for name, mask in masks.items()}
    total = sum(sums[name] for name in GROUPS)
    shares = {name: (sums[name] / total if total != 0 else float("nan")) for name in GROUPS + MIRRORS}
    return GroupAttribution(
        reduction=reduction,
        groups={name: NeuronSet.from_mask(mask) for name, mask in masks.items()},
        sums=sums, counts=counts, shares=shares,
        net=float(reduction.sum()), gross_decrease=float(reduction[reduction > 0].sum()),
        gross_increase=float(-reduction[reduction < 0].sum()),
    )


def layer_shares(reduction: torch.Tensor) -> torch.Tensor:
    """``[L]`` each layer's share of the net reduction."""
    per_layer = reduction.to(torch.float64).sum(dim=1)
    return per_layer / per_layer.sum()


@dataclass(frozen=True)
class Completeness:
    """The probe-projection change of the final residual against the sum of its writers.

    Attributes:
        total_change: projection(base) - projection(tuned) of the pooled final residual (pre-LN).
        parts: the same difference per writer: ``embed``, ``pos_embed`` (learned positions only),
            ``attention`` (all attention outputs), ``neurons`` (all ``a_i w_i``) and ``mlp_bias``.
        residual: ``total_change - sum(parts)``.
        relative_residual: ``|residual| / |total_change|``.
    """

    total_change: float
    parts: Mapping[str, float]
    residual: float
    relative_residual: float


def _decomposed_projection(model: LoadedModel, probe: Probe, texts: Sequence[str], *, batch_size: int,
                           max_tokens: int) -> tuple[float, dict[str, float]]:
    """Mean (over texts) of the pooled projection of the final residual and of each writer."""
    direction = probe.direction.to(model.device, torch.float64)
    value_dots = [(model.value_vectors(layer).to(torch.float64) @ direction) for layer in range(model.n_layers)]
    bias_dot = sum(float(model.mlp_out_bias(layer).to(torch.float64) @ direction) for layer in range(model.n_layers))
    captured: dict[str, torch.Tensor] = {}

    def grab(name: str) -> Callable[[torch.Tensor], None]:
        def hook(x: torch.Tensor) -> None:
            captured[name] = x

        return hook

    names = {f"embed:{n}": n for n in model.embed_hooks}
    names.update({f"attn:{layer}": model.attn_out_hook(layer) for layer in range(model.n_layers)})
    names.update({f"neurons:{layer}": model.neuron_hook(layer) for layer in range(model.n_layers)})
    names["final"] = model.final_resid_hook
    sums = {"total": 0.0, "embed": 0.0, "pos_embed": 0.0, "attention": 0.0, "neurons": 0.0}
    n_start = len(start_tokens(model.tokenizer))
    with torch.inference_mode(), model.hooks([(hook, grab(key)) for key, hook in names.items()]):
        for start in range(0, len(texts), batch_size):
            ids, mask = left_padded_batch(model.tokenizer, texts[start : start + batch_size], max_tokens=max_tokens,
                                          device=model.device)
            model.forward(ids, mask, last_only=True)

            text = without_start_tokens(mask, n_start)  # pooled like the probe: the text's own tokens

            def pooled(key: str, mask: torch.Tensor = text) -> torch.Tensor:
                return masked_mean(captured[key].to(torch.float64), mask)

            sums["total"] += float((pooled("final") @ direction).sum())
            for key in names:
                if key.startswith("embed:"):
                    part = "pos_embed" if key.endswith("pos_embed") else "embed"
                    sums[part] += float((pooled(key) @ direction).sum())
                elif key.startswith("attn:"):
                    sums["attention"] += float((pooled(key) @ direction).sum())
                elif key.startswith("neurons:"):
                    layer = int(key.split(":")[1])
                    sums["neurons"] += float((pooled(key) @ value_dots[layer]).sum())
            captured.clear()
    n = len(texts)
    parts = {k: v / n for k, v in sums.items() if k != "total"}
    if "hook_pos_embed" not in model.embed_hooks:
        parts.pop("pos_embed")
    parts["mlp_bias"] = bias_dot
    return sums["total"] / n, parts


def completeness(pair: ModelPair, probe: Probe, texts: TextSet | Sequence[str], *, batch_size: int = 16,
                 max_tokens: int | None = None) -> Completeness:
    """Check that the writers of the residual stream add up to the change of its probe projection.

    The final residual (before the final LayerNorm) is embeddings + every attention output +
    every MLP output, and an MLP output is ``sum_i a_i w_i + b_out``. Each part is pooled like
    the probe (mean over real tokens, then over texts) and projected on the unit probe direction.
    The identity holds to float32 rounding (~1e-6 relative on the tiny test pairs); in bfloat16
    the forward pass itself rounds at ~1e-2, so run this check with ``dtype=torch.float32``.

    Example:
        >>> c = completeness(pair, probe, texts)
        >>> c.relative_residual < 1e-4
        True
    """
    items = list(texts.texts if isinstance(texts, TextSet) else texts)
    if not items:
        raise UsageError("completeness needs at least one text")
    for model in (pair.base, pair.tuned):  # the residual is a sum of neuron writes only without post-sublayer norms
        model.require_linear_neuron_writes("completeness")
    max_tokens = max_tokens or min(pair.base.n_ctx - len(start_tokens(pair.base.tokenizer)), 128)
    base_total, base_parts = _decomposed_projection(pair.base, probe, items, batch_size=batch_size, max_tokens=max_tokens)
    tuned_total, tuned_parts = _decomposed_projection(pair.tuned, probe, items, batch_size=batch_size,
                                                      max_tokens=max_tokens)
    total = base_total - tuned_total
    parts = {name: base_parts[name] - tuned_parts[name] for name in base_parts}
    residual = total - sum(parts.values())
    relative = abs(residual) / abs(total) if total != 0 else (0.0 if residual == 0 else float("inf"))
    if not (math.isfinite(total) and math.isfinite(residual)):
        raise NumericalError("completeness: NaN/inf in the projections; check the models and the probe")
    return Completeness(total, parts, residual, relative)
