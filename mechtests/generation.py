"""Batched greedy generation with an intervention active and streamed per-neuron statistics.

Protocol (PAPER.md): prompts truncated to their first ``max_prompt_tokens`` tokens (the papers'
tokenizer call, ``truncation=True``; ``truncation="last"`` keeps the end instead), left padding
with the attention mask honoured and positions derived from it, greedy decoding for exactly
``max_new_tokens`` steps (no early stop at EOS, so every prompt contributes the same number of
steps), KV cache, prompt removed from the returned text.

Statistics: at each of the T forward passes (the prompt pass and T-1 cached steps) the neuron
activations at the last position are added into float64 accumulators ``[n_blocks, L, d_mlp]``;
prompt ``i`` goes to block ``i % n_blocks``. Memory does not grow with the number of prompts.

Example:
    >>> result = generate(model, prompts, config=GenerationConfig(max_new_tokens=20), collect_stats=True)
    >>> result.stats.mean_activation().shape  # [n_layers, d_mlp] of the tiny example model
    torch.Size([2, 64])
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

from mechtests.config import N_BLOCKS
from mechtests.data import TRUNCATIONS, TextSet, Truncation, left_padded_batch, start_tokens
from mechtests.errors import DataError, NumericalError, UsageError

if TYPE_CHECKING:

    from mechtests.interventions import Intervention
    from mechtests.models import LoadedModel


@dataclass(frozen=True)
class GenerationConfig:
    """Sizes of one generation pass.

    Attributes:
        max_new_tokens: greedy steps per prompt (all prompts get exactly this many).
        max_prompt_tokens: each prompt keeps this many tokens (its first ones, as the papers).
        batch_size: rows per forward pass (prompts; with several conditions in one pass,
            prompts x conditions: ``generate_many``).
        n_blocks: number of statistic blocks (prompt ``i`` -> block ``i % n_blocks``).
        truncation: ``"first"`` (papers) or ``"last"``: which end of a longer prompt is kept.
    """

    max_new_tokens: int = 20
    max_prompt_tokens: int = 32
    batch_size: int = 32
    n_blocks: int = N_BLOCKS
    truncation: Truncation = "first"

    def __post_init__(self) -> None:
        for field in ("max_new_tokens", "max_prompt_tokens", "batch_size", "n_blocks"):
            value = getattr(self, field)
            if not isinstance(value, int) or value < 1:
                raise UsageError(f"GenerationConfig.{field} must be a positive int, got {value!r}")
        if self.truncation not in TRUNCATIONS:
            raise UsageError(f"GenerationConfig.truncation must be 'first' or 'last', got {self.truncation!r}")


@dataclass(frozen=True, eq=False)
class NeuronStats:
    """Streamed sums of last-position neuron activations, in blocks of prompts.

    Attributes:
        activation_sum: ``[n_blocks, L, d_mlp]`` float64 (cpu) sums over (prompt, step).
        count: ``[n_blocks]`` float64 number of (prompt, step) terms in each block.
    """

    activation_sum: torch.Tensor
    count: torch.Tensor

    def mean_activation(self) -> torch.Tensor:
        """``[L, d_mlp]`` mean activation over every prompt and step."""
        total = self.count.sum()
        if float(total) == 0:
            raise NumericalError("NeuronStats has no observations; generate over at least one prompt")
        return self.activation_sum.sum(dim=0) / total

    def block_means(self) -> torch.Tensor:
        """``[n_blocks, L, d_mlp]`` per-block means (blocks with no prompts are NaN)."""
        return self.activation_sum / self.count.view(-1, 1, 1)

    @property
    def n_blocks(self) -> int:
        return int(self.count.shape[0])


@dataclass(frozen=True, eq=False)
class GenerationResult:
    """Greedy continuations (prompt removed), their token ids ``[N, T]`` (cpu) and optional stats."""

    continuations: tuple[str, ...]
    new_tokens: torch.Tensor
    stats: NeuronStats | None


class _StatsCollector:
    """Hooks that add the last-position activations of every layer into the accumulators."""

    def __init__(self, model: LoadedModel, n_blocks: int) -> None:
        self.model = model
        self.sums = [torch.zeros(n_blocks, model.d_mlp, dtype=torch.float64, device=model.device)
                     for _ in range(model.n_layers)]
        self.count = torch.zeros(n_blocks, dtype=torch.float64, device=model.device)
        self.block_ids = torch.zeros(0, dtype=torch.long)

    def hook(self, layer: int) -> Callable[[torch.Tensor], None]:
        def add(activations: torch.Tensor) -> None:
            self.sums[layer].index_add_(0, self.block_ids, activations[:, -1, :].to(torch.float64))

        return add

    def step(self) -> None:
        self.count.index_add_(0, self.block_ids, torch.ones_like(self.block_ids, dtype=torch.float64))

    def result(self) -> NeuronStats:
        activation_sum = torch.stack(self.sums, dim=1).cpu()
        if not bool(torch.isfinite(activation_sum).all()):
            bad = (~torch.isfinite(activation_sum)).nonzero()[0].tolist()
            raise NumericalError(
                f"{self.model.source}: non-finite neuron activation (block {bad[0]}, layer {bad[1]}, neuron {bad[2]}); "
                "the weights or an intervention produce NaN/inf. Fix: check the checkpoint and intervention values"
            )
        return NeuronStats(activation_sum, self.count.cpu())


# Rows per forward pass when the batch size is "auto": at most these many, fewer when memory is
# short. CPU generation: the measured knee on the default pair (2 cores: 32 -> 128 rows is 1.4x the
# prompts per second, 256 no better). CPU perplexity: at most 1,024 tokens per pass (one window of
# 1,024, eight of 128: what the engine always used); more windows per pass were slower there (0.70x
# at 6 windows of 1,024 tokens on the GPT-2-medium shape, 0.86x at 20 of 128 on the default pair:
# the [rows, window, vocabulary] logits leave the caches; docs/PERFORMANCE.md). GPU: enough rows to
# fill an H100's matmuls at GPT-2-medium widths.
AUTO_ROWS_CAP = {"cpu": {"generation": 128, "perplexity": 8}, "cuda": {"generation": 1024, "perplexity": 64}}
AUTO_TOKENS_CAP = {"cpu": {"perplexity": 1024}}
# Share of the free memory a pass may take (the rest: the other model of the pair, the
# allocator's slack, the scorer).
AUTO_MEMORY_SHARE = {"cpu": 0.25, "cuda": 0.5}


def free_memory_bytes(device: torch.device | str) -> int | None:
    """Free memory of ``device`` in bytes: CUDA's ``mem_get_info``, else the host's MemAvailable
    (``/proc/meminfo``); None where it cannot be read."""
    device = torch.device(device)
    if device.type == "cuda":
        return int(torch.cuda.mem_get_info(device)[0])
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def row_bytes(model: LoadedModel, tokens: int, *, kind: str = "generation", prompt_tokens: int = 32) -> int:
    """Memory one row of a pass needs, estimated from the model's sizes: generation keeps a KV
    cache of ``tokens`` positions, the prompt pass's MLP and attention intermediates and the last
    position's logits; a perplexity window of ``tokens`` keeps its intermediates and all its logits
    (float32, plus the cross-entropy's copy).

    Example:
        >>> row_bytes(model, 52) > 0
        True
    """
    element = torch.tensor([], dtype=model.dtype).element_size()
    width = 3 * model.d_mlp + 8 * model.d_model  # activations alive at once in one block
    if kind == "perplexity":
        return tokens * width * element + 12 * tokens * model.d_vocab
    kv_cache = 2 * model.n_layers * model.d_model * tokens * element
    return kv_cache + prompt_tokens * width * element + 8 * model.d_vocab


def auto_batch_rows(model: LoadedModel, tokens: int, *, kind: str = "generation", prompt_tokens: int = 32) -> int:
    """Rows per forward pass for ``batch_size="auto"``: the share of the device's free memory
    (`AUTO_MEMORY_SHARE`) over `row_bytes`, at most `AUTO_ROWS_CAP` rows (and `AUTO_TOKENS_CAP`
    tokens), at least 1.

    Example:
        >>> auto_batch_rows(model, 52) <= AUTO_ROWS_CAP["cpu"]["generation"]
        True
    """
    device = torch.device(model.device)
    family = "cuda" if device.type == "cuda" else "cpu"
    cap = AUTO_ROWS_CAP[family][kind]
    tokens_cap = AUTO_TOKENS_CAP.get(family, {}).get(kind)
    if tokens_cap is not None:
        cap = max(1, min(cap, tokens_cap // max(1, tokens)))
    free = free_memory_bytes(device)
    if free is None:
        return cap
    fits = int(AUTO_MEMORY_SHARE[family] * free) // max(1, row_bytes(model, tokens, kind=kind,
                                                                    prompt_tokens=prompt_tokens))
    return max(1, min(cap, fits))


def check_fits_context(model: LoadedModel, config: GenerationConfig) -> None:
    """Raise :class:`UsageError` when start tokens + prompt + continuation cannot fit the model's context."""
    n_start = len(start_tokens(model.tokenizer))
    needed = n_start + config.max_prompt_tokens + config.max_new_tokens
    if needed > model.n_ctx:
        start = f"{n_start} start token(s) + " if n_start else ""
        raise UsageError(
            f"{model.source}: {start}max_prompt_tokens ({config.max_prompt_tokens}) + max_new_tokens "
            f"({config.max_new_tokens}) = {needed} exceeds the context length n_ctx={model.n_ctx}. "
            "Fix: lower max_prompt_tokens or max_new_tokens"
        )


def generate(model: LoadedModel, prompts: TextSet | Sequence[str], *, config: GenerationConfig | None = None,
             intervention: Intervention | None = None, collect_stats: bool = False,
             on_batch: Callable[[int], None] | None = None) -> GenerationResult:
    """Greedy continuations of ``prompts`` (in input order), with ``intervention`` active at every step.

    A prompt's continuation does not depend on its batch-mates: the mask hides padding and
    positions restart at 0 at each prompt's first real token. ``on_batch(done)`` is called after
    each batch with the number of prompts done so far (progress reporting).

    Raises:
        UsageError: no prompts, or prompt + continuation longer than the model's context.
        DataError: an empty prompt.
        NumericalError: NaN/inf logits or activations.

    Example:
        >>> out = generate(model, TextSet("p", ("Hello",)), config=GenerationConfig(max_new_tokens=5))
        >>> len(out.continuations), out.new_tokens.shape
        (1, torch.Size([1, 5]))
    """
    return generate_many(model, prompts, [intervention], config=config, collect_stats=collect_stats,
                         on_batch=on_batch)[0]


def generate_many(model: LoadedModel, prompts: TextSet | Sequence[str], interventions: Sequence[Intervention | None],
                  *, config: GenerationConfig | None = None, collect_stats: bool = False,
                  on_batch: Callable[[int], None] | None = None) -> list[GenerationResult]:
    """`generate` for several conditions of one model in one pass: each batch holds the same
    prompts once per condition (row ``r`` carries ``interventions[r % C]``, see
    `mechtests.interventions.row_batched`), ``config.batch_size`` rows per forward pass. Tokens
    and statistics are those of running each condition alone (tested); one result per condition.

    Example:
        >>> base, ablated = generate_many(model, prompts, [None, ZeroAblation(top)], collect_stats=True)
    """
    from mechtests.interventions import row_batched

    config = config or GenerationConfig()
    if not isinstance(prompts, TextSet):
        prompts = TextSet("prompts", tuple(prompts))
    if len(prompts) == 0:
        raise UsageError(f"prompt set {prompts.name!r} is empty; give at least one prompt")
    if not interventions:
        raise UsageError("generate_many needs at least one condition (None: no intervention)")
    check_fits_context(model, config)
    n, conditions, steps = len(prompts), len(interventions), config.max_new_tokens
    # Sorting by length puts similar prompts together (less padding); batch independence
    # makes this invisible in the results, which are scattered back to input order.
    lengths = [min(len(ids), config.max_prompt_tokens) for ids in
               model.tokenizer(list(prompts.texts), add_special_tokens=False)["input_ids"]]
    if 0 in lengths:
        empty = lengths.index(0)
        raise DataError(f"prompt {empty} of {prompts.name!r} ({prompts.texts[empty]!r}) has no tokens; "
                        "remove empty prompts")
    order = sorted(range(n), key=lambda i: lengths[i])
    per_batch = max(1, config.batch_size // conditions)  # prompts per batch: rows = prompts x conditions
    new_tokens = torch.zeros((n, conditions, steps), dtype=torch.long)
    # one accumulator block per (condition, block): condition c's blocks are c*n_blocks ...
    collector = _StatsCollector(model, config.n_blocks * conditions) if collect_stats else None
    with contextlib.ExitStack() as stack, torch.inference_mode():
        layout = None
        if conditions == 1:
            if interventions[0] is not None:  # alone: exactly the intervention's own hooks
                stack.enter_context(interventions[0].applied(model))
        else:
            layout = stack.enter_context(row_batched(model, interventions))
        if collector is not None:
            stack.enter_context(model.hooks([(model.neuron_hook(layer), collector.hook(layer))
                                             for layer in range(model.n_layers)]))
        for start in range(0, n, per_batch):
            index = order[start : start + per_batch]
            texts = [prompts.texts[i] for i in index]
            ids, mask = left_padded_batch(model.tokenizer, texts, max_tokens=config.max_prompt_tokens,
                                          device=model.device, keep=config.truncation)
            if conditions > 1:
                ids, mask = ids.repeat_interleave(conditions, dim=0), mask.repeat_interleave(conditions, dim=0)
                assert layout is not None
                layout.rows = ids.shape[0]
            if collector is not None:
                collector.block_ids = torch.tensor([c * config.n_blocks + i % config.n_blocks
                                                    for i in index for c in range(conditions)], device=model.device)
            tokens = _greedy(model, ids, mask, steps, collector)
            new_tokens[torch.tensor(index)] = tokens.cpu().view(len(index), conditions, steps)
            if on_batch is not None:
                on_batch(min(start + per_batch, n))
    stats = collector.result() if collector is not None else None
    results = []
    for c in range(conditions):
        rows = new_tokens[:, c].contiguous()
        texts_out = tuple(model.tokenizer.decode(row.tolist(), skip_special_tokens=True) for row in rows)
        part = None if stats is None else NeuronStats(
            stats.activation_sum[c * config.n_blocks : (c + 1) * config.n_blocks].contiguous(),
            stats.count[c * config.n_blocks : (c + 1) * config.n_blocks].contiguous())
        results.append(GenerationResult(texts_out, rows, part))
    return results


def _greedy(model: LoadedModel, ids: torch.Tensor, mask: torch.Tensor, steps: int,
            collector: _StatsCollector | None) -> torch.Tensor:
    """``steps`` greedy tokens for one left-padded batch, with a KV cache."""
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    out = model.forward(ids, mask, position_ids=positions, use_cache=True, last_only=True)
    chosen: list[torch.Tensor] = []
    # NaN (and +inf) logits propagate into each row's maximum, so checking the maxima finds them
    # without a second scan of [batch, vocab] logits; the flags are read once per batch, after
    # the loop, because reading them every step would force a device sync per token.
    finite_steps: list[torch.Tensor] = []
    for step in range(steps):
        best, token = out.logits[:, -1, :].max(dim=-1)
        finite_steps.append(torch.isfinite(best).all())
        if collector is not None:
            collector.step()
        chosen.append(token)
        if step == steps - 1:
            break
        mask = torch.cat([mask, torch.ones_like(mask[:, :1])], dim=1)
        positions = positions[:, -1:] + 1
        out = model.forward(token[:, None], mask, position_ids=positions, past=out.past, use_cache=True,
                            last_only=True)
    finite = torch.stack(finite_steps)
    if not bool(finite.all()):
        step = int((~finite).nonzero()[0])
        raise NumericalError(f"{model.source}: non-finite logits at generation step {step}; "
                             "the weights or an intervention produce NaN/inf")
    return torch.stack(chosen, dim=1)
