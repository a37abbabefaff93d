"""pytest plugin (``pytest11`` entry point ``mechtests``): options, fixtures, claims, reports.

Shape borrowed from pytest's own stepwise/junitxml plugins: options declared here, per-session
state in a dataclass under ``config.stash``, files written only by the controller (never by a
pytest-xdist worker). Heavy modules (torch, TransformerLens, scipy) are imported lazily inside
fixtures and hooks, so a plain ``pytest`` run that never touches a model stays fast.

Fixtures: ``mt_config`` (RunConfig), ``mt_cache`` (Cache), ``mt_pair`` (PairSpec; the
parametrized root: every test that needs a pair runs once per configured pair, id = pair name),
``model_pair``, ``eval_data``, ``probe``, ``scorer``, ``evaluator``, ``mt_figures`` and ``claim``.

Example (a test file):
    def test_dpo_reduces_toxicity(evaluator, claim):
        base, tuned = evaluator.toxicity("base"), evaluator.toxicity("tuned")
        claim("dpo_reduces_toxicity", metric="1 - tox_tuned/tox_base", direction=">",
              threshold=0.3, samples=(base, tuned), statistic=lambda b, t: 1 - t.mean() / b.mean())
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import pytest

from mechtests.config import (
    OPTIONS,
    PairSpec,
    RunConfig,
    Settings,
    Sources,
    read_tool_table,
    resolve_settings,
)
from mechtests.errors import MechtestsError
from mechtests.errors import UsageError as MtUsageError

if TYPE_CHECKING:
    import numpy as np

    from mechtests.checkpoints import ModelSource
    from mechtests.claims import ClaimResult, Reference
    from mechtests.effects import BlockAttribution
    from mechtests.eval_data import EvalData
    from mechtests.evaluator import Evaluator
    from mechtests.models import ModelPair
    from mechtests.probes import Probe
    from mechtests.report import Figure
    from mechtests.scoring import ToxicityScorer
    from mechtests.selections import NeuronSelections
    from mechtests.stats import Estimate, Estimator, Statistic
    from mechtests.storage import Cache
    from mechtests.thresholds import Direction, Threshold
    from mechtests.zoo import ZooPair

def pytest_addhooks(pluginmanager: pytest.PytestPluginManager) -> None:
    from mechtests import hookspecs

    pluginmanager.add_hookspecs(hookspecs)


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("mechtests", "mechtests: mechanistic claims about a base / fine-tuned model pair")
    for option in OPTIONS:
        dest = f"mt_{option.key}"
        if option.kind == "flag":
            group.addoption(option.flag, dest=dest, action="store_const", const=True, default=None, help=option.help)
        elif option.kind == "append":
            group.addoption(option.flag, dest=dest, action="append", default=None, metavar=option.metavar,
                            help=option.help)
        else:
            group.addoption(option.flag, dest=dest, default=None, metavar=option.metavar, help=option.help)
        parser.addini(dest, f"mechtests: default for {option.flag}", type="string", default="")


# ---- session state -----------------------------------------------------------------------------

@dataclasses.dataclass
class MechtestsState:
    """Per-session state (one per process; the xdist controller merges the workers')."""

    settings: Settings
    is_worker: bool
    baseline: dict[str, Any] | None = None
    baseline_index: dict[tuple[str, str], Any] = dataclasses.field(default_factory=dict)
    ignore_pair: bool = False  # match baseline claims without the pair's name (one pair each side)
    compare_notes: list[str] = dataclasses.field(default_factory=list)  # what differs from the baseline
    compare_refused: bool = False  # nothing matched, or differing inputs under --mt-compare-strict
    doc: dict[str, Any] | None = None  # the session's report document, once written
    incomplete: str | None = None  # why the run did not run to its end (interrupted, -x, ...)
    deselected: int = 0  # tests deselected on this process (-k, -m, --deselect)
    save_refused: bool = False
    tolerances: tuple[Any, ...] = ()
    cache: Cache | None = None
    records: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    pending: dict[str, list[dict[str, Any]]] = dataclasses.field(default_factory=dict)
    outcomes: dict[str, str] = dataclasses.field(default_factory=dict)
    durations: dict[str, float] = dataclasses.field(default_factory=dict)
    figures: list[Figure] = dataclasses.field(default_factory=list)
    figure_rows: dict[str, dict[str, Any]] = dataclasses.field(default_factory=dict)
    pairs: dict[str, dict[str, Any]] = dataclasses.field(default_factory=dict)
    eval_data: dict[str, Any] = dataclasses.field(default_factory=dict)  # pair name -> EvalData (read lazily)
    scorers: list[Any] = dataclasses.field(default_factory=list)  # remote scorers, for the run summary
    scorer_lines: list[str] = dataclasses.field(default_factory=list)  # their summaries from xdist workers
    cache_notes: list[str] = dataclasses.field(default_factory=list)  # the cache's notes from xdist workers
    evaluators: list[Evaluator] = dataclasses.field(default_factory=list)  # this process's, for the interventions table
    conditions: list[dict[str, Any]] = dataclasses.field(default_factory=list)  # its rows, workers' merged in
    show_conditions: bool = False  # print the interventions table without -v (a protocol run asked for it)
    written: list[str] = dataclasses.field(default_factory=list)
    zoo: ZooPair | None = None
    family_size: int = 0  # claims the collected tests will state at most (the multiplicity's m)
    started: float = dataclasses.field(default_factory=time.time)  # cache entries used since are kept

    def zoo_pair(self) -> ZooPair:
        if self.zoo is None:
            from mechtests.zoo import default_pair

            self.zoo = default_pair()
        return self.zoo


@dataclasses.dataclass
class _ItemClaims:
    records: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    sent: int = 0
    #: why claims of this test failed / were skipped; raised once, after the test body returns,
    #: so every claim of a test is evaluated and reported (pytest_runtest_call)
    failures: list[str] = dataclasses.field(default_factory=list)
    skips: list[str] = dataclasses.field(default_factory=list)


state_key = pytest.StashKey[MechtestsState]()
_HOOKS_NAME = "mechtests-session"
_item_claims_key = pytest.StashKey[_ItemClaims]()
_claim_budget_key = pytest.StashKey[int]()  # claims a test may state (1, or its mechtests_claims marker)
CLAIMS_MARKER = "mechtests_claims"
TABLE_MARKER = "mechtests_table"


def _sources(config: pytest.Config) -> Sources:
    cli = {o.key: getattr(config.option, f"mt_{o.key}", None) for o in OPTIONS}
    ini = {}
    for o in OPTIONS:
        value = config.getini(f"mt_{o.key}")
        ini[o.key] = value if value not in (None, "") else None
    inipath = config.inipath
    pyproject = inipath if inipath is not None and inipath.name == "pyproject.toml" else config.rootpath / "pyproject.toml"
    tool = read_tool_table(pyproject)
    return Sources(cli, Path(config.invocation_params.dir), ini,
                   inipath.parent if inipath is not None else config.rootpath, tool, pyproject.parent)


def _state(config: pytest.Config) -> MechtestsState:
    """Resolve and validate everything once; `UsageError` here is a clean start-up error."""
    st = config.stash.get(state_key, None)
    if st is not None:
        return st
    try:
        settings = resolve_settings(_sources(config), rootdir=config.rootpath)
        st = MechtestsState(settings=settings, is_worker=hasattr(config, "workerinput"))
        baseline_path = settings.gate or settings.compare
        if baseline_path is not None:
            from mechtests.storage import config_differences, index_claims, load_report

            st.baseline = load_report(baseline_path)
            # One pair against a baseline of (at most) one pair: match claims whatever the pairs are called.
            st.ignore_pair = len(settings.pairs) == 1 and len(st.baseline.get("pairs") or {}) <= 1
            st.baseline_index = index_claims(st.baseline, ignore_pair=st.ignore_pair)
            st.tolerances = settings.tolerances
            differences = config_differences(st.baseline.get("config") or {}, settings.run.to_dict())
            if differences and settings.compare_strict:
                raise MtUsageError(f"--mt-compare-strict: this run's settings differ from baseline {baseline_path}: "
                                   f"{'; '.join(differences)}. Fix: run with the baseline's settings, or drop "
                                   "--mt-compare-strict to compare anyway (with a warning).")
            st.compare_notes = [f"setting differs from the baseline: {d}" for d in differences]
    except MtUsageError as exc:
        raise pytest.UsageError(f"mechtests: {exc}") from None
    for spec in settings.pairs:
        st.pairs[spec.name] = {"base": {"source": spec.base.location if spec.base else "mechtests.zoo", "sha256": None},
                               "tuned": {"source": spec.tuned.location if spec.tuned else "mechtests.zoo",
                                         "sha256": None}}
    config.stash[state_key] = st
    return st


@pytest.hookimpl(tryfirst=True)
def pytest_cmdline_main(config: pytest.Config) -> None:
    # Validate before the session starts: a bad value ends the run with a usage error, never a
    # traceback mid-run (xdist workers run this hook too).
    if config.option.help or config.option.version:
        return
    _state(config)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "mechtests: a test that states claims through the `claim` fixture")
    config.addinivalue_line("markers", "mechtests_data(*roles): data roles the test reads (challenge, probe, "
                            "perplexity, f1); each must have a source, checked at start-up")
    config.addinivalue_line("markers", f"{TABLE_MARKER}: print the interventions table after the run "
                            "(as -v does)")
    config.addinivalue_line("markers", f"{CLAIMS_MARKER}(n): the test states up to n claims (default 1); the "
                            "session's family-wise decisions count them")
    if config.option.help or config.option.version:
        return
    st = _state(config)
    hooks = _WorkerHooks(config) if st.is_worker else _Collector(config)
    config.pluginmanager.register(hooks, _HOOKS_NAME)


