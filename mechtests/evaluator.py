"""Run each condition (role x intervention) once and share the result between claims.

A *condition* is one model of the pair (``"base"`` or ``"tuned"``) with an intervention active.
The :class:`Evaluator` runs a condition over the challenge prompts in **one** batched greedy
generation pass that yields both the continuations (scored for toxicity) and the streamed
per-neuron statistics (for attribution), and caches the result twice: in memory for this
session and, through :class:`mechtests.storage.Cache`, on disk across sessions. Cache keys are
content identities (model weight fingerprint, ``intervention.key()``, prompt-set sha256, the
generation protocol, the scorer identity), so twenty claims that need the base model's toxicity
share one computation, and a changed checkpoint never reuses a stale result.

Example:
    >>> ev = Evaluator(pair, probe=probe, scorer=scorer, data=eval_data, config=cfg, cache=cache)
    >>> tox_base = ev.toxicity("base")                         # np.ndarray[N], one per prompt
    >>> tox_abl = ev.toxicity("base", ZeroAblation(neurons))   # one more generation pass
    >>> stats = ev.neuron_stats("base")                        # served by the first pass
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import time
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Literal, TypeVar

import numpy as np
import torch

from mechtests.conditions import ConditionLog, table_rows
from mechtests.config import RunConfig
from mechtests.effects import (  # noqa: F401 (claim statistics, re-exported where they used to live)
    GROUP_NAMES,
    MIRROR_NAMES,
    BlockAttribution,
    group_masks,
    ratio,
    recovered,
    relative_reduction,
)
from mechtests.errors import UsageError
from mechtests.scoring import scorer_identity
from mechtests.thresholds import Direction, Threshold

if TYPE_CHECKING:
    from mechtests.data import F1Items, TextSet
    from mechtests.eval_data import EvalData
    from mechtests.generation import GenerationConfig, NeuronStats
    from mechtests.interventions import Intervention
    from mechtests.models import LoadedModel, ModelPair
    from mechtests.probes import Probe
    from mechtests.scoring import ToxicityScorer
    from mechtests.stats import Estimate, Estimator
    from mechtests.storage import Cache

log = logging.getLogger(__name__)

Role = Literal["base", "tuned"]
T = TypeVar("T")
ROLES: tuple[Role, ...] = ("base", "tuned")

# Bump when the meaning of a cached value changes (generation protocol, stored fields), so old
# cache entries are never read back as if they were computed the new way.
PROTOCOL_VERSION = "evaluator/1"
# Conditions computed together keep one float64 statistics accumulator each ([n_blocks, L, d_mlp]);
# at most this many bytes of them at once (GPT-2 medium at 64 blocks: 50 MB per condition).
TOGETHER_BYTES = 1 << 30
# The papers' perplexity windows: non-overlapping 1,024 tokens (shorter contexts use theirs).
PAPER_PERPLEXITY_WINDOW = 1024


@dataclasses.dataclass(frozen=True)
class PerplexityWindows:
    """Per-window negative log-likelihood sums of one condition over the perplexity text.

    Kept per window (not only the final perplexity) so a claim can bootstrap over windows.

    Example:
        >>> w = PerplexityWindows(np.array([10.0, 12.0]), np.array([5, 5]))
        >>> round(w.value, 4) == round(float(np.exp(22.0 / 10)), 4)
        True
    """

    nll_sum: np.ndarray
    n_tokens: np.ndarray

    @property
    def value(self) -> float:
        """Perplexity over all windows together: exp(total NLL / total tokens)."""
        return float(np.exp(self.nll_sum.sum() / self.n_tokens.sum()))

    def increase_over(self, base: PerplexityWindows) -> Estimator:
        """An estimator (``claim(..., estimator=...)``) of ``ppl_self / ppl_base - 1`` on the same
        windows: ``exp(sum(nll_self - nll_base) / sum(tokens)) - 1``, Fieller's interval of the
        per-token log ratio (paired windows) mapped through ``exp(x) - 1``. A bootstrap of the
        ratio over 16 windows covered 91.7% (docs/STATISTICS.md); this is a t interval in effect
        (the token counts barely vary), exact in the log scale's normal limit.

        Example:
            >>> b = PerplexityWindows(np.array([10.0, 12, 11]), np.array([5, 5, 5]))
            >>> t = PerplexityWindows(np.array([10.5, 12.4, 11.6]), np.array([5, 5, 5]))
            >>> e = t.increase_over(b)(0.95, 0.5, "<")
            >>> round(e.value, 4), e.ci_low < e.value < e.ci_high < 0.5
            (0.1052, True)
        """
        from mechtests.stats import ratio_estimate, transformed

        if not np.array_equal(self.n_tokens, base.n_tokens):
            raise UsageError("a perplexity increase needs both models' losses on the same windows (same token counts "
                             "per window). Fix: score both models on the same text with the same tokenizer.")

        def log_scale(t: float) -> float:
            if not t > -1.0:
                raise UsageError(f"a perplexity ratio minus 1 is always > -1: threshold {t} cannot be crossed.")
            return math.log1p(t)

        def estimator(confidence: float, threshold: Threshold, direction: Direction) -> Estimate:
            t: Threshold = ((log_scale(threshold[0]), log_scale(threshold[1])) if isinstance(threshold, tuple)
                            else log_scale(threshold))
            est = ratio_estimate(self.nll_sum - base.nll_sum, base.n_tokens.astype(np.float64), confidence=confidence,
                                 threshold=t, direction=direction)
            return transformed(est, math.expm1)

        return estimator


@dataclasses.dataclass(frozen=True)
class StoredGeneration:
    """What a generation pass leaves behind, in plain arrays (cacheable, device-independent).

    Attributes:
        continuations: the generated text per prompt, prompt removed.
        activation_sum: ``[n_blocks, L, d_mlp]`` float64 sums of last-position activations.
        count: ``[n_blocks]`` number of (prompt, step) forward passes summed into each block.
    """

    continuations: tuple[str, ...]
    activation_sum: np.ndarray
    count: np.ndarray

    def mean_activation(self) -> np.ndarray:
        """``[L, d_mlp]`` mean activation over all prompts and generation steps."""
        return self.activation_sum.sum(axis=0) / self.count.sum()


class Evaluator:
    """Runs and caches the conditions claims are built from (see module docstring).

    Args:
        pair: the :class:`mechtests.models.ModelPair`.
        probe: the toxicity probe (:class:`mechtests.probes.Probe`).
        scorer: a ``ToxicityScorer`` (``.name``, ``.score(texts)``).
        data: the ``EvalData`` (challenge prompts, probe data, perplexity text, F1 sentences).
        config: the run's `mechtests.config.RunConfig` (sizes: ``None`` = all; generation protocol,
            batch size, confidence); build one with ``config.run_config(profile, **overrides)``.
        cache: a ``mechtests.storage.Cache`` or ``None`` (memory only).
    """

    def __init__(self, pair: ModelPair, *, probe: Probe, scorer: ToxicityScorer, data: EvalData, config: RunConfig,
                 cache: Cache | None = None) -> None:
        if not isinstance(config, RunConfig):
            raise UsageError(f"Evaluator(config=...) takes a mechtests.config.RunConfig, got {type(config).__name__}. "
                             "Fix: config=mechtests.run_config('smoke', n_prompts=..., ...)")
        self.pair = pair
        self.probe = probe
        self.scorer = scorer
        self.data = data
        self.config = config
        self.cache = cache
        self._memory: dict[str, Any] = {}
        # Every condition whose metrics this evaluator served, for the interventions table.
        self.conditions = ConditionLog()
        # rows per forward pass each kind of pass used ("auto" resolved), for the report
        self.rows_used: dict[str, int] = {}
        # Called as ``labeller(evaluator)`` before the table is built: names the conditions it
        # knows (the reference suite labels the papers' 13 and gives the paper's values).
        self.labellers: list[Callable[[Evaluator], None]] = []
        # Called as progress(label, done, total, unit, elapsed_s, final) while a condition is
        # computed (never for cache hits); the plugin prints it, and every call is also logged.
        self.progress: Callable[[str, int, int, str, float, bool], None] | None = None

    def _report(self, label: str, done: int, total: int, unit: str, started: float, final: bool) -> None:
        elapsed = time.perf_counter() - started
        rate = f", {done / elapsed:.1f} {unit}/s" if elapsed > 0 and done else ""
        (log.info if final else log.debug)("%s: %d/%d %s in %.1f s%s", label, done, total, unit, elapsed, rate)
        if self.progress is not None:
            self.progress(label, done, total, unit, elapsed, final)

    def _timed(self, label: str, total: int, unit: str, compute: Callable[[], T]) -> Callable[[], T]:
        """``compute`` wrapped so that running it (a cache miss) reports its start and end."""

        def run() -> T:
            started = time.perf_counter()
            self._report(label, 0, total, unit, started, False)
            value = compute()
            self._report(label, total, total, unit, started, True)
            return value

        return run

    # Each data role is read on first use, so a claim never needs a file it does not use.
    @property
    def prompts(self) -> TextSet:
        """The challenge prompts this run uses (the first ``n_prompts`` of the set)."""

        def compute() -> TextSet:
            n_prompts = self.config.n_prompts
            challenge = self.data.challenge
            prompts = challenge.head(n_prompts) if n_prompts and n_prompts < len(challenge) else challenge
            if len(prompts) == 0:
                raise UsageError("the challenge prompt set is empty. Fix: pass --mt-prompts with at least one prompt.")
            self.pair.check_same_tokenization(prompts.texts, "challenge prompt")
            return prompts

        return self.memo("prompts", compute)

    @property
    def f1_sentences(self) -> TextSet | F1Items:
        """The F1 items this run uses (the first ``n_f1``)."""

        def compute() -> TextSet | F1Items:
            n_f1 = self.config.n_f1
            f1 = self.data.f1_sentences
            items = f1.head(n_f1) if n_f1 and n_f1 < len(f1) else f1
            golds = [g for g in getattr(items, "golds", ()) if g]  # Lee et al.'s true continuations
            self.pair.check_same_tokenization([*items.texts, *golds], "F1 text")
            return items

        return self.memo("f1_sentences", compute)

    # ------------------------------------------------------------------ plumbing
    def model(self, role: Role) -> LoadedModel:
        """The :class:`LoadedModel` playing ``role``."""
        if role not in ROLES:
            raise UsageError(f"role must be 'base' or 'tuned', got {role!r}.")
        return self.pair.base if role == "base" else self.pair.tuned

    def generation_config(self) -> GenerationConfig:
        """The ``GenerationConfig`` every toxicity/attribution pass of this session uses."""
        from mechtests.generation import GenerationConfig

        new, prompt = self.config.max_new_tokens, self.config.max_prompt_tokens
        return GenerationConfig(
            max_new_tokens=new,
            max_prompt_tokens=prompt,
            batch_size=self.batch_rows("generation", new + prompt),
            # never more blocks than prompts: an empty block is a 0/0 in every block statistic
            n_blocks=max(1, min(self.config.n_blocks, len(self.prompts))),
            truncation=self.config.prompt_truncation,
        )

    def batch_rows(self, kind: str, tokens: int) -> int:
        """Rows per forward pass: for ``"auto"`` what the device's free memory holds
        (`mechtests.generation.auto_batch_rows`, decided once per kind and session); a number is
        rows of the generation protocol (prompt + new tokens), so a perplexity window of ``tokens``
        gets the same token budget (128 rows of 52 tokens: 6 windows of 1,024).

        Example:
            >>> from mechtests.config import run_config
            >>> fixed = Evaluator(pair, probe=probe, scorer=scorer, data=eval_data, config=run_config(batch_size=128))
            >>> fixed.batch_rows("perplexity", 1024)  # --mt-batch-size 128: 128 rows of 52 tokens
            6
        """
        setting = self.config.batch_size
        if setting != "auto":
            generation_tokens = self.config.max_new_tokens + self.config.max_prompt_tokens
            rows = int(setting) if kind == "generation" else max(1, int(setting) * generation_tokens // tokens)
        else:

            def compute() -> int:
                from mechtests.generation import auto_batch_rows

                return auto_batch_rows(self.model("base"), tokens, kind=kind)

            rows = int(self.memo(f"batch_rows:{kind}:{tokens}", compute))
        self.rows_used[kind] = rows  # what was assumed, for the report's inputs
        return rows

    def _generation_key(self, role: Role, iv: Intervention, gen_cfg: GenerationConfig, **extra: Any) -> dict[str, Any]:
        # The batch size never changes a result (a row does not depend on its batch-mates, tested),
        # so it stays out of the key: runs with any batch size share the cache.
        protocol = {k: v for k, v in dataclasses.asdict(gen_cfg).items() if k != "batch_size"}
        return self._key(role, iv, prompts=self.prompts.sha256, generation=protocol, **extra)

    def _perplexity_key(self, role: Role, iv: Intervention) -> dict[str, Any]:
        return self._key(role, iv, text=_sha256(self.perplexity_text), window=self.perplexity_window())

    def _f1_key(self, role: Role, iv: Intervention) -> dict[str, Any]:
        gen_cfg = self.generation_config()
        # f1/2: items may carry a gold continuation; the prompt is the item's first tokens (no decode).
        return self._key(role, iv, sentences=self.f1_sentences.sha256, f1_protocol=2,
                         prompt_tokens=gen_cfg.max_prompt_tokens, new_tokens=gen_cfg.max_new_tokens)

    def perplexity_window(self) -> int:
        """Window length: the papers' 1,024 tokens, or the model's context when shorter."""
        return int(min(self.model("base").n_ctx, PAPER_PERPLEXITY_WINDOW))

    @property
    def perplexity_text(self) -> str:
        """The perplexity text, cut to ``n_perplexity_windows`` windows when the profile says so.

        Cut in tokens (base tokenizer) and decoded back, so the windows are whole; both models
        tokenize it alike (`ModelPair.check_same_tokenization`), so both see the same windows.
        """

        def compute() -> str:
            n = self.config.n_perplexity_windows
            text = self.data.perplexity_text
            self.pair.check_same_tokenization([text], "perplexity text")
            if not n:
                return text
            tokenizer = self.model("base").tokenizer
            ids = tokenizer(text, add_special_tokens=False)["input_ids"]
            keep = int(n) * self.perplexity_window()
            return text if len(ids) <= keep else tokenizer.decode(ids[:keep])

        return self.memo("perplexity_text", compute)

    @staticmethod
    def _intervention(intervention: Intervention | None) -> Intervention:
        if intervention is None:
            from mechtests.interventions import NoIntervention

            return NoIntervention()
        return intervention

    def _key(self, role: Role, intervention: Intervention, **extra: Any) -> dict[str, Any]:
        model = self.model(role)
        # The backends agree to float rounding, which can still flip a greedy token: keep apart.
        # The device too: CPU and CUDA kernels round differently, which can flip a greedy token.
        # The tokenizer too: the same weights behind another tokenizer (or a BOS) see other ids.
        return {"protocol": PROTOCOL_VERSION, "model": model.fingerprint,
                "tokenizer": getattr(model, "tokenizer_fingerprint", None), "dtype": str(getattr(model, "dtype", "")),
                "device": str(getattr(model, "device", "")),
                "backend": getattr(model, "backend", "bridge"), "intervention": intervention.key(), **extra}

    def _cached(self, kind: str, key: Mapping[str, Any], compute: Callable[[], Any]) -> Any:
        """Memory first, then the disk cache, then ``compute`` (stored in both)."""
        mem_key = kind + ":" + json.dumps(key, sort_keys=True, default=str)
        if mem_key not in self._memory:
            if self.cache is None:
                self._memory[mem_key] = compute()
            else:
                self._memory[mem_key] = self.cache.get_or_compute(kind, dict(key), compute)
        return self._memory[mem_key]

    # ------------------------------------------------------------------ conditions
    def generation(self, role: Role, intervention: Intervention | None = None) -> StoredGeneration:
        """Continuations and neuron statistics of one condition (one generation pass, cached)."""
        iv = self._intervention(intervention)
        gen_cfg = self.generation_config()
        key = self._generation_key(role, iv, gen_cfg)

        label = f"generation {role} {iv.key()}"

        def compute() -> dict[str, Any]:
            from mechtests.generation import generate

            started = time.perf_counter()
            total = len(self.prompts)
            self._report(label, 0, total, "prompts", started, False)
            with torch.inference_mode():
                result = generate(self.model(role), self.prompts, config=gen_cfg, intervention=iv,
                                  collect_stats=True,
                                  on_batch=lambda done: self._report(label, done, total, "prompts", started,
                                                                     done == total))
            stats = result.stats
            assert stats is not None  # collect_stats=True
            return {"continuations": list(result.continuations),
                    "activation_sum": stats.activation_sum.double().cpu().numpy(),
                    "count": stats.count.double().cpu().numpy()}

        raw = self._cached("generation", key, compute)
        return StoredGeneration(tuple(raw["continuations"]), np.asarray(raw["activation_sum"], dtype=np.float64),
                                np.asarray(raw["count"], dtype=np.float64))

    def neuron_stats(self, role: Role, intervention: Intervention | None = None) -> NeuronStats:
        """:class:`NeuronStats` of the condition, served by the same pass as :meth:`toxicity`."""
        from mechtests.generation import NeuronStats

        gen = self.generation(role, intervention)
        return NeuronStats(activation_sum=torch.from_numpy(gen.activation_sum),
                           count=torch.from_numpy(gen.count))

    def mean_activation(self, role: Role, intervention: Intervention | None = None) -> np.ndarray:
        """``[L, d_mlp]`` float64 mean last-position activation over prompts and steps."""
        return self.generation(role, intervention).mean_activation()

    def toxicity(self, role: Role, intervention: Intervention | None = None) -> np.ndarray:
        """Per-prompt toxicity of the continuations, float64 ``[N]`` in [0, 1]."""
        iv = self._intervention(intervention)
        gen_cfg = self.generation_config()
        key = self._generation_key(role, iv, gen_cfg, scorer=scorer_identity(self.scorer))

        def compute() -> np.ndarray:
            from mechtests.metrics import toxicity_scores

            continuations = self.generation(role, iv).continuations
            score = self._timed(f"scoring {role} {iv.key()} ({scorer_identity(self.scorer)})", len(continuations),
                                "texts", lambda: toxicity_scores(continuations, self.scorer))
            return np.asarray(score(), dtype=np.float64)

        values = np.asarray(self._cached("toxicity", key, compute), dtype=np.float64)
        self.conditions.record(role, iv, "toxicity", values)
        return values

    def perplexity(self, role: Role, intervention: Intervention | None = None) -> PerplexityWindows:
        """Per-window NLL over the perplexity text (non-overlapping windows of the model's context)."""
        iv = self._intervention(intervention)
        model = self.model(role)
        window = self.perplexity_window()
        key = self._perplexity_key(role, iv)

        def compute() -> dict[str, np.ndarray]:
            from mechtests.metrics import perplexity_windows

            with torch.inference_mode():
                nll, n = perplexity_windows(model, self.perplexity_text, window=window, intervention=iv,
                                            batch_size=self.batch_rows("perplexity", window))
            return {"nll_sum": _np(nll), "n_tokens": _np(n)}

        raw = self._cached("perplexity", key, self._timed(f"perplexity {role} {iv.key()}", 1, "text", compute))
        windows = PerplexityWindows(np.asarray(raw["nll_sum"], dtype=np.float64),
                                    np.asarray(raw["n_tokens"], dtype=np.float64))
        self.conditions.record(role, iv, "perplexity", (windows.nll_sum, windows.n_tokens))
        return windows

    def f1(self, role: Role, intervention: Intervention | None = None) -> np.ndarray:
        """Per-sentence bag-of-tokens F1 of 20-token greedy continuations, float64 ``[N]``."""
        iv = self._intervention(intervention)
        gen_cfg = self.generation_config()
        key = self._f1_key(role, iv)

        def compute() -> np.ndarray:
            from mechtests.metrics import f1_scores

            with torch.inference_mode():
                scores = f1_scores(self.model(role), self.f1_sentences, prompt_tokens=gen_cfg.max_prompt_tokens,
                                   new_tokens=gen_cfg.max_new_tokens, intervention=iv,
                                   batch_size=gen_cfg.batch_size)
            return _np(scores)

        compute_timed = self._timed(f"f1 {role} {iv.key()}", len(self.f1_sentences), "items", compute)
        values = np.asarray(self._cached("f1", key, compute_timed), dtype=np.float64)
        self.conditions.record(role, iv, "f1", values)
        return values

    def prefetch(self, conditions: Sequence[tuple[Role, Intervention | None]],
                 metrics: Sequence[str] = ("toxicity", "perplexity", "f1")) -> None:
        """Compute ``metrics`` of several conditions ahead of their use, the conditions of one model
        together: one generation pass (toxicity, neuron statistics), one perplexity pass and one
        F1 pass per model, each row of a batch carrying its own condition
        (`mechtests.generation.generate_many`). Conditions already cached are skipped; those that
        cannot share a batch (not `interventions.row_batchable`: a foreign intervention that did
        not declare it) run alone.
        Results are those of computing each condition alone (tested) and land in the same cache
        entries, so a later ``toxicity(role, iv)`` is a hit, in this run or the next. ``metrics``:
        any of ``toxicity`` (generation and scoring), ``generation`` (unscored: continuations and
        neuron statistics), ``perplexity``, ``f1``.

        Example:
            >>> ev.prefetch([("base", None), ("base", ZeroAblation(top100)), ("tuned", None)])
        """
        from mechtests.interventions import row_batchable

        unknown = set(metrics) - {"generation", "toxicity", "perplexity", "f1"}
        if unknown:
            raise UsageError(f"prefetch: unknown metric(s) {sorted(unknown)}; use generation (continuations and "
                             "neuron statistics, unscored), toxicity, perplexity, f1")
        for role in ROLES:
            seen: dict[str, Intervention] = {}
            for r, intervention in conditions:
                iv = self._intervention(intervention)
                if r == role and row_batchable(iv):
                    seen.setdefault(iv.key(), iv)
            together = list(seen.values())
            if "toxicity" in metrics or "generation" in metrics:
                gen_cfg = self.generation_config()
                self._generate_together(role, [iv for iv in together
                                               if not self._present("generation", self._generation_key(role, iv, gen_cfg))])
            if "perplexity" in metrics:
                self._perplexity_together(role, [iv for iv in together
                                                 if not self._present("perplexity", self._perplexity_key(role, iv))])
            if "f1" in metrics:
                self._f1_together(role, [iv for iv in together if not self._present("f1", self._f1_key(role, iv))])
        for role, intervention in conditions:  # cache hits now, except conditions that run alone
            for metric in metrics:
                getattr(self, metric)(role, intervention)

    def _present(self, kind: str, key: Mapping[str, Any]) -> bool:
        mem_key = kind + ":" + json.dumps(key, sort_keys=True, default=str)
        return mem_key in self._memory or (self.cache is not None and self.cache.contains(kind, dict(key)))

    @staticmethod
    def _groups(ivs: list[Intervention], *, rows: int, per_condition_bytes: int = 0) -> list[list[Intervention]]:
        """``ivs`` in groups that run together (none for fewer than 2: one alone takes the plain
        path): no more conditions than ``rows`` per pass holds (a pass has at least one prompt or
        window per condition), and few enough that their statistics accumulators stay under
        `TOGETHER_BYTES`."""
        most = max(1, min(rows, TOGETHER_BYTES // per_condition_bytes if per_condition_bytes else len(ivs)))
        return [ivs[i : i + most] for i in range(0, len(ivs), most)] if len(ivs) > 1 else []

    def _generate_together(self, role: Role, ivs: list[Intervention]) -> None:
        from mechtests.generation import generate_many

        gen_cfg = self.generation_config()
        model = self.model(role)
        stats_bytes = 8 * gen_cfg.n_blocks * model.n_layers * model.d_mlp
        total = len(self.prompts)
        for group in self._groups(ivs, rows=gen_cfg.batch_size, per_condition_bytes=stats_bytes):
            label = f"generation {role} x{len(group)} conditions together"
            started = time.perf_counter()
            self._report(label, 0, total, "prompts", started, False)

            def progress(done: int, label: str = label, started: float = started) -> None:
                self._report(label, done, total, "prompts", started, done == total)

            with torch.inference_mode():
                results = generate_many(model, self.prompts, group, config=gen_cfg, collect_stats=True,
                                        on_batch=progress)
            for iv, result in zip(group, results, strict=True):
                stats = result.stats
                assert stats is not None  # collect_stats=True
                raw = {"continuations": list(result.continuations),
                       "activation_sum": stats.activation_sum.double().cpu().numpy(),
                       "count": stats.count.double().cpu().numpy()}
                self._cached("generation", self._generation_key(role, iv, gen_cfg), _given(raw))

    def _perplexity_together(self, role: Role, ivs: list[Intervention]) -> None:
        from mechtests.metrics import perplexity_windows_many

        window = self.perplexity_window()
        rows = self.batch_rows("perplexity", window)
        for group in self._groups(ivs, rows=rows):

            def compute(group: list[Intervention] = group) -> list[tuple[np.ndarray, np.ndarray]]:
                with torch.inference_mode():
                    return perplexity_windows_many(self.model(role), self.perplexity_text, group, window=window,
                                                   batch_size=rows)

            results = self._timed(f"perplexity {role} x{len(group)} conditions together", 1, "text", compute)()
            for iv, (nll, n) in zip(group, results, strict=True):
                raw = {"nll_sum": _np(nll), "n_tokens": _np(n)}
                self._cached("perplexity", self._perplexity_key(role, iv), _given(raw))

    def _f1_together(self, role: Role, ivs: list[Intervention]) -> None:
        from mechtests.metrics import f1_scores_many

        gen_cfg = self.generation_config()
        for group in self._groups(ivs, rows=gen_cfg.batch_size):
            label = f"f1 {role} x{len(group)} conditions together"

            def compute(group: list[Intervention] = group) -> list[np.ndarray]:
                with torch.inference_mode():
                    return f1_scores_many(self.model(role), self.f1_sentences, group,
                                          prompt_tokens=gen_cfg.max_prompt_tokens,
                                          new_tokens=gen_cfg.max_new_tokens, batch_size=gen_cfg.batch_size)

            scores = self._timed(label, len(self.f1_sentences), "items", compute)()
            for iv, values in zip(group, scores, strict=True):
                self._cached("f1", self._f1_key(role, iv), _given(_np(values)))

    # ------------------------------------------------------------------ the interventions table
    def label_condition(self, role: Role, intervention: Intervention | None, label: str, *,
                        paper: Mapping[str, float] | None = None, order: float | None = None) -> None:
        """Name a condition in the interventions table, with the paper's values beside it
        (``paper``: any of ``toxicity``, ``perplexity``, ``f1``). Labelling computes nothing.

        Example:
            >>> ev.label_condition("base", ZeroAblation(top), "zero top-100", paper={"toxicity": 0.403})
        """
        self.conditions.label(role, self._intervention(intervention), label, paper=paper, order=order)

    def conditions_table(self, *, confidence: float | None = None) -> list[dict[str, Any]]:
        """The interventions table of the conditions this evaluator served (``conditions.table_rows``),
        after every labeller ran; cells carry ``confidence`` intervals (default: the run's)."""
        for labeller in self.labellers:
            labeller(self)
        level = float(confidence if confidence is not None else self.config.confidence)
        return table_rows(self.conditions, pair=str(getattr(self.pair, "name", "pair")), confidence=level)

    def probe_key(self) -> str:
        """Content identity of the probe (sha256 of weight, bias and hook name)."""

        def compute() -> str:
            w = self.probe.weight.detach().to("cpu", torch.float32).contiguous().numpy().tobytes()
            return _sha256(w.hex() + repr(float(self.probe.bias)) + str(self.probe.hook_name))

        return self.memo("probe_key", compute)

    def cached(self, kind: str, key: Mapping[str, Any], compute: Callable[[], Any]) -> Any:
        """Cache any pair-level result (memory + disk) under ``key`` plus both models' fingerprints,
        the probe and the protocol version, e.g. a probe accuracy or a completeness check.

        Example:
            >>> ev.cached("probe_accuracy", {"data": data.sha256}, lambda: compute())
            0.875
        """
        full = {"protocol": PROTOCOL_VERSION, "base": self.pair.base.fingerprint,
                "tuned": self.pair.tuned.fingerprint, "tokenizer": getattr(self.pair.base, "tokenizer_fingerprint", None),
                "probe": self.probe_key(), **dict(key)}
        return self._cached(kind, full, compute)

    # ------------------------------------------------------------------ derived, memory only
    def memo(self, name: str, compute: Callable[[], T]) -> T:
        """Memoise a cheap derived quantity (cosines, selections) for this session."""
        key = "memo:" + name
        if key not in self._memory:
            self._memory[key] = compute()
        return self._memory[key]

    def cosines(self) -> torch.Tensor:
        """``[L, d_mlp]`` cosine of each base value vector with the probe (the papers' ranking)."""
        from mechtests.neurons import neuron_cosines

        return self.memo("cosines", lambda: neuron_cosines(self.model("base"), self.probe).detach().cpu())

    def value_alignment(self, role: Role) -> np.ndarray:
        """``[L, d_mlp]`` float64 ``w_i · p̂`` per neuron with ``role``'s own value vectors."""

        def compute() -> np.ndarray:
            model = self.model(role)
            w = model.all_value_vectors().detach().to("cpu", torch.float64)
            p = self.probe.direction.detach().to("cpu", torch.float64)
            return (w @ p).numpy()

        return self.memo(f"alignment:{role}", compute)


def _given(value: Any) -> Callable[[], Any]:
    """A ``compute`` for the cache that hands over a value computed already (with others)."""
    return lambda: value


def _np(x: Any) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        return x.detach().to("cpu", torch.float64).numpy()
    return np.asarray(x, dtype=np.float64)


def _sha256(text: str) -> str:
    import hashlib

    return hashlib.sha256(text.encode("utf-8")).hexdigest()
