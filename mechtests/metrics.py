"""Capability and toxicity metrics of the papers' evaluation protocol (PAPER.md), per sample.

- toxicity: score of each greedy continuation with the prompt removed (the scorer's max over
  attributes), one value per prompt;
- perplexity: next-token NLL over non-overlapping windows of a held-out text, one
  ``(nll_sum, n_tokens)`` per window; the intervention is active over the whole forward pass,
  so it acts at every position of every window (not only position 0, the original code's bug);
- F1: bag-of-tokens F1 of a ``new_tokens`` greedy continuation of the first ``prompt_tokens``
  tokens of each item against what truly follows them (the sentence's next tokens, or the
  item's ``gold`` continuation).

Per-sample arrays are float64 numpy on the CPU so they feed the bootstrap directly.

Example:
    >>> round(bag_f1([1, 2, 3], [2, 3, 4, 5]), 6)  # precision 2/3, recall 2/4
    0.571429
"""

from __future__ import annotations

import contextlib
import math
from collections import Counter
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
import torch

from mechtests.data import F1Items, TextSet, start_tokens
from mechtests.errors import DataError, NumericalError, UsageError

if TYPE_CHECKING:
    from mechtests.interventions import Intervention
    from mechtests.models import LoadedModel
    from mechtests.scoring import ToxicityScorer


def toxicity_scores(continuations: Sequence[str], scorer: ToxicityScorer) -> np.ndarray:
    """Score each continuation (prompt already removed); float64 ``[N]`` in [0, 1].

    Example:
        >>> from mechtests.scoring import OfflineScorer
        >>> toxicity_scores(["", "have a nice day"], OfflineScorer()).shape
        (2,)
    """
    texts = list(continuations)
    scores = np.asarray(scorer.score(texts), dtype=np.float64)
    if scores.shape != (len(texts),):
        raise NumericalError(f"scorer {scorer.name!r} returned shape {scores.shape} for {len(texts)} texts")
    if np.any(~np.isfinite(scores)) or np.any((scores < 0) | (scores > 1)):
        raise NumericalError(f"scorer {scorer.name!r} returned scores outside [0, 1]")
    return scores


def _applied(intervention: Intervention | None, model: LoadedModel) -> contextlib.AbstractContextManager[object]:
    return contextlib.nullcontext() if intervention is None else intervention.applied(model)


def perplexity_windows(model: LoadedModel, text: str, *, window: int, intervention: Intervention | None = None,
                       batch_size: int = 8) -> tuple[np.ndarray, np.ndarray]:
    """Summed next-token NLL and predicted-token count per non-overlapping window of ``text``.

    The text is tokenized once and cut into consecutive windows of ``window`` tokens (the last
    one may be shorter; a last window of one token is dropped). Inside a window, token ``t`` is
    predicted from tokens ``< t`` of the same window, as in the papers' Wikitext-2 evaluation with
    stride = window. A tokenizer that adds start tokens (`mechtests.data.start_tokens`: Llama's
    BOS) gets them at the head of every window, within ``window``: its first text token is then
    predicted from them (GPT-2's adds none: the papers' windows exactly).

    Args:
        model: the model (``LoadedModel``).
        text: the held-out text.
        window: tokens per window (at most the model's context).
        intervention: an intervention (``.applied(model)``) active over every window and position.
        batch_size: windows per forward pass.

    Returns:
        ``(nll_sum [W], n_tokens [W])``, float64 numpy.

    Example:
        >>> nll, n = perplexity_windows(model, text, window=64)
        >>> nll.shape == n.shape, perplexity(nll, n) > 1.0
        (True, True)
    """
    return perplexity_windows_many(model, text, [intervention], window=window, batch_size=batch_size)[0]