@pytest.hookimpl(trylast=True)
def pytest_collection_finish(session: pytest.Session) -> None:
    """Count the claims the selected tests will state: the family of --mt-multiplicity.

    Every process that runs tests collects the same items (serial, and each xdist worker), so the
    family, and with it every decision, is the same under ``-n N`` as in a serial run.
    """
    st = session.config.stash.get(state_key, None)
    if st is None:
        return
    total = 0
    for item in session.items:
        if "claim" not in getattr(item, "fixturenames", ()):
            continue
        marker = item.get_closest_marker(CLAIMS_MARKER)
        budget = marker.args[0] if marker is not None and marker.args else 1
        if not isinstance(budget, int) or isinstance(budget, bool) or budget < 1:
            raise pytest.UsageError(f"mechtests: {item.nodeid}: @pytest.mark.{CLAIMS_MARKER}({budget!r}) needs a "
                                    "positive int, the number of claims the test states.")
        item.stash[_claim_budget_key] = budget
        total += budget
    st.family_size = total
    st.show_conditions = any(item.get_closest_marker(TABLE_MARKER) for item in session.items)


def pytest_unconfigure(config: pytest.Config) -> None:
    hooks = config.pluginmanager.get_plugin(_HOOKS_NAME)
    if hooks is not None:
        config.pluginmanager.unregister(hooks)


