"""What a run is built from, outside pytest: the same pair, data, probe, scorer and evaluator as the plugin.

The plugin's fixtures and `session` call the same builders (`load_model_pair`, `load_eval_data`,
`load_probe_for`, `make_run_scorer`), so a notebook gets the numbers ``pytest`` gets on the same
options, and a claim stated with `Session.claim` is evaluated exactly as the ``claim`` fixture
does for a session of one claim (its confidence, resamples, seed and threshold overrides).

Example:
    >>> import mechtests as mt
    >>> s = mt.session(profile="smoke")                      # the embedded default pair  # doctest: +SKIP
    >>> tox_base, tox_tuned = s.evaluator.toxicity("base"), s.evaluator.toxicity("tuned")  # doctest: +SKIP
    >>> s.claim("dpo_reduces_toxicity", metric="1 - tox_tuned/tox_base", direction=">", threshold=0.3,
    ...         samples=(tox_base, tox_tuned), statistic=mt.relative_reduction).verdict  # doctest: +SKIP
    'pass'
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mechtests.config import OPTIONS, PairSpec, RunConfig, Settings, Sources, read_tool_table, resolve_settings
from mechtests.errors import UsageError

if TYPE_CHECKING:
    from mechtests.claims import ClaimResult
    from mechtests.effects import BlockAttribution
    from mechtests.eval_data import EvalData
    from mechtests.evaluator import Evaluator
    from mechtests.models import ModelPair
    from mechtests.probes import Probe
    from mechtests.scoring import ToxicityScorer
    from mechtests.selections import NeuronSelections
    from mechtests.storage import Cache
    from mechtests.zoo import ZooPair

# what a builder read, for the report's ``pairs.NAME.inputs`` (section -> values)
Record = Callable[[str, Mapping[str, Any]], None]


def _ignore(section: str, values: Mapping[str, Any]) -> None:
    return None


def load_model_pair(settings: Settings, spec: PairSpec, *, zoo: ZooPair | None = None,
                    record: Record = _ignore) -> ModelPair:
    """Base and tuned model of ``spec`` with the run's device, dtype and backend (`models.load_pair`);
    ``zoo``: the embedded pair's files when ``spec`` is the default pair."""
    from mechtests.models import load_pair
    from mechtests.preflight import pair_sources

    run = settings.run
    base, tuned = pair_sources(spec, zoo)
    pair = load_pair(base, tuned, name=spec.name, device=run.device, dtype=run.torch_dtype(), backend=run.backend)
    for role, model in (("base", pair.base), ("tuned", pair.tuned)):
        record(role, {**(model.load_record.to_dict() if model.load_record else {}), "sha256": model.fingerprint,
                      "architecture": model.architecture,
                      # what every prompt, perplexity window and probe text starts with (a BOS; none for GPT-2)
                      "start_tokens": model.tokenizer.convert_ids_to_tokens(list(model.start_tokens)),
                      "tokenizer_sha256": model.tokenizer_fingerprint,
                      # neuron claims are undefined behind post-sublayer norms (premises.require_linear_neuron_writes)
                      "post_sublayer_norms": model.has_post_sublayer_norms})
    return pair


def load_eval_data(settings: Settings, spec: PairSpec) -> EvalData:
    """The pair's `EvalData`, each role read on first use (its option > the data directory > the
    embedded pair's), as `preflight.data_sources` resolves them."""
    from mechtests.eval_data import EvalData
    from mechtests.preflight import data_sources
    from mechtests.zoo import ZOO_DIR

    return EvalData(sources=data_sources(settings, spec, ZOO_DIR / "data"))


