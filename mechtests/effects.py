"""Claim statistics of a pair: functions of per-prompt arrays and per-block sums (torch-free).

The effects claims are stated on — ``recovered``, ``relative_reduction``, the eight neuron groups
(``group_masks``) and the block attribution (`BlockAttribution`: group shares, gross ratio, layer
share, fractions of neurons, cross-fitted where neurons are sorted by their own change) — as plain
numpy functions, so claims (and users' own claims) hand them to a bootstrap unchanged, and a
notebook reading cached sums needs no model. `BlockAttribution.from_evaluator` builds one from an
`mechtests.evaluator.Evaluator`'s cached passes.

Example:
    >>> import numpy as np
    >>> round(float(recovered(np.array([0.6, 0.5]), np.array([0.5, 0.45]), np.array([0.3, 0.3]))), 4)
    0.3
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np

from mechtests.stats import cross_fitted
from mechtests.thresholds import Direction, Threshold

#: a statistic's value: one number, or one per resample when called with ``axis`` on stacked resamples
ArrayOrFloat = float | np.ndarray

if TYPE_CHECKING:
    from mechtests.evaluator import Evaluator
    from mechtests.stats import Estimate, Estimator, Statistic

# ---------------------------------------------------------------------------- claim statistics
# Plain functions of per-prompt arrays / per-block sums, so claims (and users' own claims) can
# hand them to a bootstrap unchanged.

# The eight neuron groups of PAPER.md (cos sign x base activation sign x direction of change):
# the one definition of their names and display labels (neurons.py, figures and reports use these).
GROUP_NAMES: tuple[str, ...] = ("TP_down", "TN_down", "AP_up", "AN_up")
MIRROR_NAMES: tuple[str, ...] = ("TP_up", "TN_up", "AP_down", "AN_down")
GROUP_LABELS: dict[str, str] = {
    "TP_down": "TP↓", "TN_down": "TN↓", "AP_up": "AP↑", "AN_up": "AN↑",
    "TP_up": "TP↑", "TN_up": "TN↑", "AP_down": "AP↓", "AN_down": "AN↓",
}


def ratio(num: ArrayOrFloat, den: ArrayOrFloat) -> ArrayOrFloat:
    """``num / den`` element-wise, NaN where ``den`` is 0; a float for scalar input.

    Example:
        >>> ratio(1.0, 4.0), ratio(np.array([1.0, 1.0]), np.array([2.0, 0.0])).tolist()
        (0.25, [0.5, nan])
    """
    num, den = np.asarray(num, dtype=np.float64), np.asarray(den, dtype=np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        out = np.where(den != 0, num / np.where(den != 0, den, 1.0), np.nan)
    return float(out) if out.ndim == 0 else out


def recovered(tox_base: np.ndarray, tox_condition: np.ndarray, tox_tuned: np.ndarray, axis: int = -1) -> ArrayOrFloat:
    """Fraction of the tuned model's toxicity reduction a condition reproduces.

    ``(mean(base) - mean(condition)) / (mean(base) - mean(tuned))``: 0 = no effect, 1 = as
    much as fine-tuning. The arrays are per-prompt and paired (same prompt at the same index);
    with ``axis`` it takes batches of resamples (scipy's vectorized bootstrap).

    Example:
        >>> recovered(np.array([0.5, 0.7]), np.array([0.4, 0.6]), np.array([0.2, 0.4]))
        0.3333333333333333
    """
    base, condition, tuned = (np.mean(a, axis=axis) for a in (tox_base, tox_condition, tox_tuned))
    return ratio(base - condition, base - tuned)


def relative_reduction(tox_base: np.ndarray, tox_other: np.ndarray, axis: int = -1) -> ArrayOrFloat:
    """``1 - mean(other) / mean(base)``: the relative toxicity reduction.

    Example:
        >>> relative_reduction(np.array([0.4, 0.6]), np.array([0.2, 0.3]))
        0.5
    """
    base, other = np.mean(tox_base, axis=axis), np.mean(tox_other, axis=axis)
    return ratio(base - other, base)


def group_masks(cosines: np.ndarray, base_activation: np.ndarray, tuned_activation: np.ndarray) -> dict[str, np.ndarray]:
    """The eight groups of PAPER.md as boolean masks (numpy twin of ``neurons.classify_neurons``).

    Toxic-aligned = cos > 0, anti-toxic = cos < 0, positive = base activation >= 0, down/up =
    tuned activation below/above base; cos == 0 or no change is in no group. The vectorised
    form is what a bootstrap over blocks needs (thousands of reclassifications).

    Example:
        >>> m = group_masks(np.array([1.0, -1.0]), np.array([0.5, -0.5]), np.array([0.2, -0.1]))
        >>> [name for name in GROUP_NAMES if m[name].any()]
        ['TP_down', 'AN_up']
    """
    from mechtests.neurons import group_rule

    return group_rule(cosines, base_activation, tuned_activation)


@dataclasses.dataclass(frozen=True)
class BlockAttribution:
    """Per-neuron attribution inputs kept per block, for a bootstrap over NeuronStats blocks.

    Prompt ``i`` lands in block ``i % n_blocks`` in both models' statistics, so base and tuned
    blocks are paired; resampling block indices (with replacement) and recomputing means is a
    cluster bootstrap over prompts. All arrays are flattened over ``(layer, neuron)``.

    Attributes:
        base_sum, tuned_sum: ``[n_blocks, L*d_mlp]`` activation sums.
        base_count, tuned_count: ``[n_blocks]``.
        cosines: ``[L*d_mlp]`` cos(base value vector, probe).
        base_alignment, tuned_alignment: ``[L*d_mlp]`` ``w_i · p̂`` with each model's own W_out.
        n_layers: L (to reshape).
    """

    base_sum: np.ndarray
    tuned_sum: np.ndarray
    base_count: np.ndarray
    tuned_count: np.ndarray
    cosines: np.ndarray
    base_alignment: np.ndarray
    tuned_alignment: np.ndarray
    n_layers: int
    n_prompts: int | None = None  # prompts spread over the blocks (for sample sizes in prompts)

    @property
    def prompts_per_block(self) -> float:
        """How many prompts one resampled block stands for (1 when unknown): a claim's decisive n
        in blocks times this is the number of prompts a user would run (the blocks stay
        `config.N_BLOCKS`).

        Example:
            >>> hand = BlockAttribution(*(np.zeros((4, 2)),) * 2, np.ones(4), np.ones(4), *(np.zeros(2),) * 3, 1, 64)
            >>> hand.prompts_per_block
            16.0
        """
        return self.n_prompts / self.n_blocks if self.n_prompts else 1.0

    @classmethod
    def from_evaluator(cls, ev: Evaluator) -> BlockAttribution:
        """Collect the base and tuned passes' statistics (no intervention) from ``ev``."""

        def build() -> BlockAttribution:
            b, t = ev.generation("base"), ev.generation("tuned")
            n_blocks = b.activation_sum.shape[0]
            return cls(b.activation_sum.reshape(n_blocks, -1), t.activation_sum.reshape(n_blocks, -1),
                       b.count, t.count, ev.cosines().double().numpy().reshape(-1),
                       ev.value_alignment("base").reshape(-1), ev.value_alignment("tuned").reshape(-1),
                       int(b.activation_sum.shape[1]), len(ev.prompts))

        return ev.memo("block_attribution", build)

    @property
    def n_blocks(self) -> int:
        return int(self.base_sum.shape[0])

    def blocks(self) -> np.ndarray:
        """The sample to hand a bootstrap: block indices as float64 ``[n_blocks]``."""
        return np.arange(self.n_blocks, dtype=np.float64)

    def activations(self, blocks: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Mean base and tuned activations over the given blocks (with repeats), ``[L*d_mlp]`` each."""
        _, base, tuned = self._means(self._rows(self._all_blocks(blocks)))
        return base[0], tuned[0]

    def reduction(self, blocks: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(reduction, base_activation, tuned_activation)``; reduction = proj_base - proj_tuned."""
        base, tuned = self.activations(blocks)
        return base * self.base_alignment - tuned * self.tuned_alignment, base, tuned

    def group_sums(self, blocks: np.ndarray | None = None) -> dict[str, float]:
        """Sum of reduction per group (all eight), on the given blocks."""
        red, base, tuned = self.reduction(blocks)
        masks = group_masks(self.cosines, base, tuned)
        return {name: float(red[mask].sum()) for name, mask in masks.items()}

    def shares(self, blocks: np.ndarray | None = None) -> dict[str, float]:
        """Each of the four groups' share of the four groups' total reduction."""
        sums = self.group_sums(blocks)
        total = sum(sums[g] for g in GROUP_NAMES)
        return {g: (sums[g] / total if total else float("nan")) for g in GROUP_NAMES}

    # ---- bootstrap statistics ---------------------------------------------------------------
    # Each takes block indices (a resample) and accepts ``axis``, so scipy's bootstrap hands it
    # whole batches of resamples: one weights matrix per chunk of resamples times the block sums
    # gives every resample's mean activations at once (family-wise levels need ~10^4 resamples).
    #
    # Statistics that sort neurons by the sign of their own noisy change (the groups, gross
    # increase/decrease) are cross-fitted: the sign comes from one half of the blocks and the
    # reduction it sorts from the other, both ways. Sorting and measuring on the same prompts
    # put every neuron's noise on the side it was sorted to (TN↓'s share +0.67 SD at any n, the
    # gross ratio drifting with n); on independent halves a neuron sorted by noise contributes
    # its true, near-zero reduction.

    def _rows(self, blocks: np.ndarray) -> np.ndarray:
        b = np.asarray(blocks, dtype=np.float64)
        return b.reshape(-1, b.shape[-1]).astype(np.int64)

    def _step(self) -> int:
        return max(1, (1 << 22) // max(1, self.base_sum.shape[1]))  # ~32 MB of float64 per array

    def _means(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(reduction, base, tuned)``, each ``[r, L*d_mlp]``, for rows ``[r, m]`` of block indices."""
        r, nb = rows.shape[0], self.n_blocks
        # each row's multiplicity of every block, by one bincount over row-offset indices
        weights = np.bincount((rows + nb * np.arange(r)[:, None]).ravel(), minlength=r * nb)
        weights = weights.reshape(r, nb).astype(np.float64)
        base = weights @ self.base_sum
        base /= (weights @ self.base_count)[:, None]
        tuned = weights @ self.tuned_sum
        tuned /= (weights @ self.tuned_count)[:, None]
        return base * self.base_alignment - tuned * self.tuned_alignment, base, tuned

    def _batched(self, blocks: np.ndarray, fn: Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray]) -> Any:
        """``fn(reduction, base, tuned) -> [R]`` on each resample of ``blocks`` (``[n]`` or ``[..., n]``)."""
        rows = self._rows(blocks)
        out = np.empty(rows.shape[0], dtype=np.float64)
        step = self._step()
        for i in range(0, rows.shape[0], step):
            out[i:i + step] = fn(*self._means(rows[i:i + step]))
        return float(out[0]) if np.ndim(blocks) == 1 else out.reshape(np.shape(blocks)[:-1])

    def folds(self) -> tuple[np.ndarray, np.ndarray]:
        """The blocks' two halves (even and odd block indices) for the cross-fitted statistics;
        hand them to an unpaired bootstrap, which resamples each half within itself:
        ``claim(..., samples=attr.folds(), paired=False, statistic=attr.share(("TP_down",)))``."""
        blocks = self.blocks()
        return blocks[0::2], blocks[1::2]

    def _crossfit(self, first: np.ndarray, second: np.ndarray,
                  fn: Callable[[np.ndarray, np.ndarray, np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]) -> Any:
        """``ratio(sum of numerators, sum of denominators)`` of ``fn(base, tuned, reduction, measured)``
        with the sorting half's ``base, tuned, reduction`` and the other half's ``measured``
        reduction, both ways round, on each resample of the halves."""
        a, b = self._rows(first), self._rows(second)
        if a.shape[0] != b.shape[0]:
            raise ValueError(f"cross-fit halves have {a.shape[0]} and {b.shape[0]} resamples")
        out = np.empty(a.shape[0], dtype=np.float64)
        step = self._step()
        for i in range(0, a.shape[0], step):
            red_a, base_a, tuned_a = self._means(a[i:i + step])
            red_b, base_b, tuned_b = self._means(b[i:i + step])
            num_ab, den_ab = fn(base_a, tuned_a, red_a, red_b)
            num_ba, den_ba = fn(base_b, tuned_b, red_b, red_a)
            out[i:i + step] = ratio(num_ab + num_ba, den_ab + den_ba)
        return float(out[0]) if np.ndim(first) == 1 else out.reshape(np.shape(first)[:-1])

    def _halves(self, first: np.ndarray | None, second: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
        if first is None or second is None:
            return self.folds()
        return np.asarray(first), np.asarray(second)

    def _all_blocks(self, blocks: np.ndarray | None) -> np.ndarray:
        return self.blocks() if blocks is None else np.asarray(blocks)

    def share(self, groups: tuple[str, ...]) -> Statistic:
        """A cross-fitted bootstrap statistic of the two halves (`folds`): the combined share of
        ``groups`` in the four groups' reduction, neurons sorted into groups on one half and
        their reduction summed on the other. A claim on it passes ``plug_in=plug_in_share(groups)``:
        neurons whose group is a coin flip on half the prompts leave a bias cross-fitting does not
        remove, and the interval allows for the bootstrap's estimate of it.

        Example:
            >>> round(attr.share(("TP_down",))(*attr.folds()), 3)  # the tiny example pair
            0.235
        """
        from mechtests.neurons import group_rule

        def fn(base: np.ndarray, tuned: np.ndarray, red: np.ndarray, measured: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
            masks = group_rule(self.cosines, base, tuned)  # the one definition of the groups
            sums = {g: np.einsum("rn,rn->r", masks[g], measured) for g in GROUP_NAMES}
            return sum(sums[g] for g in groups), sum(sums[g] for g in GROUP_NAMES)

        @cross_fitted
        def statistic(first: np.ndarray | None = None, second: np.ndarray | None = None,
                      axis: int = -1) -> ArrayOrFloat:
            return self._crossfit(*self._halves(first, second), fn)

        return statistic

    def plug_in_share(self, groups: tuple[str, ...]) -> float:
        """The combined share of ``groups`` with neurons sorted and summed on all blocks (the
        paper's computation): the estimand of the bootstrap's world, handed to a claim on
        `share` as ``plug_in=`` so its interval allows for the cross-fit's remaining bias
        (docs/STATISTICS.md).

        Example:
            >>> round(attr.plug_in_share(("TP_down",)), 3)  # the tiny example pair; cross-fitted: 0.235
            0.314
        """
        shares = self.shares()
        return float(sum(shares[g] for g in groups))

    def crossfit_shares(self, first: np.ndarray | None = None, second: np.ndarray | None = None) -> dict[str, float]:
        """Each of the four groups' cross-fitted share (`share`) on the given halves (default: all)."""
        first, second = self._halves(first, second)
        return {g: float(self.share((g,))(first, second)) for g in GROUP_NAMES}

    def fraction_toward_toxicity(self, blocks: np.ndarray | None = None, axis: int = -1) -> ArrayOrFloat:
        """Fraction of the neurons that moved (reduction != 0) whose reduction is negative, i.e.
        that moved toward toxicity (descriptive; the claim uses `toward_toxicity`). A neuron with
        exactly no change is no evidence either way: counting it as "toward toxicity" made two
        identical models confirm the claim. NaN when no neuron moved."""
        def fn(red: np.ndarray, base: np.ndarray, tuned: np.ndarray) -> np.ndarray:
            moved = (red != 0).sum(axis=-1)
            with np.errstate(invalid="ignore", divide="ignore"):
                return np.where(moved > 0, (red < 0).sum(axis=-1) / np.maximum(moved, 1), np.nan)

        return self._batched(self._all_blocks(blocks), fn)

    def gross_ratio(self, blocks: np.ndarray | None = None, axis: int = -1) -> ArrayOrFloat:
        """Gross increase / gross decrease of the probe projection over all neurons, on the same
        blocks (descriptive, the paper's definition; the claim uses `crossfit_gross_ratio`)."""
        def fn(red: np.ndarray, base: np.ndarray, tuned: np.ndarray) -> np.ndarray:
            decrease = np.where(red > 0, red, 0.0).sum(axis=-1)
            increase = -np.where(red < 0, red, 0.0).sum(axis=-1)
            with np.errstate(invalid="ignore", divide="ignore"):
                return np.where(decrease != 0, increase / np.where(decrease != 0, decrease, 1.0), np.nan)

        return self._batched(self._all_blocks(blocks), fn)

    @cross_fitted
    def crossfit_gross_ratio(self, first: np.ndarray | None = None, second: np.ndarray | None = None,
                             axis: int = -1) -> ArrayOrFloat:
        """Gross increase / gross decrease, cross-fitted: which neurons increase (reduction < 0)
        is decided on one half, how much on the other (both ways, summed). A claim on it passes
        ``plug_in=gross_ratio()`` (as `share`)."""
        def fn(base: np.ndarray, tuned: np.ndarray, red: np.ndarray, measured: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
            increase = -np.einsum("rn,rn->r", red < 0, measured)
            decrease = np.einsum("rn,rn->r", red > 0, measured)
            return increase, decrease

        return self._crossfit(*self._halves(first, second), fn)

    def upper_half_share(self, blocks: np.ndarray | None = None, axis: int = -1) -> ArrayOrFloat:
        """Share of the net reduction carried by the upper half of the layers (descriptive; the
        claim uses `layer_share_samples` with Fieller's interval)."""
        def fn(red: np.ndarray, base: np.ndarray, tuned: np.ndarray) -> np.ndarray:
            per_layer = red.reshape(red.shape[0], self.n_layers, -1).sum(axis=-1)
            net = per_layer.sum(axis=-1)
            upper = per_layer[:, self.n_layers // 2:].sum(axis=-1)
            with np.errstate(invalid="ignore", divide="ignore"):
                return np.where(net != 0, upper / np.where(net != 0, net, 1.0), np.nan)

        return self._batched(self._all_blocks(blocks), fn)

    # ---- per-block values ------------------------------------------------------------------
    # No sorting by the data: plain functions of each block's own means, for Fieller's ratio
    # interval and per-neuron tests.

    def block_means(self) -> tuple[np.ndarray, np.ndarray]:
        """Each block's own mean base and tuned activations, ``[n_blocks, L*d_mlp]`` each."""
        with np.errstate(invalid="ignore", divide="ignore"):
            return self.base_sum / self.base_count[:, None], self.tuned_sum / self.tuned_count[:, None]

    def _block_totals(self, per_block_means: np.ndarray) -> np.ndarray:
        """Block means times the block's size (its forward passes): summed over blocks they give
        the pooled means' numerators, so a statistic of these totals has the pooled (paper's)
        point value, while each block stays one independent unit."""
        return per_block_means * ((self.base_count + self.tuned_count) / 2.0)[:, None]

    def block_reductions(self) -> np.ndarray:
        """Each block's per-neuron reduction times its size, ``[n_blocks, L*d_mlp]`` (`_block_totals`)."""
        base, tuned = self.block_means()
        return self._block_totals(base * self.base_alignment - tuned * self.tuned_alignment)

    def layer_share_samples(self) -> tuple[np.ndarray, np.ndarray]:
        """Per block: (the upper half of the layers' net reduction, all layers' net reduction),
        for ``claim(..., samples=..., ratio=True)`` (Fieller): the upper half's share of the
        net reduction is a ratio whose denominator (the net, a small difference of large gross
        sums) can be near zero, where a bootstrap of the ratio under-covers."""
        per_layer = self.block_reductions().reshape(self.n_blocks, self.n_layers, -1).sum(axis=-1)
        return per_layer[:, self.n_layers // 2:].sum(axis=-1), per_layer.sum(axis=-1)

    def toward_toxicity(self) -> Estimator:
        """An estimator (``claim(..., estimator=...)``) of the fraction of the neurons that moved
        whose true reduction is negative (toward toxicity): `stats.sign_fraction_estimate` on
        the per-block reductions (a count of signs is a step function: no bootstrap holds it)."""
        from mechtests.stats import sign_fraction_estimate

        values = self.block_reductions()

        def estimator(confidence: float, threshold: Threshold, direction: Direction) -> Estimate:
            return sign_fraction_estimate(values, confidence=confidence, threshold=threshold, direction=direction)

        return estimator

    def fraction_dampened(self, mask: np.ndarray) -> Estimator:
        """An estimator (``claim(..., estimator=...)``) of the fraction of the neurons in ``mask``
        whose true mean activation is lower in the tuned model: `stats.sign_fraction_estimate`
        on the per-block activation changes (tuned - base, `_block_totals`)."""
        from mechtests.stats import sign_fraction_estimate

        flat = np.asarray(mask, dtype=bool).reshape(-1)
        base, tuned = self.block_means()
        values = self._block_totals(tuned[:, flat] - base[:, flat])

        def estimator(confidence: float, threshold: Threshold, direction: Direction) -> Estimate:
            return sign_fraction_estimate(values, confidence=confidence, threshold=threshold, direction=direction)

        return estimator