def pytest_report_header(config: pytest.Config) -> str | None:
    st = config.stash.get(state_key, None)
    if st is None:
        return None
    run = st.settings.run
    return (f"mechtests: profile {run.profile}, pairs {', '.join(p.name for p in st.settings.pairs)}, seed {run.seed}, "
            f"confidence {run.confidence}, resamples {run.n_resamples}, inconclusive -> {run.inconclusive}")


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Parametrize every test that (transitively) needs a pair over the configured pairs."""
    if "mt_pair" not in metafunc.fixturenames:
        return
    for mark in metafunc.definition.iter_markers("parametrize"):
        names = mark.args[0] if mark.args else mark.kwargs.get("argnames", "")
        if "mt_pair" in (names.split(",") if isinstance(names, str) else names):
            return  # the test chose its pairs itself
    pairs = _state(metafunc.config).settings.pairs
    names = [p.name for p in pairs]
    metafunc.parametrize("mt_pair", names, indirect=True, ids=names, scope="session")


# ---- fixtures ----------------------------------------------------------------------------------

@pytest.fixture(scope="session")
def mt_config(request: pytest.FixtureRequest) -> RunConfig:
    """The run's frozen `RunConfig` (profile sizes, seed, confidence, resamples, device, dtype)."""
    return _state(request.config).settings.run


@pytest.fixture(scope="session")
def mt_cache(request: pytest.FixtureRequest) -> Cache:
    """The session's content-addressed cache (memory only with --mt-no-cache)."""
    st = _state(request.config)
    if st.cache is None:
        from mechtests.storage import Cache

        st.cache = Cache(st.settings.cache_dir)
    return st.cache


@pytest.fixture(scope="session")
def mt_pair(request: pytest.FixtureRequest) -> PairSpec:
    """The configured pair this test runs on (parametrized by the plugin; id = pair name)."""
    name = getattr(request, "param", None)
    st = _state(request.config)
    if name is None:
        return st.settings.pairs[0]
    return st.settings.pair(name)


@pytest.fixture(scope="session")
def model_pair(mt_pair: PairSpec, mt_config: RunConfig, request: pytest.FixtureRequest) -> ModelPair:
    """Base and tuned model of the pair, loaded once per session with identical flags."""
    from mechtests.builders import load_model_pair

    st = _state(request.config)
    base, tuned = _pair_sources(st, mt_pair)
    pair = load_model_pair(st.settings, mt_pair, zoo=st.zoo_pair() if mt_pair.is_default else None,
                           record=lambda section, values: _record_inputs(st, mt_pair.name, section, values))
    info = st.pairs.setdefault(mt_pair.name, {})
    info.update({"base": {"source": base.location, "sha256": pair.base.fingerprint},
                 "tuned": {"source": tuned.location, "sha256": pair.tuned.fingerprint}})
    return pair


def _record_inputs(st: MechtestsState, pair: str, section: str, values: Mapping[str, Any]) -> None:
    """Merge what was read for ``pair`` into its report ``inputs`` (pre-flight + fixtures + workers)."""
    inputs = st.pairs.setdefault(pair, {}).setdefault("inputs", {})
    inputs[section] = {**(inputs.get(section) or {}), **dict(values)}


def _pair_sources(st: MechtestsState, spec: PairSpec) -> tuple[ModelSource, ModelSource]:
    from mechtests.preflight import pair_sources

    return pair_sources(spec, st.zoo_pair() if spec.is_default else None)


@pytest.fixture(scope="session")
def eval_data(mt_pair: PairSpec, request: pytest.FixtureRequest) -> EvalData:
    """The pair's evaluation data, each role read on first use: its own option (--mt-prompts,
    --mt-probe-data, --mt-perplexity-data, --mt-f1-data), else --mt-data's (or the pair's data
    directory's) file, else the embedded pair's when no data directory is given."""
    from mechtests.builders import load_eval_data

    st = _state(request.config)
    data = st.eval_data.get(mt_pair.name)  # pre-flight's, when it ran in this process
    if data is None:
        data = st.eval_data[mt_pair.name] = load_eval_data(st.settings, mt_pair)
    return data


@pytest.fixture(scope="session")
def probe(model_pair: ModelPair, mt_pair: PairSpec, mt_config: RunConfig, mt_cache: Cache,
          request: pytest.FixtureRequest) -> Probe:
    """The toxicity probe: --mt-probe, else the pair's, else the zoo's (default pair), else one
    trained on the probe data with the base model (cached by base fingerprint, data and seed).

    A probe file without a bias gets one fitted on the probe data (or --mt-probe-bias), every
    probe file's sign is checked on labelled data, and the report records what was read and done.
    """
    from mechtests.builders import load_probe_for

    st = _state(request.config)
    return load_probe_for(st.settings, mt_pair, model_pair, request.getfixturevalue("eval_data"), mt_cache,
                          zoo=st.zoo_pair() if mt_pair.is_default else None,
                          record=lambda section, values: _record_inputs(st, mt_pair.name, section, values))


@pytest.fixture(scope="session")
def scorer(mt_config: RunConfig, request: pytest.FixtureRequest) -> ToxicityScorer:
    """The toxicity scorer named by --mt-scorer (offline classifier by default); a remote one's
    requests and cache hits go to the run summary."""
    from mechtests.builders import make_run_scorer
    from mechtests.scoring import TextScoreCache

    made = make_run_scorer(_state(request.config).settings)
    if isinstance(made, TextScoreCache):
        _state(request.config).scorers.append(made)
    return made


@pytest.fixture(scope="session")
def evaluator(model_pair: ModelPair, probe: Probe, scorer: ToxicityScorer, eval_data: EvalData, mt_config: RunConfig,
              mt_cache: Cache, request: pytest.FixtureRequest) -> Evaluator:
    """One `Evaluator` per pair per session: every condition is computed once and shared."""
    from mechtests.evaluator import Evaluator

    ev = Evaluator(model_pair, probe=probe, scorer=scorer, data=eval_data, config=mt_config, cache=mt_cache)
    ev.progress = TerminalProgress(request.config)
    _state(request.config).evaluators.append(ev)
    request.config.hook.pytest_mechtests_evaluator(evaluator=ev, config=request.config)
    return ev