def load_probe_for(settings: Settings, spec: PairSpec, pair: ModelPair, data: EvalData, cache: Cache, *,
                   zoo: ZooPair | None = None, record: Record = _ignore) -> Probe:
    """The run's probe: the file `preflight.probe_file` names (--mt-probe, the pair's, the zoo's for
    the default pair without labelled data of its own), else one trained on the probe data with the
    base model (cached by base fingerprint, data and seed: any concept's labels). A file probe
    without a bias gets one fitted, and its sign is checked (`probes.prepare_probe`)."""
    from mechtests.preflight import probe_file
    from mechtests.probes import load_probe, prepare_probe, probe_scores, train_probe

    run = settings.run
    path = probe_file(settings, spec, zoo)
    base = pair.base
    if path is None:
        texts = data.probe_data  # only needed (and read) to train one
        key = {"protocol": "train_probe/1", "base": base.fingerprint, "tokenizer": base.tokenizer_fingerprint,
               "data": texts.sha256, "seed": run.seed}
        trained = cache.get_or_compute("probe", key, lambda: train_probe(base, texts, seed=run.seed).probe)
        record("probe", {"source": None, "trained": {"data": texts.name, "sha256": texts.sha256, "n": len(texts),
                                                     "seed": run.seed},
                         "hook_name": trained.hook(base), "pooling": trained.pooling, "bias": trained.bias})
        return trained
    bias = settings.probe_bias if isinstance(settings.probe_bias, float) else None
    loaded = load_probe(path, d_model=base.d_model, hook_name=settings.probe_hook, bias=bias)
    labelled = data.probe_data if data.available("probe") else None

    def scores(p: Any, texts: Any) -> Any:
        key = {"protocol": "probe_scores/1", "base": base.fingerprint, "tokenizer": base.tokenizer_fingerprint,
               "probe": loaded.metadata["sha256"],
               "hook": p.hook(base), "pooling": p.pooling, "data": texts.sha256}
        return cache.get_or_compute("probe_scores", key, lambda: probe_scores(base, p, texts))

    where = "--mt-probe" if settings.probe else f"probe of pair {spec.name!r}"
    ready, what = prepare_probe(base, loaded, labelled, seed=run.seed, where=f"{where} {path}", scores=scores)
    record("probe", what)
    return ready


def make_run_scorer(settings: Settings) -> ToxicityScorer:
    """The scorer named by --mt-scorer; Perspective behind a per-text score cache (under the cache
    dir) with one QPS budget for every process of the run (the key's hash names the budget)."""
    from mechtests.scoring import make_scorer

    run = settings.run
    if run.scorer != "perspective":
        path = settings.detoxify_path
        return make_scorer(run.scorer, path=path) if path is not None else make_scorer(run.scorer)
    import hashlib
    import tempfile

    from mechtests.scoring import PERSPECTIVE_KEY_ENV, PERSPECTIVE_URL, PerspectiveScorer, TextScoreCache

    options = dict(settings.perspective)
    budget = f"{options.get('url', PERSPECTIVE_URL)}\n{os.environ.get(PERSPECTIVE_KEY_ENV, '')}"
    tag = hashlib.sha256(budget.encode()).hexdigest()[:16]  # never the key itself
    client = PerspectiveScorer(**options, rate_file=Path(tempfile.gettempdir()) / f"mechtests-perspective-{tag}.rate")
    identity = hashlib.sha256(client.identity.encode()).hexdigest()[:16]
    path = settings.cache_dir / "scores" / f"perspective-{identity}.jsonl" if settings.cache_dir is not None else None
    return TextScoreCache(client, path)