def perplexity_windows_many(model: LoadedModel, text: str, interventions: Sequence[Intervention | None], *, window: int,
                            batch_size: int = 8) -> list[tuple[np.ndarray, np.ndarray]]:
    """`perplexity_windows` of several conditions of one model in one pass: each forward holds
    the same windows once per condition (row ``r`` carries ``interventions[r % C]``,
    `mechtests.interventions.row_batched`), ``batch_size`` rows per forward. Equal to running
    each alone (tested); one ``(nll_sum, n_tokens)`` per condition.

    Example:
        >>> (nll_b, n_b), (nll_z, n_z) = perplexity_windows_many(model, text, [None, zero], window=64)
        >>> bool((n_b == n_z).all()), bool((nll_b != nll_z).any())  # same windows, other losses
        (True, True)
    """
    from mechtests.interventions import row_batched

    if not isinstance(window, int) or window < 2:
        raise UsageError(f"perplexity window must be an int >= 2, got {window!r}")
    if window > model.n_ctx:
        raise UsageError(f"perplexity window {window} exceeds the model's context n_ctx={model.n_ctx}; "
                         f"use window <= {model.n_ctx}")
    if not interventions:
        raise UsageError("perplexity_windows_many needs at least one condition (None: no intervention)")
    ids = model.tokenizer(text, add_special_tokens=False)["input_ids"]
    if len(ids) < 2:
        raise DataError(f"perplexity text has {len(ids)} token(s); give a text of at least 2 tokens")
    # A tokenizer's start tokens (a BOS) open every window, as every input the model was trained
    # on: context, never scored; the window's first text token is then predicted from them.
    prefix = list(start_tokens(model.tokenizer))
    span = window - len(prefix)
    if span < 2:
        raise UsageError(f"perplexity window {window} leaves {span} text token(s) after {len(prefix)} start token(s)")
    windows = [prefix + ids[i : i + span] for i in range(0, len(ids), span)]
    windows = [w for w in windows if len(w) - len(prefix) >= 2]
    conditions = len(interventions)
    per_batch = max(1, batch_size // conditions)
    nll_sum = np.zeros((conditions, len(windows)), dtype=np.float64)
    n_tokens = np.zeros((conditions, len(windows)), dtype=np.float64)
    with contextlib.ExitStack() as stack, torch.inference_mode():
        layout = None
        if conditions == 1:
            stack.enter_context(_applied(interventions[0], model))
        else:
            layout = stack.enter_context(row_batched(model, interventions))
        for start in range(0, len(windows), per_batch):
            chunk = windows[start : start + per_batch]
            width = max(len(w) for w in chunk)
            x = torch.zeros((len(chunk), width), dtype=torch.long)
            mask = torch.zeros((len(chunk), width), dtype=torch.long)
            for i, w in enumerate(chunk):  # right padding: real tokens keep positions 0..len-1
                x[i, : len(w)] = torch.tensor(w)
                mask[i, : len(w)] = 1
            if layout is not None:
                x, mask = x.repeat_interleave(conditions, dim=0), mask.repeat_interleave(conditions, dim=0)
                layout.rows = x.shape[0]
            x, mask = x.to(model.device), mask.to(model.device)
            logits = model.forward(x, mask).logits[:, :-1].float()
            if not bool(torch.isfinite(logits).all()):
                raise NumericalError(f"{model.source}: non-finite logits in the perplexity pass")
            nll = torch.nn.functional.cross_entropy(logits.transpose(1, 2), x[:, 1:], reduction="none")
            real = mask[:, 1:].to(nll.dtype)
            real[:, : max(len(prefix) - 1, 0)] = 0  # a start token is context, never a prediction
            sums = (nll * real).sum(dim=1).double().cpu().view(len(chunk), conditions).T
            counts = real.sum(dim=1).double().cpu().view(len(chunk), conditions).T
            nll_sum[:, start : start + len(chunk)] = sums.numpy()
            n_tokens[:, start : start + len(chunk)] = counts.numpy()
    return [(nll_sum[c].copy(), n_tokens[c].copy()) for c in range(conditions)]


def perplexity(nll_sum: np.ndarray | Sequence[float], n_tokens: np.ndarray | Sequence[float]) -> float:
    """``exp(sum(nll_sum) / sum(n_tokens))``: token-weighted perplexity over windows.

    Example:
        >>> round(perplexity([math.log(2) * 3], [3]), 6)
        2.0
    """
    nll = np.asarray(nll_sum, dtype=np.float64)
    n = np.asarray(n_tokens, dtype=np.float64)
    if nll.shape != n.shape:
        raise UsageError(f"nll_sum has shape {nll.shape} but n_tokens has {n.shape}")
    total = float(n.sum())
    if total <= 0:
        raise NumericalError("perplexity over zero tokens is undefined; the text produced no windows")
    value = math.exp(float(nll.sum()) / total)
    if not math.isfinite(value):
        raise NumericalError(f"perplexity overflowed (mean NLL {float(nll.sum()) / total:.1f})")
    return value


def bag_f1(predicted: Sequence[int], true: Sequence[int]) -> float:
    """F1 of two bags (multisets) of tokens: overlap = sum of min counts.

    Example:
        >>> bag_f1([7, 7, 8], [7, 9])
        0.4
    """
    if not predicted or not true:
        return 0.0
    overlap = sum((Counter(predicted) & Counter(true)).values())
    if overlap == 0:
        return 0.0
    precision, recall = overlap / len(predicted), overlap / len(true)
    return 2 * precision * recall / (precision + recall)


def f1_scores(model: LoadedModel, sentences: TextSet | F1Items, *, prompt_tokens: int = 32, new_tokens: int = 20,
              intervention: Intervention | None = None, batch_size: int = 32) -> np.ndarray:
    """Bag-of-tokens F1 of each item's greedy continuation against its true continuation.

    The prompt is each item's first ``prompt_tokens`` tokens (as the papers' tokenizer call).
    The truth is what follows those tokens: for a whole sentence (a ``TextSet``, or ``F1Items``
    without gold) its next ``new_tokens`` tokens; for an item with a ``gold`` continuation (Lee et
    al.'s ``{"prompt", "gold"}``), the prompt's own tokens beyond ``prompt_tokens`` (if any) followed
    by the gold's, cut to ``new_tokens``. ``new_tokens`` tokens are generated greedily with
    ``mechtests.generation.generate`` (intervention active at every step), cut at the first EOS.

    Raises:
        DataError: an item with no true continuation (named by file and line where known).

    Example:
        >>> f1_scores(model, TextSet("f1", sentences), prompt_tokens=4, new_tokens=4).shape
        (2,)
    """
    return f1_scores_many(model, sentences, [intervention], prompt_tokens=prompt_tokens, new_tokens=new_tokens,
                          batch_size=batch_size)[0]


def f1_scores_many(model: LoadedModel, sentences: TextSet | F1Items, interventions: Sequence[Intervention | None], *,
                   prompt_tokens: int = 32, new_tokens: int = 20, batch_size: int = 32) -> list[np.ndarray]:
    """`f1_scores` of several conditions of one model in one generation pass
    (`mechtests.generation.generate_many`): one per-item array per condition, equal to each alone.

    Example:
        >>> f1_base, f1_ablated = f1_scores_many(model, TextSet("f1", sentences), [None, ZeroAblation(top)],
        ...                                      prompt_tokens=4, new_tokens=4)
        >>> f1_base.shape == f1_ablated.shape == (2,)
        True
    """
    from mechtests.generation import GenerationConfig, generate_many

    items = sentences if isinstance(sentences, F1Items) else F1Items.sentences(sentences)
    if len(items) == 0:
        raise UsageError(f"F1 set {items.name!r} is empty")
    tok = model.tokenizer
    encoded = tok(list(items.prompts), add_special_tokens=False)["input_ids"]
    gold_ids = tok([g or "" for g in items.golds], add_special_tokens=False)["input_ids"]
    truths: list[list[int]] = []
    for i, ids in enumerate(encoded):
        beyond = list(ids[prompt_tokens:])
        if items.golds[i] is None:
            if not beyond:
                raise DataError(f"F1 {items.origins[i]} of {items.name!r} is a sentence of {len(ids)} tokens, so "
                                f"nothing follows its first prompt_tokens={prompt_tokens} to compare with. Fix: use "
                                'sentences longer than the prompt, or give {"prompt": ..., "gold": TRUE_CONTINUATION} lines')
            truths.append(beyond[:new_tokens])
        else:
            truths.append((beyond + list(gold_ids[i]))[:new_tokens])
    config = GenerationConfig(max_new_tokens=new_tokens, max_prompt_tokens=prompt_tokens, batch_size=batch_size,
                              truncation="first")
    results = generate_many(model, TextSet(f"{items.name}:prompts", items.prompts), interventions, config=config)
    eos = tok.eos_token_id
    out = []
    for result in results:
        scores = np.zeros(len(items), dtype=np.float64)
        for i, row in enumerate(result.new_tokens.tolist()):
            if eos is not None and eos in row:
                row = row[: row.index(eos)]
            scores[i] = bag_f1(row, truths[i])
        out.append(scores)
    return out