@pytest.fixture
def selections(evaluator: Evaluator) -> NeuronSelections:
    """The papers' neuron selections on this pair (`mechtests.selections.NeuronSelections`):
    top-k toxic by cosine, the positively activated filter, the eight groups, top-k reduced."""
    from mechtests.premises import require_linear_neuron_writes
    from mechtests.selections import NeuronSelections

    require_linear_neuron_writes(evaluator.pair)
    return NeuronSelections(evaluator)


@pytest.fixture
def attribution(evaluator: Evaluator) -> BlockAttribution:
    """Per-block base/tuned activation sums of this pair (`mechtests.evaluator.BlockAttribution`),
    for claims on the probe-projected reduction (shares, gross ratio, layer share, fractions)."""
    from mechtests.evaluator import BlockAttribution
    from mechtests.premises import require_linear_neuron_writes

    require_linear_neuron_writes(evaluator.pair)
    return BlockAttribution.from_evaluator(evaluator)


class TerminalProgress:
    """Each computed condition on pytest's terminal, without ``-s``: one line when it is done
    (count, time, rate), and on a terminal a line with done/total and ETA every ``every_s`` while
    a long one runs. Quiet under ``-q`` and on xdist workers (no terminal there); the evaluator
    logs every step under ``mechtests`` for ``--log-cli-level`` either way."""

    def __init__(self, config: pytest.Config, *, every_s: float = 30.0) -> None:
        reporter = config.pluginmanager.get_plugin("terminalreporter")
        self._reporter = reporter if config.get_verbosity() >= 0 and not hasattr(config, "workerinput") else None
        self._capture = config.pluginmanager.get_plugin("capturemanager")
        self._tty = bool(reporter is not None and reporter.isatty())
        self._every = every_s
        self._last: dict[str, float] = {}

    def __call__(self, label: str, done: int, total: int, unit: str, elapsed: float, final: bool) -> None:
        if self._reporter is None:
            return
        if final:
            rate = f", {done / elapsed:.1f} {unit}/s" if elapsed > 0 else ""
            self._write(f"mechtests: {label}: {done} {unit} in {elapsed:.1f} s{rate}")
            return
        if not self._tty or done == 0 or elapsed - self._last.get(label, 0.0) < self._every:
            return
        self._last[label] = elapsed
        eta = elapsed / done * (total - done)
        self._write(f"mechtests: {label}: {done}/{total} {unit} ({done / elapsed:.1f}/s, ETA {eta:.0f} s)")

    def _write(self, line: str) -> None:
        # Past pytest's output capture (as live logging does), so it shows while the test runs.
        assert self._reporter is not None
        if self._capture is None:
            self._reporter.write_line(line)
            return
        with self._capture.global_and_fixture_disabled():
            self._reporter.write_line(line)


class FigureSink:
    """Collects figures for the HTML report; works in xdist workers (merged on the controller).

    A figure drawn from one test's data goes in with :meth:`add` (the same title and drawing
    twice, e.g. from two workers, is kept once). A figure that gathers points from many tests
    goes in as rows with :meth:`add_rows`: the rows of every process are merged and the figure
    is drawn once, at the end, so a parallel run shows the same figure as a serial one.
    """

    def __init__(self, state: MechtestsState) -> None:
        self._state = state

    def add(self, title: str, svg: str, caption: str = "", *, data: Mapping[str, Any] | None = None) -> None:
        """Add one inline ``<svg>`` figure; ``data`` (JSON-ready) is what it was drawn from, kept in
        the JSON report so anyone can redraw it.

        Example:
            >>> mt_figures.add("shares", '<svg xmlns="http://www.w3.org/2000/svg"></svg>',
            ...                data={"labels": ["a"], "values": [0.5]})  # doctest: +SKIP
        """
        from mechtests.report import Figure, add_figure, check_svg

        try:
            svg = check_svg(svg)
            data = None if data is None else json.loads(json.dumps(dict(data), allow_nan=False))
        except (TypeError, ValueError) as exc:
            raise MtUsageError(f"figure {title!r}: {exc} (data must be a JSON-ready dict of finite numbers).") from None
        add_figure(self._state.figures, Figure(str(title), svg, str(caption), data=data))

    def add_rows(self, title: str, rows: list[dict[str, Any]], *, render: str, caption: str = "") -> None:
        """Add data rows to figure ``title``, drawn at the end by ``render`` (``"module:function"``,
        called with every process's rows in a fixed order, returning an ``<svg>``).

        Example:
            >>> mt_figures.add_rows("Recovered fraction vs k", [{"pair": "p", "family": "zero", "k": 4,
            ...     "estimate": 0.2, "ci_low": 0.1, "ci_high": 0.3}],
            ...     render="mechtests.figures:family_lines")  # doctest: +SKIP
        """
        from mechtests.report import merge_figure_rows, resolve_renderer

        resolve_renderer(render, title)
        try:
            rows = json.loads(json.dumps(list(rows), allow_nan=False))
        except (TypeError, ValueError) as exc:
            raise MtUsageError(f"figure {title!r}: rows must be JSON-serialisable dicts of finite numbers "
                               f"and strings ({exc}).") from None
        merge_figure_rows(self._state.figure_rows, {str(title): {"render": render, "caption": str(caption), "rows": rows}})


@pytest.fixture(scope="session")
def mt_figures(request: pytest.FixtureRequest) -> FigureSink:
    """Figure API for the HTML report: ``mt_figures.add(title, svg, caption="")``."""
    return FigureSink(_state(request.config))