@dataclasses.dataclass
class Session:
    """One pair's run outside pytest (see module docstring). ``inputs``: what was read, as the
    report's ``pairs.NAME.inputs``."""

    settings: Settings
    spec: PairSpec
    cache: Cache
    pair: ModelPair
    data: EvalData
    probe: Probe
    scorer: ToxicityScorer
    evaluator: Evaluator
    inputs: dict[str, dict[str, Any]]

    @property
    def run(self) -> RunConfig:
        """The run's settings (profile sizes, seed, confidence, resamples)."""
        return self.settings.run

    @property
    def selections(self) -> NeuronSelections:
        """The papers' neuron selections on this pair (the plugin's ``selections`` fixture)."""
        from mechtests.selections import NeuronSelections

        return NeuronSelections(self.evaluator)

    @property
    def attribution(self) -> BlockAttribution:
        """The block attribution of this pair (the plugin's ``attribution`` fixture)."""
        from mechtests.evaluator import BlockAttribution

        return BlockAttribution.from_evaluator(self.evaluator)

    def claim(self, name: str, **kwargs: Any) -> ClaimResult:
        """`claims.evaluate_claim` as the ``claim`` fixture calls it in a session of one claim: the
        run's confidence, resamples and seed, this pair's name and threshold overrides.

        Example:
            >>> s.claim("probe_subtraction_detoxifies", metric="m", direction=">", threshold=0.3,  # doctest: +SKIP
            ...         samples=(tox_base, tox_steered), statistic=mt.relative_reduction)
        """
        from mechtests.claims import evaluate_claim

        run = self.settings.run
        override = self.settings.threshold_for(name, self.spec.name)
        if override is not None:
            kwargs["threshold"] = override
        fixed: dict[str, Any] = {"confidence": run.confidence, "n_resamples": run.n_resamples, "seed": run.seed,
                                 "pair": self.spec.name}
        clash = sorted(set(fixed) & set(kwargs))
        if clash:
            raise UsageError(f"Session.claim: {', '.join(clash)} come(s) from the session's options. Fix: pass them to "
                             "mt.session(...) (confidence=, resamples=, seed=), as on the pytest command line.")
        return evaluate_claim(name, **kwargs, **fixed)


def session(*, base: str | os.PathLike[str] | None = None, tuned: str | os.PathLike[str] | None = None,
            pair: str | None = None, rootdir: str | os.PathLike[str] | None = None, **options: Any) -> Session:
    """Build what ``pytest`` builds for one pair, from the same options (keyword names as the
    ``--mt-*`` flags without the prefix: ``profile="ci"``, ``probe=...``, ``resamples=2000``,
    ``no_cache=True``) and the same ``[tool.mechtests]`` table of ``rootdir/pyproject.toml``
    (default: the working directory). Start-up checks and errors are the plugin's.

    Example:
        >>> s = session(base="runs/base", tuned="runs/dpo", profile="ci")  # doctest: +SKIP
        >>> s.evaluator.toxicity("tuned").mean()  # doctest: +SKIP
    """
    from mechtests.storage import Cache
    from mechtests.zoo import default_pair

    known = {o.key for o in OPTIONS}
    given = {"base": base, "tuned": tuned, "pair": pair, **options}
    unknown = sorted(set(given) - known)
    if unknown:
        raise UsageError(f"mt.session: unknown option(s) {', '.join(unknown)}. Fix: one of {', '.join(sorted(known))} "
                         "(the --mt-* flags without the prefix, '-' as '_').")
    cli = {k: (str(v) if isinstance(v, os.PathLike) else v) for k, v in given.items() if v is not None}
    root = Path(rootdir) if rootdir is not None else Path.cwd()
    tool = read_tool_table(root / "pyproject.toml")
    settings = resolve_settings(Sources(cli, root, {}, root, tool, root), rootdir=root)
    if len(settings.pairs) != 1:
        raise UsageError(f"mt.session builds one pair; the options name {len(settings.pairs)} "
                         f"({', '.join(p.name for p in settings.pairs)}). Fix: pair='NAME'.")
    spec = settings.pairs[0]
    zoo = default_pair() if spec.is_default else None
    inputs: dict[str, dict[str, Any]] = {}

    def record(section: str, values: Mapping[str, Any]) -> None:
        inputs[section] = {**inputs.get(section, {}), **dict(values)}

    cache = Cache(settings.cache_dir)
    model_pair = load_model_pair(settings, spec, zoo=zoo, record=record)
    data = load_eval_data(settings, spec)
    probe = load_probe_for(settings, spec, model_pair, data, cache, zoo=zoo, record=record)
    scorer = make_run_scorer(settings)
    from mechtests.evaluator import Evaluator

    ev = Evaluator(model_pair, probe=probe, scorer=scorer, data=data, config=settings.run, cache=cache)
    return Session(settings, spec, cache, model_pair, data, probe, scorer, ev, inputs)