class ClaimRecorder:
    """The callable behind the ``claim`` fixture (see `mechtests.claims.evaluate_claim`)."""

    def __init__(self, request: pytest.FixtureRequest) -> None:
        self._request = request
        self._state = _state(request.config)
        #: This test's claims so far, in order (also those that failed or skipped the test, so a
        #: ``finally`` block can read the last one).
        self.results: list[ClaimResult] = []

    def _pair(self) -> str | None:
        callspec = getattr(self._request.node, "callspec", None)
        name = callspec.params.get("mt_pair") if callspec is not None else None
        if name is None and "mt_pair" in self._request.fixturenames:
            name = self._request.getfixturevalue("mt_pair").name
        return name

    def __call__(self, name: str, *, metric: str, direction: Direction, threshold: Threshold,
                 samples: tuple[np.ndarray, ...] | np.ndarray | None = None, statistic: Statistic | None = None,
                 estimate: Estimate | float | None = None, reference: Reference | tuple[str, float] | None = None,
                 params: Mapping[str, Any] | None = None, paired: bool = True, proportion: bool = False,
                 ratio: bool = False, unit_size: float = 1.0, estimator: Estimator | None = None,
                 method: Literal["BCa", "percentile"] = "BCa", plug_in: float | None = None) -> ClaimResult:
        """State a claim; returns its `ClaimResult`; the test fails/skips per the verdict rules once its
        body returns (every claim of the test evaluated and reported first)
        (``proportion=True``: one sample of independent 0/1 outcomes, exact binomial interval;
        ``ratio=True``: samples=(numerator, denominator) per unit, Fieller interval of the ratio of
        means; ``unit_size``: prompts per sample element, e.g. ``attribution.prompts_per_block``;
        ``estimator``: ``(confidence, threshold, direction) -> Estimate``, called at this run's
        per-claim confidence; ``method``: the bootstrap interval, "BCa" or "percentile"; ``plug_in``: the
        plug-in value of a cross-fitted statistic, to widen its interval by the bootstrap's bias estimate)."""
        from mechtests.claims import evaluate_claim
        from mechtests.stats import Estimate, family_confidence, min_resamples

        st, node = self._state, self._request.node
        run, pair = st.settings.run, self._pair()
        override = st.settings.threshold_for(name, pair)
        holder = node.stash.setdefault(_item_claims_key, _ItemClaims())
        budget = node.stash.get(_claim_budget_key, 1)
        family = max(st.family_size, 1)
        if run.multiplicity == "bonferroni" and len(holder.records) >= budget:
            raise MtUsageError(f"claim {name!r} is claim {len(holder.records) + 1} of {node.nodeid}, which may state "
                               f"{budget}: the session's family-wise decisions count {budget} per test. Fix: "
                               f"@pytest.mark.{CLAIMS_MARKER}({len(holder.records) + 1}) (or more) on the test.")
        confidence, resamples = run.confidence, run.n_resamples
        if run.multiplicity == "bonferroni" and family > 1:
            # each claim at the level that keeps the whole run's error at 1 - confidence, on enough
            # resamples for that level's tails
            confidence = family_confidence(run.confidence, family)
            resamples = max(resamples, min_resamples(confidence))
            if isinstance(estimate, Estimate) and estimate.method != "exact" and estimate.confidence < confidence:
                raise MtUsageError(f"claim {name!r}: the Estimate given has a {estimate.confidence:g} interval, but this "
                                   f"run decides each of its {family} claims at {confidence:.6g} (family-wise "
                                   f"{run.confidence:g}). Fix: pass samples=... (the plugin bootstraps at that level), "
                                   "or --mt-multiplicity none.")
        try:
            result = evaluate_claim(
                name, metric=metric, direction=direction,
                threshold=override if override is not None else threshold, samples=samples, statistic=statistic,
                estimate=estimate, reference=reference, params=params, pair=pair, paired=paired,
                confidence=confidence, n_resamples=resamples, seed=run.seed, proportion=proportion,
                ratio=ratio, unit_size=unit_size, estimator=estimator, method=method, plug_in=plug_in)
        except MtUsageError as exc:
            if override is None:
                raise
            raise MtUsageError(f"{exc} (threshold {override!r} comes from [tool.mechtests.thresholds])") from None
        record = result.to_record(nodeid=node.nodeid)
        record.update(_index=len(holder.records), _text=result.explanation(), _family_size=family)
        if run.multiplicity == "bonferroni" and record["p_value"] is not None:
            record["p_adjusted"] = min(1.0, family * float(record["p_value"]))  # pass <=> p_adjusted < (1-c)/2
        holder.records.append(record)
        self.results.append(result)
        node.config.hook.pytest_mechtests_claim(item=node, result=result)
        # Outcomes are deferred to the end of the test (pytest_runtest_call below): a test stating
        # several claims evaluates and reports every one, then fails once, listing each failure.
        regressed = self._regressions(record)
        if regressed:
            holder.failures.append("\n".join(regressed) + "\n" + result.explanation())
        elif st.settings.gate is not None:
            pass  # a gate: the outcome follows regressions only; the verdict is still reported
        elif result.verdict == "fail" or (result.verdict == "inconclusive" and run.inconclusive == "fail"):
            holder.failures.append(result.explanation())
        elif result.verdict == "inconclusive" and run.inconclusive == "skip":
            holder.skips.append(result.explanation().replace("\n", "; "))
        return result

    def _regressions(self, record: Mapping[str, Any]) -> list[str]:
        st = self._state
        if st.baseline is None or not st.tolerances:
            return []
        from mechtests.storage import claim_key, regressions

        before = st.baseline_index.get(claim_key(record, ignore_pair=st.ignore_pair))
        return [] if before is None else regressions(before, record, st.tolerances)


@pytest.fixture
def claim(request: pytest.FixtureRequest) -> ClaimRecorder:
    """``claim(name, *, metric, direction, threshold, samples=..., statistic=... | estimate=...,
    reference=None, params=None)``: estimate + CI + verdict; the test fails/skips per the rules after
    its body, once, with every claim's explanation."""
    return ClaimRecorder(request)


# ---- reporting hooks ---------------------------------------------------------------------------

@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Any:
    """After the test body: fail once if any of its claims failed (all of them listed), else skip
    if any was inconclusive under ``--mt-inconclusive skip``. An exception of the body itself
    wins (its claims are still in every report)."""
    result = yield
    holder = item.stash.get(_item_claims_key, None)
    if holder is not None and holder.failures:
        head = f"{len(holder.failures)} of {len(holder.records)} claims failed:\n\n" if len(holder.failures) > 1 else ""
        pytest.fail(head + "\n\n".join(holder.failures), pytrace=False)
    if holder is not None and holder.skips:
        pytest.skip(" | ".join(holder.skips))
    return result


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    report = yield
    holder = item.stash.get(_item_claims_key, None)
    if holder is not None and holder.sent < len(holder.records):
        new = holder.records[holder.sent:]
        holder.sent = len(holder.records)
        # An extra report attribute: pytest serializes report.__dict__, so it reaches the xdist
        # controller intact without polluting user_properties/JUnit.
        report.mechtests_claims = [dict(r) for r in new]
        # A claim that failed or skipped the test is already explained by that message: one
        # explanation per claim, not two.
        shown = str(report.longrepr) if report.longrepr is not None else ""
        texts = [r["_text"] for r in new if r["_text"] not in shown and r["_text"].replace("\n", "; ") not in shown]
        if texts:
            report.sections.append(("mechtests claims", "\n\n".join(texts)))
    return report


def _phase_outcome(report: pytest.TestReport, previous: str | None) -> str:
    if report.when == "call":
        if hasattr(report, "wasxfail"):
            return "xfailed" if report.skipped else "xpassed"
        return report.outcome
    if report.failed:
        return "error" if previous in (None, "passed") else previous
    if report.skipped and previous is None:
        return "skipped"
    return previous or "passed"


def _finalize(st: MechtestsState, nodeid: str) -> None:
    for rec in st.pending.pop(nodeid, []):
        rec["outcome"] = st.outcomes.get(nodeid, "passed")
        rec["seconds"] = st.durations.get(nodeid)
        st.records.append(rec)


class _Collector:
    """Controller-side hooks that need the config (registered in pytest_configure)."""

    def __init__(self, config: pytest.Config) -> None:
        self.config = config

    @property
    def st(self) -> MechtestsState:
        return _state(self.config)

    @pytest.hookimpl(trylast=True)
    def pytest_collection_finish(self, session: pytest.Session) -> None:
        """Serial runs: check the inputs of every pair the selected tests use, now (exit 4 on a problem)."""
        from mechtests.preflight import needed_by_items

        if self.config.pluginmanager.has_plugin("dsession"):
            return  # under xdist the controller checked everything at session start
        try:
            needs = needed_by_items(session.items)
        except MtUsageError as exc:
            raise pytest.UsageError(f"mechtests: {exc}") from None
        _preflight(self.config, self.st, needs)

    def pytest_sessionstart(self, session: pytest.Session) -> None:
        # xdist: the controller collects nothing, so it checks every configured pair before the
        # workers start (data roles the tests need are then checked where they are read).
        if self.config.pluginmanager.has_plugin("dsession"):
            from mechtests.preflight import EVERYTHING

            _preflight(self.config, self.st, {spec.name: set(EVERYTHING) for spec in self.st.settings.pairs})

    @pytest.hookimpl(tryfirst=True)  # before junitxml closes the test case at teardown
    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        st = self.st
        recs = getattr(report, "mechtests_claims", None)
        if recs:
            st.pending.setdefault(report.nodeid, []).extend(recs)
        st.outcomes[report.nodeid] = _phase_outcome(report, st.outcomes.get(report.nodeid))
        if report.when == "call":
            st.durations[report.nodeid] = round(report.duration, 6)
        if report.when == "teardown":
            if st.pending.get(report.nodeid):
                from mechtests.junit import add_claims_to_junit

                add_claims_to_junit(self.config, report, st.pending[report.nodeid])
            _finalize(st, report.nodeid)

    @pytest.hookimpl(optionalhook=True)
    def pytest_testnodedown(self, node: Any, error: Any) -> None:
        out = getattr(node, "workeroutput", {}).get("mechtests")
        if not out:
            return
        from mechtests.report import Figure, add_figure, merge_figure_rows

        st = self.st
        for figure in out.get("figures", []):
            add_figure(st.figures, Figure(**figure))
        merge_figure_rows(st.figure_rows, out.get("figure_rows", {}))
        st.scorer_lines.extend(out.get("scorer_lines", []))
        st.cache_notes.extend(out.get("cache_notes", []))
        from mechtests.conditions import merge_rows

        st.conditions = merge_rows(st.conditions, out.get("conditions", []))
        st.show_conditions = st.show_conditions or bool(out.get("show_conditions"))
        for name, info in out.get("pairs", {}).items():
            if info["base"]["sha256"] is not None:
                st.pairs.setdefault(name, {}).update({"base": info["base"], "tuned": info["tuned"]})
                for section, values in (info.get("inputs") or {}).items():
                    _record_inputs(st, name, section, values)

    def pytest_deselected(self, items: list[pytest.Item]) -> None:
        self.st.deselected += len(items)

    def pytest_sessionfinish(self, session: pytest.Session, exitstatus: int) -> None:
        st = self.st
        if exitstatus == pytest.ExitCode.INTERRUPTED:
            st.incomplete = "interrupted"
        elif session.shouldstop or session.shouldfail:
            st.incomplete = f"stopped early: {session.shouldstop or session.shouldfail}"
        for nodeid in list(st.pending):
            _finalize(st, nodeid)  # a crashed worker never sent its teardown report
        _collect_conditions(st)
        try:
            write_outputs(st)
        except MechtestsError as exc:
            st.written.append(f"mechtests: could not write reports: {exc}")
        if st.compare_refused:
            session.exitstatus = pytest.ExitCode.USAGE_ERROR
        if st.save_refused and session.exitstatus == pytest.ExitCode.OK:
            session.exitstatus = pytest.ExitCode.USAGE_ERROR  # asked to save, did not: never a silent green
        _prune_cache(st)

    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        from mechtests.report import (
            comparison_lines,
            fit_table,
            format_table,
            sort_claims,
            summary_title,
            table_rows,
        )

        st = self.st
        verbose = terminalreporter.config.get_verbosity() > 0
        if st.records:
            records = sort_claims(st.records)
            terminalreporter.write_sep("=", summary_title(records))
            rows = table_rows(records, verbose=verbose)
            for line in format_table(rows) if verbose else fit_table(rows):
                terminalreporter.write_line(line)
        if st.conditions and (verbose or st.show_conditions):
            from mechtests.conditions import text_lines

            distinct = len({(r["pair"], r["model"], r["key"]) for r in st.conditions})
            terminalreporter.write_sep("-", f"mechtests: interventions table ({distinct} conditions in "
                                            f"{len(st.conditions)} rows; "
                                            f"{float(st.conditions[0]['confidence']) * 100:.4g}% intervals per cell)")
            for line in text_lines(st.conditions):
                terminalreporter.write_line(line)
        comparison = (st.doc or {}).get("comparison")
        if comparison is not None:
            terminalreporter.write_sep("-", f"mechtests: change against baseline {comparison['baseline']} "
                                            f"({comparison['path']})")
            for line in comparison_lines(comparison, verbose=verbose):
                terminalreporter.write_line(line)
        for note in st.compare_notes:
            terminalreporter.write_line(f"mechtests: {note}", red=note.startswith("ERROR"), yellow=not note.startswith("ERROR"))
        cache_notes = st.cache_notes + (st.cache.notes if st.cache is not None else [])
        for note in dict.fromkeys(cache_notes):
            terminalreporter.write_line(f"mechtests: {note}", yellow=True)
        for line in st.scorer_lines + [f"mechtests: {s.summary()}" for s in st.scorers]:
            terminalreporter.write_line(line)
        for line in st.written:
            terminalreporter.write_line(line)
        # A threshold override whose claim never ran is most likely a typo in pyproject.toml.
        configured = set(st.settings.thresholds) | {c for p in st.settings.pairs for c in p.thresholds}
        unused = sorted(configured - {r["claim"] for r in st.records})
        if st.records and unused:
            terminalreporter.write_line(f"mechtests: threshold override(s) for claim(s) that did not run: "
                                        f"{', '.join(unused)} (check the names in [tool.mechtests.thresholds])",
                                        yellow=True)


def _preflight(config: pytest.Config, st: MechtestsState, needs: Mapping[str, set[str]]) -> None:
    """Run ``mechtests.preflight`` for the pairs in ``needs``; print what was read; usage error on a problem."""
    if not needs:
        return
    from mechtests.checkpoints import Inspection
    from mechtests.preflight import preflight_pair
    from mechtests.zoo import ZOO_DIR

    memo: dict[ModelSource, Inspection] = {}
    lines: list[str] = []
    try:
        for spec in st.settings.pairs:
            if not needs.get(spec.name):
                continue
            zoo = st.zoo_pair() if spec.is_default else None
            checked = preflight_pair(st.settings, spec, zoo=zoo, zoo_data=ZOO_DIR / "data",
                                     needed_roles=needs[spec.name], memo=memo)
            st.eval_data[spec.name] = checked.data
            for section, values in checked.inputs().items():
                if values is not None:
                    _record_inputs(st, spec.name, section, values)
            lines.extend(checked.lines())
    except MechtestsError as exc:
        raise pytest.UsageError(f"mechtests: {exc}") from None
    reporter = config.pluginmanager.get_plugin("terminalreporter")
    if reporter is not None and config.get_verbosity() >= 0:
        for line in lines:
            reporter.write_line(line)


class _WorkerHooks:
    """On an xdist worker: hand figures and pair fingerprints to the controller."""

    def __init__(self, config: pytest.Config) -> None:
        self.config = config

    def pytest_sessionfinish(self, session: pytest.Session) -> None:
        st = _state(self.config)
        _collect_conditions(st)
        self.config.workeroutput["mechtests"] = {  # type: ignore[attr-defined]
            "conditions": st.conditions,
            "show_conditions": st.show_conditions,
            "figures": [f.to_dict() for f in st.figures],
            "figure_rows": st.figure_rows,
            "pairs": {k: v for k, v in st.pairs.items() if v["base"]["sha256"] is not None},
            "scorer_lines": [f"mechtests: [{self.config.workerinput['workerid']}] {s.summary()}"  # type: ignore[attr-defined]
                             for s in st.scorers],
            "cache_notes": list(st.cache.notes) if st.cache is not None else [],
        }


def _collect_conditions(st: MechtestsState) -> None:
    """This process's evaluators' interventions tables, merged into ``st.conditions`` (once)."""
    from mechtests.conditions import merge_rows

    evaluators, st.evaluators = st.evaluators, []
    for ev in evaluators:
        if ev.rows_used:  # --mt-batch-size auto resolved from free memory: what it came to is recorded
            _record_inputs(st, ev.pair.name, "batch_rows", {**ev.rows_used, "setting": st.settings.run.batch_size})
        try:
            st.conditions = merge_rows(st.conditions, ev.conditions_table())
        except Exception as exc:  # a labeller's bug must not cost the run its reports; said, not hidden
            st.written.append(f"mechtests: ERROR: interventions table of pair {ev.pair.name!r} not built: "
                              f"{type(exc).__name__}: {exc}")


def _check_comparison(st: MechtestsState) -> bool:
    """After the run: what the comparison matched, missed and could not hold equal. Returns True
    when the comparison is refused (nothing matched; differing inputs under --mt-compare-strict)."""
    from mechtests.storage import claim_key, input_differences

    s = st.settings
    name = s.gate or s.compare
    run_keys = {claim_key(r, ignore_pair=st.ignore_pair) for r in st.records}
    base_keys = set(st.baseline_index)
    matched = run_keys & base_keys

    def sample(keys: set[tuple[str, str]]) -> str:
        items = sorted(f"{claim}[{nodeid.split('[', 1)[1]}" if "[" in nodeid else claim for nodeid, claim in keys)
        return ", ".join(items[:6]) + (f" ... (+{len(items) - 6} more)" if len(items) > 6 else "")

    refused = False
    if not matched:
        st.compare_notes.append(
            f"ERROR: no claim of this run matches baseline {name} ({len(run_keys)} claim(s) run, {len(base_keys)} in "
            f"the baseline; run: {sample(run_keys)}; baseline: {sample(base_keys)}). A comparison of nothing is not "
            "a green gate. Fix: run the same tests (and pair) as the baseline, or save a new baseline")
        refused = True
    if base_keys - run_keys:
        st.compare_notes.append(f"in the baseline but not run ({len(base_keys - run_keys)}): {sample(base_keys - run_keys)}")
    if run_keys - base_keys:
        st.compare_notes.append(f"new since the baseline ({len(run_keys - base_keys)}): {sample(run_keys - base_keys)}")
    differences = input_differences(st.baseline or {}, st.doc or {})
    base_pairs = list(((st.baseline or {}).get("pairs") or {}).values())
    run_pairs = list(((st.doc or {}).get("pairs") or {}).values())
    if len(base_pairs) == 1 and len(run_pairs) == 1:
        before, after = base_pairs[0]["base"]["sha256"], run_pairs[0]["base"]["sha256"]
        if before and after and before != after:
            differences.append(f"base model: baseline sha256 {before[:12]}, now {after[:12]}")
        before, after = base_pairs[0]["tuned"]["sha256"], run_pairs[0]["tuned"]["sha256"]
        if before and after and before != after:
            st.compare_notes.append(f"tuned model: baseline sha256 {before[:12]}, now {after[:12]} (the checkpoint "
                                    "under test)")
    for difference in differences:
        st.compare_notes.append(("ERROR (--mt-compare-strict): " if s.compare_strict else "differs from the baseline: ")
                                + difference)
    return refused or bool(differences and s.compare_strict)


def _prune_cache(st: MechtestsState) -> None:
    """Apply --mt-cache-max-size once, on the controller, after every worker has finished."""
    s = st.settings
    if s.cache_max_bytes is None or s.cache_dir is None:
        return
    from mechtests.storage import Cache, format_size

    result = Cache(s.cache_dir).prune(s.cache_max_bytes, keep_used_since=st.started)
    if result.removed or result.kept_bytes > s.cache_max_bytes:
        over = (f"; this run's own entries alone exceed {format_size(s.cache_max_bytes)}"
                if result.kept_bytes > s.cache_max_bytes else "")
        st.written.append(f"mechtests: cache {s.cache_dir} pruned: {result.removed} least recently used "
                          f"entries removed ({format_size(result.freed_bytes)}), "
                          f"{format_size(result.kept_bytes)} kept{over}")


def write_outputs(st: MechtestsState) -> None:
    """Holm-adjust the session's p-values, compare with the baseline asked for; write the JSON/HTML
    reports and the baseline asked for."""
    from mechtests.report import (
        add_figure,
        comparison_section,
        draw_row_figures,
        session_document,
        write_session_outputs,
    )

    s = st.settings
    for figure in draw_row_figures(st.figure_rows):
        add_figure(st.figures, figure)
    st.figure_rows.clear()
    # Whether this run is the whole suite: a report says so; a baseline is never saved from less.
    status = {"complete": st.incomplete is None, "incomplete": st.incomplete, "deselected": st.deselected}
    doc, st.records = session_document(st.records, st.pairs, s.run, rootdir=s.rootdir, figures=st.figures,
                                       status=status, interventions=st.conditions)
    st.doc = doc
    if st.baseline is not None and st.records:
        st.compare_refused = _check_comparison(st)
        assert s.baseline_name is not None
        doc["comparison"] = comparison_section(
            st.records, st.baseline, name=s.baseline_name, path=str(s.gate or s.compare), gate=s.gate is not None,
            tolerances=st.tolerances, ignore_pair=st.ignore_pair, notes=st.compare_notes)
    save = s.save
    if save is not None:
        refusal = _save_refusal(st)
        if refusal:
            st.save_refused = True
            st.written.append(f"mechtests: ERROR: baseline {save!r} not saved: {refusal}")
            save = None
    st.written.extend(write_session_outputs(doc, st.figures, json_path=s.json_path, html_path=s.html_path,
                                            save=save, baselines=s.baseline_dir))


def _save_refusal(st: MechtestsState) -> str | None:
    """Why this run must not become baseline ``--mt-save`` (None: it may)."""
    from mechtests.storage import BaselineStore, claim_key, index_claims, load_report

    s = st.settings
    if st.incomplete is not None:
        return f"the run is incomplete ({st.incomplete}); an interrupted run never replaces a baseline"
    if s.save_partial:
        return None
    reasons = []
    if st.deselected:
        reasons.append(f"{st.deselected} test(s) deselected")
    errors = sum(outcome == "error" for outcome in st.outcomes.values())
    if errors:
        reasons.append(f"{errors} test(s) errored before stating their claims")
    store = BaselineStore(s.baseline_dir)
    assert s.save is not None
    if not store.history(s.save):
        if reasons:  # nothing fuller to replace: saved, and said to be partial
            st.written.append(f"mechtests: note: baseline {s.save!r} is saved from a partial run ({'; '.join(reasons)})")
        return None
    latest = index_claims(load_report(store.path(s.save)))
    missing = set(latest) - {claim_key(r) for r in st.records}
    if missing:
        reasons.append(f"{len(missing)} claim(s) of the latest save {store.path(s.save)} are not in this run")
    if not reasons:
        return None
    return ("this run is partial (" + "; ".join(reasons) + "). Fix: run the whole suite, or add --mt-save-partial "
            "to save it anyway as the next save (the earlier ones are kept)")
