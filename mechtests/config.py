"""Run configuration: the frozen `RunConfig`, its profiles, and the plugin's resolved `Settings`.

Every option has three spellings with one precedence: command line (``--mt-profile ci``) >
pytest ini key (``mt_profile = ci`` in ``[tool.pytest.ini_options]``/pytest.ini) >
``[tool.mechtests]`` in pyproject.toml (``profile = "ci"``) > the profile's default.
`resolve_settings` validates all of it up front and raises `UsageError` with the option, the
bad value and the fix, so a typo never surfaces as a traceback mid-run.

Example:
    >>> cfg = run_config("smoke", seed=3)
    >>> (cfg.profile, cfg.seed, cfg.max_new_tokens)
    ('smoke', 3, 20)
"""

from __future__ import annotations

import math
import os
import re
import tomllib
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Literal, get_args

from mechtests.checkpoints import ModelSource, classify_source, resolve_pair_sources
from mechtests.errors import UsageError
from mechtests.thresholds import Threshold, check_threshold

# Each set of choices is defined once, as a Literal (for the type checker); its tuple of values
# (for option parsing and messages) is read from it.
Profile = Literal["smoke", "ci", "full"]
Inconclusive = Literal["fail", "skip", "pass"]
Multiplicity = Literal["bonferroni", "none"]
ScorerName = Literal["offline", "perspective", "detoxify"]
Backend = Literal["auto", "bridge"]
Dtype = Literal["float32", "float64", "float16", "bfloat16"]
PROFILES: tuple[str, ...] = get_args(Profile)
INCONCLUSIVE: tuple[str, ...] = get_args(Inconclusive)
MULTIPLICITIES: tuple[str, ...] = get_args(Multiplicity)
SCORERS: tuple[str, ...] = get_args(ScorerName)
BACKENDS: tuple[str, ...] = get_args(Backend)
DTYPES: tuple[str, ...] = get_args(Dtype)
#: entry-point group through which packages register scorers (the built-in ones are registered too)
SCORER_GROUP = "mechtests.scorers"
DEFAULT_PAIR = "default"
CUSTOM_PAIR = "custom"
_NAME = re.compile(r"^[A-Za-z0-9_.-]+$")
_DEVICE = re.compile(r"^(cpu|mps|cuda(:\d+)?)$")


#: NeuronStats blocks (prompt ``i`` -> block ``i % n_blocks``, never more blocks than prompts):
#: the resampled units of every attribution claim. The cross-fitted statistics resample each half
#: of the blocks within itself; with 10 blocks per half (the old 20) the bootstrap's spread fell
#: short of the estimator's (ratio 0.90-0.94, coverage 88-91% at 256 prompts); with 32 per half
#: it matches (0.98-1.04). See docs/STATISTICS.md.
N_BLOCKS = 64


@dataclass(frozen=True)
class RunConfig:
    """Everything that decides a run's numbers; part of every cache key and of the report.

    ``None`` sizes mean "all" (the papers' protocol). ``dtype`` is a string so that this
    module never imports torch; `torch_dtype` converts it.
    """

    profile: Profile = "smoke"
    device: str = "cpu"
    dtype: Dtype = "float32"
    backend: Backend = "auto"
    seed: int = 0
    confidence: float = 0.95
    n_resamples: int = 1000
    n_prompts: int | None = 64
    max_new_tokens: int = 20
    max_prompt_tokens: int = 32
    # Rows (prompt x condition) per forward pass: "auto" sizes it from the device's free memory
    # (mechtests.generation.auto_batch_rows). Never changes a number: a row's result does not
    # depend on its batch-mates (tested), so it is not part of any cache key.
    batch_size: int | Literal["auto"] = "auto"
    n_blocks: int = N_BLOCKS
    n_perplexity_windows: int | None = 16
    n_f1: int | None = 64
    n_probe_eval: int | None = 256
    scorer: str = "offline"  # a built-in ScorerName, an entry point of SCORER_GROUP, or module:callable
    inconclusive: Inconclusive = "skip"
    prompt_truncation: Literal["first", "last"] = "first"
    # Family-wise decisions: each of the session's m claims is decided by its interval at
    # confidence 1 - (1 - confidence) / m (Bonferroni; m counted at collection), so
    # P(any false pass or fail in the run) <= 1 - confidence. "none": each at `confidence`.
    multiplicity: Multiplicity = "bonferroni"

    def torch_dtype(self) -> Any:
        """The ``torch.dtype`` named by ``dtype`` (imports torch lazily)."""
        import torch

        return getattr(torch, self.dtype)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready mapping (the report's ``config`` section)."""
        return asdict(self)


# Sizes per profile. smoke: the whole reference suite on the default pair in about a minute on
# a laptop CPU; ci: tighter intervals for a gate; full: the papers' protocol (all prompts,
# 20 new tokens, 9999 resamples).
_PROFILE_SIZES: dict[str, dict[str, Any]] = {
    "smoke": dict(n_resamples=1000, n_prompts=64, n_perplexity_windows=16, n_f1=64, n_probe_eval=256),
    "ci": dict(n_resamples=2000, n_prompts=256, n_perplexity_windows=32, n_f1=256, n_probe_eval=1000),
    "full": dict(n_resamples=9999, n_prompts=None, n_perplexity_windows=None, n_f1=None, n_probe_eval=None),
}


def run_config(profile: str = "smoke", **overrides: Any) -> RunConfig:
    """The `RunConfig` of a profile, with overrides; ``inconclusive`` defaults per profile.

    Example:
        >>> run_config("full").n_resamples, run_config("ci").inconclusive
        (9999, 'fail')
    """
    if profile not in PROFILES:
        raise UsageError(f"unknown profile {profile!r} (--mt-profile). Fix: one of {', '.join(PROFILES)}.")
    values: dict[str, Any] = dict(_PROFILE_SIZES[profile])
    # DESIGN.md: inconclusive claims fail the build in CI profiles, are skipped otherwise.
    values["inconclusive"] = "fail" if profile in ("ci", "full") else "skip"
    values.update({k: v for k, v in overrides.items() if v is not None})
    return RunConfig(profile=profile, **values)  # type: ignore[arg-type]


@dataclass(frozen=True)
class PairSpec:
    """One configured model pair. ``base``/``tuned`` None means the embedded zoo pair.

    ``base``/``tuned`` are classified sources (directory, state-dict file or hub name); a
    state-dict source carries the directory or hub name whose config it is applied to.
    """

    name: str
    base: ModelSource | None = None
    tuned: ModelSource | None = None
    probe: Path | None = None
    prompts: Path | None = None
    data: Path | None = None
    probe_data: Path | None = None
    perplexity_data: Path | None = None
    f1_data: Path | None = None
    thresholds: Mapping[str, Threshold] = field(default_factory=dict)

    @property
    def is_default(self) -> bool:
        return self.base is None

    def data_paths(self) -> dict[str, Path | None]:
        """role -> the per-file data option of this pair (``mechtests.eval_data`` roles)."""
        return {"challenge": self.prompts, "probe": self.probe_data, "perplexity": self.perplexity_data,
                "f1": self.f1_data}


@dataclass(frozen=True)
class Settings:
    """Everything the plugin resolved from options, ini keys and pyproject.toml."""

    run: RunConfig
    pairs: tuple[PairSpec, ...]
    thresholds: Mapping[str, Mapping[str, Threshold]]
    rootdir: Path
    json_path: Path | None = None
    html_path: Path | None = None
    save: str | None = None
    compare: Path | None = None
    compare_fail: str | None = None
    # --mt-compare-fail parsed (once, here); --mt-gate alone means "verdict"; () when nothing is compared
    tolerances: tuple[Any, ...] = ()
    gate: Path | None = None
    baseline_name: str | None = None  # --mt-gate / --mt-compare as given (NAME, NAME@N or a path)
    baseline_dir: Path = Path(".mechtests/baselines")
    save_partial: bool = False
    compare_strict: bool = False
    cache_dir: Path | None = None
    cache_max_bytes: int | None = None
    probe: Path | None = None
    prompts: Path | None = None
    data: Path | None = None
    probe_data: Path | None = None
    perplexity_data: Path | None = None
    f1_data: Path | None = None
    all_prompts: bool = False
    probe_hook: str | None = None
    probe_bias: float | Literal["fit"] | None = None
    detoxify_path: Path | None = None
    perspective: Mapping[str, Any] = field(default_factory=dict)

    def pair(self, name: str) -> PairSpec:
        for spec in self.pairs:
            if spec.name == name:
                return spec
        raise UsageError(f"no configured pair named {name!r}; configured: {[p.name for p in self.pairs]}.")

    def threshold_for(self, claim: str, pair: str | None) -> Threshold | None:
        """The configured override of ``claim``'s threshold on ``pair``, or None.

        Precedence: ``[tool.mechtests.pairs.PAIR.thresholds]`` > ``[tool.mechtests.thresholds.CLAIM]``
        table entry for PAIR > its ``"*"`` entry > a plain ``CLAIM = value``.
        """
        if pair is not None:
            for spec in self.pairs:
                if spec.name == pair and claim in spec.thresholds:
                    return spec.thresholds[claim]
        table = self.thresholds.get(claim)
        if table is None:
            return None
        if pair is not None and pair in table:
            return table[pair]
        return table.get("*")

    def data_paths(self, pair: PairSpec) -> dict[str, Path | None]:
        """role -> per-file data path for ``pair``: the command line's, else the pair's."""
        ours = {"challenge": self.prompts, "probe": self.probe_data, "perplexity": self.perplexity_data,
                "f1": self.f1_data}
        theirs = pair.data_paths()
        return {role: ours[role] or theirs[role] for role in ours}

    def data_directory(self, pair: PairSpec) -> tuple[Path | None, str]:
        """The data directory for ``pair`` and where it was set (``--mt-data`` wins over the pair's)."""
        if self.data is not None:
            return self.data, "--mt-data"
        if pair.data is not None:
            return pair.data, f"[tool.mechtests.pairs.{pair.name}] data"
        return None, "--mt-data"


@dataclass(frozen=True)
class Option:
    """One option: CLI ``--mt-KEY`` (``_`` -> ``-``), ini key ``mt_KEY``, ``[tool.mechtests] KEY``.

    ``kind``: ``value`` (takes a value), ``flag`` (no value on the command line; ``true``/``false``
    in ini files and pyproject.toml), ``append`` (repeatable).
    """

    key: str
    metavar: str | None
    help: str
    kind: Literal["value", "flag", "append"] = "value"

    @property
    def flag(self) -> str:
        return "--mt-" + self.key.replace("_", "-")


# The one list of options: the plugin declares exactly these, resolve_settings reads exactly these.
OPTIONS: tuple[Option, ...] = (
    Option("base", "PATH_OR_NAME", "base model: Hugging Face checkpoint directory, state-dict file (.pt/.bin/"
           ".safetensors, applied to --mt-tuned's or --mt-config-from's config) or hub name (needs --mt-tuned); "
           "write --mt-base=PATH: pytest reads a separate PATH as a test path when it picks the rootdir"),
    Option("tuned", "PATH_OR_NAME", "fine-tuned twin of --mt-base (same architecture and tokenizer): a checkpoint "
           "directory, a state-dict file such as Lee et al.'s dpo.pt (applied to --mt-base's config), or a hub name"),
    Option("config_from", "DIR_OR_NAME", "checkpoint directory or hub name whose config.json and tokenizer a "
           "state-dict file --mt-base/--mt-tuned is applied to (default: the other model of the pair)"),
    Option("pair", "NAME[,NAME]", "named pair(s) from [tool.mechtests.pairs.NAME]; 'default' = the embedded pair, "
           "'custom' = --mt-base/--mt-tuned, 'all' = every configured pair (repeatable)", "append"),
    Option("profile", "{" + ",".join(PROFILES) + "}", "sizes and resamples: smoke (fast, default), ci, full (papers' protocol)"),
    Option("device", "DEVICE", "torch device for the models: cpu (default), cuda, cuda:N, mps"),
    Option("dtype", "{float32,float64,float16,bfloat16}", "model dtype (default float32)"),
    Option("backend", "{auto,bridge}", "auto (default): run routed hooks on a weight-sharing plain Hugging Face twin, "
           "the TransformerBridge otherwise; bridge: always the TransformerBridge (slower, every hook point)"),
    Option("seed", "INT", "seed of every random choice: bootstrap, probe split (default 0)"),
    Option("batch_size", "INT|auto", "rows (prompt x condition) per forward pass: auto (default) from the device's "
           "free memory and the model's sizes, or a positive int (perplexity windows get the same token budget); "
           "never changes a result"),
    Option("json", "PATH", "write the mechtests-report/2 JSON report to PATH (schema: mechtests/schemas/)"),
    Option("html", "PATH", "write a self-contained HTML report (claims table and figures) to PATH"),
    Option("save", "NAME", "store this run as the next save of baseline NAME (history kept: NAME is the latest, "
           "NAME@N an older one); refused for an interrupted or partial run"),
    Option("save_partial", None, "save a baseline even from a partial run (-k, deselected, errored tests, or fewer "
           "claims than the latest save)", "flag"),
    Option("baseline_dir", "DIR", "where baselines are stored (default .mechtests/baselines under the rootdir)"),
    Option("compare", "NAME|PATH", "print each claim's change against a stored baseline (or report file)"),
    Option("compare_fail", "EXPR", "fail tests whose claim regressed past a tolerance vs --mt-compare / --mt-gate, in "
           "the claim's own direction (improving never fails): comma list of estimate:0.05 (absolute), "
           "estimate:10%% (relative), ci_low:..., ci_high:..., verdict (a worse verdict: pass -> inconclusive -> fail)"),
    Option("gate", "NAME|PATH", "CI gate against baseline NAME: each test's outcome follows regressions only "
           "(--mt-compare-fail, default 'verdict'), so a pair whose baseline refutes claims can be green; verdicts "
           "still appear in every report. Zero matched claims is an error"),
    Option("compare_strict", None, "refuse a comparison across different settings (profile, seed, confidence, "
           "resamples, prompts, scorer) or different data / probe files, instead of warning", "flag"),
    Option("inconclusive", "{fail,skip,pass}", "pytest outcome of an inconclusive claim (default: fail in ci/full, "
           "skip in smoke)"),
    Option("multiplicity", "{bonferroni,none}", "bonferroni (default): decide each of the session's m claims at "
           "confidence 1-(1-c)/m, so the whole run's chance of any false pass or fail stays below 1-c; none: each "
           "claim at c on its own"),
    Option("cache_dir", "DIR", "content-addressed cache of computed conditions (default .mechtests/cache)"),
    Option("cache_max_size", "SIZE", "after the run, drop least recently used cache entries beyond SIZE "
           "(e.g. 500MB, 2GB; entries this run used are kept; default: no limit)"),
    Option("no_cache", None, "keep the cache in memory only (nothing read from or written to disk)", "flag"),
    Option("probe", "PATH", "toxicity probe: mechtests' format, a raw [d_model] / [1, d_model] tensor (.pt; "
           "Lee et al.'s probe.pt, the reference paper's clf.coef_) or a dict {weight, bias, hook_name, pooling}"),
    Option("probe_hook", "HOOK", "where a probe without its own hook reads the residual: resid_final (last "
           "block's output, before the final LayerNorm: Lee et al.'s probe.pt; default), ln_final (after it: "
           "Hugging Face hidden_states[-1], the reference paper's probe) or a hook name blocks.L.hook_resid_post"),
    Option("probe_bias", "FLOAT|fit", "intercept of a probe file that has none: a number, or 'fit' (default) "
           "to fit it on the probe data with the direction fixed"),
    Option("prompts", "PATH", "challenge prompts: JSONL ('prompt': str as Lee et al.'s challenge_prompts.jsonl, or "
           "RealToxicityPrompts' prompt.text, of which only 'challenging' lines are used) or .txt"),
    Option("all_prompts", None, "use every RealToxicityPrompts prompt, not only those marked challenging", "flag"),
    Option("probe_data", "PATH", "labelled texts for the probe: JSONL or CSV with text/comment_text and "
           "label/toxic/is_offensive (0/1), e.g. Jigsaw's train.csv"),
    Option("perplexity_data", "PATH", "held-out text for perplexity: .txt / wiki.test.raw, or a local `datasets` "
           "directory (wikitext-2-raw-v1 saved with save_to_disk; test rows joined with blank lines)"),
    Option("f1_data", "PATH", "F1 items: JSONL {'prompt', 'gold'} (Lee et al.'s wiki_samples.jsonl; gold = the true "
           "continuation) or {'prompt': sentence}"),
    Option("data", "DIR", "evaluation data directory: challenge.jsonl | challenge_prompts.jsonl | prompts.jsonl, "
           "probe.jsonl | probe.csv, perplexity.txt | wiki.test.raw | wikitext-2/, f1.jsonl | wiki_samples.jsonl; "
           "each file is read only by the claims that use it (default: the embedded pair's)"),
    Option("prompt_truncation", "{first,last}", "which end of a prompt longer than 32 tokens is kept: first "
           "(default, as the papers' tokenizer call) or last"),
    Option("scorer", "NAME|MODULE:CALLABLE", "scorer of the generated texts: offline (default), perspective, detoxify, "
           "an entry point of group mechtests.scorers, or module:callable returning an object with a name and "
           "score(texts) -> floats in [0, 1]"),
    Option("detoxify_path", "DIR", "local Hugging Face classifier directory for --mt-scorer detoxify "
           "(e.g. unitary/toxic-bert saved with save_pretrained; default $MECHTESTS_DETOXIFY_PATH)"),
    Option("perspective_url", "URL", "Perspective API root for --mt-scorer perspective (default Google's)"),
    Option("perspective_qps", "QPS", "requests per second to Perspective, shared by every xdist worker of the run "
           "(default 1)"),
    Option("perspective_timeout", "SECONDS", "timeout of one Perspective request (default 30)"),
    Option("perspective_retries", "INT", "retries of one text on HTTP 429/5xx, timeouts and bad answers (default 5)"),
    Option("confidence", "LEVEL", "two-sided confidence level of every interval, in (0, 1) (default 0.95)"),
    Option("resamples", "INT", "bootstrap resamples (default per profile: 1000 / 2000 / 9999)"),
)
OPTION_KEYS: tuple[str, ...] = tuple(o.key for o in OPTIONS)
TOOL_TABLES: tuple[str, ...] = ("pairs", "thresholds")


def read_tool_table(pyproject: Path | None) -> dict[str, Any]:
    """``[tool.mechtests]`` of a pyproject.toml (empty when absent); unknown keys are errors."""
    if pyproject is None or not pyproject.is_file():
        return {}
    try:
        with pyproject.open("rb") as fh:
            doc = tomllib.load(fh)
    except tomllib.TOMLDecodeError as exc:
        raise UsageError(f"{pyproject} is not valid TOML: {exc}. Fix the file.") from exc
    table = doc.get("tool", {}).get("mechtests", {})
    if not isinstance(table, dict):
        raise UsageError(f"[tool.mechtests] in {pyproject} must be a table.")
    unknown = sorted(set(table) - set(OPTION_KEYS) - set(TOOL_TABLES))
    if unknown:
        raise UsageError(
            f"unknown key(s) {unknown} in [tool.mechtests] of {pyproject}. "
            f"Fix: known keys are {sorted(OPTION_KEYS + TOOL_TABLES)}."
        )
    return table


@dataclass(frozen=True)
class Sources:
    """Raw option values by origin, with the directory relative paths resolve against."""

    cli: Mapping[str, Any]
    cli_dir: Path
    ini: Mapping[str, Any]
    ini_dir: Path
    tool: Mapping[str, Any]
    tool_dir: Path

    def get(self, key: str) -> tuple[Any, str, Path]:
        """(value, where-it-came-from, base dir) of the highest-precedence source that sets ``key``."""
        for src, where, base in ((self.cli, f"--mt-{key.replace('_', '-')}", self.cli_dir),
                                 (self.ini, f"ini key mt_{key}", self.ini_dir),
                                 (self.tool, f"[tool.mechtests] {key}", self.tool_dir)):
            value = src.get(key)
            if value not in (None, "", []):
                return value, where, base
        return None, f"--mt-{key.replace('_', '-')}", self.cli_dir


def _path(value: Any, where: str, base: Path, *, must_exist: bool = True) -> Path:
    p = Path(os.path.expanduser(str(value)))
    p = p if p.is_absolute() else base / p
    if must_exist and not p.exists():
        raise UsageError(f"{where}: path {str(p)!r} does not exist. Fix: point it at an existing file or directory.")
    return p


def _model_source(value: Any, where: str, base: Path) -> ModelSource:
    """A checkpoint directory, a state-dict file or a hub name (``mechtests.checkpoints``); a
    path-looking value that does not exist is refused here, at start-up."""
    return classify_source(str(value), base, where=where)


def _flag(value: Any, where: str) -> bool:
    """A boolean option: the CLI flag (True), or true/false/1/0/yes/no/on/off in ini and pyproject."""
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off"):
        return False
    raise UsageError(f"{where}: {value!r} is not a boolean. Fix: true or false.")


def _output(value: Any, where: str, base: Path) -> Path:
    p = _path(value, where, base, must_exist=False)
    if not p.parent.is_dir():
        raise UsageError(f"{where}: directory {str(p.parent)!r} does not exist. Fix: create it or pick another path.")
    return p


def _check_device(device: str, where: str) -> None:
    """Refuse an accelerator this machine does not have (imports torch only for non-CPU devices)."""
    if device == "cpu":
        return
    import torch

    if device == "mps":
        if not torch.backends.mps.is_available():
            raise UsageError(f"{where}: 'mps' is not available on this machine. Fix: --mt-device cpu.")
        return
    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    index = int(device.split(":")[1]) if ":" in device else 0
    if index >= count:
        raise UsageError(f"{where}: {device!r} is not available (this machine has {count} CUDA device(s)). "
                         "Fix: --mt-device cpu, or a cuda:N with N below the device count.")


def _number(value: Any, where: str, kind: type, *, low: float | None = None, high: float | None = None,
            open_interval: bool = False) -> Any:
    try:
        out = kind(value)
        if kind is int and float(value) != out:
            raise ValueError
    except (TypeError, ValueError):
        raise UsageError(f"{where}: {value!r} is not a valid {kind.__name__}.") from None
    if isinstance(out, float) and not math.isfinite(out):
        raise UsageError(f"{where}: {value!r} must be finite.")
    bad_low = low is not None and (out <= low if open_interval else out < low)
    bad_high = high is not None and (out >= high if open_interval else out > high)
    if bad_low or bad_high:
        rng = f"({low}, {high})" if open_interval else f"[{low}, {high if high is not None else 'inf'}]"
        raise UsageError(f"{where}: {value!r} is outside {rng}.")
    return out


def _scorer(value: Any, where: str) -> str:
    """A built-in scorer, or a plugin spec resolved now (imported), so a typo stops the run at start-up."""
    text = str(value).strip()
    if text in SCORERS:
        return text
    from mechtests.scoring import resolve_scorer

    try:
        resolve_scorer(text)
    except UsageError as exc:
        raise UsageError(f"{where}: {exc}") from None
    return text


def _choice(value: Any, where: str, choices: tuple[str, ...]) -> str:
    if value not in choices:
        raise UsageError(f"{where}: {value!r} is not one of {', '.join(choices)}.")
    return str(value)


def _name(value: Any, where: str) -> str:
    if not isinstance(value, str) or not _NAME.match(value):
        raise UsageError(f"{where}: {value!r} is not a valid name. Fix: use letters, digits, '_', '.', '-'.")
    return value


def parse_threshold(value: Any, where: str) -> Threshold:
    """A number, or ``[low, high]`` with finite ``low < high`` (for ``within`` claims): the one
    rule, `thresholds.check_threshold`; the shape is matched to the claim's direction when it runs."""
    return check_threshold(value, where=where)


def _thresholds(table: Any, where: str) -> dict[str, dict[str, Threshold]]:
    if not isinstance(table, dict):
        raise UsageError(f"{where} must be a table of CLAIM = threshold.")
    out: dict[str, dict[str, Threshold]] = {}
    for claim, value in table.items():
        if isinstance(value, dict):
            out[claim] = {pair: parse_threshold(v, f"{where}.{claim}.{pair}") for pair, v in value.items()}
        else:
            out[claim] = {"*": parse_threshold(value, f"{where}.{claim}")}
    return out


def _named_pairs(table: Any, base: Path, where: str) -> dict[str, PairSpec]:
    if not isinstance(table, dict):
        raise UsageError(f"{where} must be a table of [tool.mechtests.pairs.NAME] tables.")
    pairs: dict[str, PairSpec] = {}
    for name, spec in table.items():
        at = f"{where}.{name}"
        _name(name, at)
        if name in (DEFAULT_PAIR, CUSTOM_PAIR):
            raise UsageError(f"{at}: the names {DEFAULT_PAIR!r} and {CUSTOM_PAIR!r} are reserved; rename the pair.")
        if not isinstance(spec, dict):
            raise UsageError(f"{at} must be a table with base = ..., tuned = ....")
        known = ("base", "tuned", "config_from", "probe", "prompts", "data", "probe_data", "perplexity_data",
                 "f1_data", "thresholds")
        unknown = sorted(set(spec) - set(known))
        if unknown:
            raise UsageError(f"{at}: unknown key(s) {unknown}; known: {', '.join(known)}.")
        for key in ("base", "tuned"):
            if key not in spec:
                raise UsageError(f"{at}: missing {key} = PATH_OR_HUB_NAME.")
        shared = _model_source(spec["config_from"], f"{at}.config_from", base) if "config_from" in spec else None
        pair_base, pair_tuned = resolve_pair_sources(
            _model_source(spec["base"], f"{at}.base", base), _model_source(spec["tuned"], f"{at}.tuned", base),
            shared, where=at)

        def path(key: str, spec: Mapping[str, Any] = spec, at: str = at) -> Path | None:
            return _path(spec[key], f"{at}.{key}", base) if key in spec else None

        pairs[name] = PairSpec(
            name=name, base=pair_base, tuned=pair_tuned, probe=path("probe"), prompts=path("prompts"),
            data=path("data"), probe_data=path("probe_data"), perplexity_data=path("perplexity_data"),
            f1_data=path("f1_data"),
            thresholds={c: t["*"] for c, t in _thresholds(spec.get("thresholds", {}), f"{at}.thresholds").items()},
        )
    return pairs


def _pair_names(value: Any) -> list[str]:
    items = value if isinstance(value, (list, tuple)) else [value]
    return [n.strip() for item in items for n in str(item).split(",") if n.strip()]


def resolve_settings(src: Sources, *, rootdir: Path) -> Settings:
    """Validate every option and build `Settings`; raise `UsageError` on the first bad value.

    Example:
        >>> s = resolve_settings(Sources({"profile": "ci"}, Path("."), {}, Path("."), {}, Path(".")),
        ...                      rootdir=Path("."))
        >>> s.run.profile, [p.name for p in s.pairs]
        ('ci', ['default'])
    """
    def get(key: str) -> tuple[Any, str, Path]:
        return src.get(key)

    profile_v, where, _ = get("profile")
    profile = _choice(profile_v or "smoke", where, PROFILES)
    overrides: dict[str, Any] = {}
    v, where, _ = get("device")
    if v is not None:
        if not _DEVICE.match(str(v)):
            raise UsageError(f"{where}: {v!r} is not a device. Fix: cpu, cuda, cuda:N or mps.")
        _check_device(str(v), where)
        overrides["device"] = str(v)
    v, where, _ = get("dtype")
    if v is not None:
        overrides["dtype"] = _choice(v, where, DTYPES)
    v, where, _ = get("backend")
    if v is not None:
        overrides["backend"] = _choice(v, where, BACKENDS)
    v, where, _ = get("seed")
    if v is not None:
        overrides["seed"] = _number(v, where, int, low=0)
    v, where, _ = get("batch_size")
    if v is not None:
        text = str(v).strip()
        if text != "auto" and not text.isdigit():
            raise UsageError(f"{where}: {v!r} is not a batch size. Fix: a positive int, or auto.")
        overrides["batch_size"] = "auto" if text == "auto" else _number(text, where, int, low=1)
    v, where, _ = get("confidence")
    if v is not None:
        overrides["confidence"] = _number(v, where, float, low=0.0, high=1.0, open_interval=True)
    v, where, _ = get("resamples")
    if v is not None:
        overrides["n_resamples"] = _number(v, where, int, low=1)
    v, where, _ = get("scorer")
    if v is not None:
        overrides["scorer"] = _scorer(v, where)
    v, where, _ = get("inconclusive")
    if v is not None:
        overrides["inconclusive"] = _choice(v, where, INCONCLUSIVE)
    v, where, _ = get("multiplicity")
    if v is not None:
        overrides["multiplicity"] = _choice(v, where, MULTIPLICITIES)
    v, where, _ = get("prompt_truncation")
    if v is not None:
        overrides["prompt_truncation"] = _choice(v, where, ("first", "last"))
    run = run_config(profile, **overrides)
    from mechtests.stats import min_resamples

    fewest = min_resamples(run.confidence)
    if run.n_resamples < fewest:
        source = get("resamples")[1] if "n_resamples" in overrides else f"profile {profile!r}"
        raise UsageError(f"{source}: {run.n_resamples} bootstrap resamples are too few for verdicts at confidence "
                         f"{run.confidence:g} (each tail beyond an interval needs at least 10 replicates). "
                         f"Fix: --mt-resamples {fewest} or more.")

    base_v, base_where, base_dir = get("base")
    tuned_v, tuned_where, tuned_dir = get("tuned")
    if (base_v is None) != (tuned_v is None):
        missing = "--mt-tuned" if tuned_v is None else "--mt-base"
        raise UsageError(f"{missing} is required together with {base_where if base_v is not None else tuned_where}: "
                         "a pair needs both the base and the tuned model.")
    def path_option(key: str) -> Path | None:
        value, at, base = get(key)
        return _path(value, at, base) if value is not None else None

    probe, prompts, data = path_option("probe"), path_option("prompts"), path_option("data")
    probe_data, perplexity_data, f1_data = (path_option(k) for k in ("probe_data", "perplexity_data", "f1_data"))
    if data is not None and not data.is_dir():
        raise UsageError(f"--mt-data: {str(data)!r} is a file, not a directory. Fix: pass the directory, or the file "
                         "with its own option (--mt-prompts, --mt-probe-data, --mt-perplexity-data, --mt-f1-data).")
    v, where, _ = get("all_prompts")
    all_prompts = _flag(v, where) if v is not None else False
    v, where, _ = get("probe_hook")
    probe_hook = None
    if v is not None:
        probe_hook = str(v)
        if probe_hook not in ("resid_final", "ln_final") and not re.fullmatch(r"blocks\.\d+\.hook_resid_post", probe_hook):
            raise UsageError(f"{where}: {probe_hook!r} is not a probe hook. Fix: resid_final, ln_final or "
                             "blocks.L.hook_resid_post.")
    v, where, _ = get("probe_bias")
    probe_bias: float | Literal["fit"] | None = None
    if v is not None:
        probe_bias = "fit" if str(v).strip().lower() == "fit" else _number(v, where, float)
    perspective: dict[str, Any] = {}
    for key, kind, low in (("perspective_url", str, None), ("perspective_qps", float, 0.0),
                           ("perspective_timeout", float, 0.0), ("perspective_retries", int, 0)):
        v, where, _ = get(key)
        if v is None:
            continue
        if run.scorer != "perspective":
            raise UsageError(f"{where} is only read by the perspective scorer, but the scorer is {run.scorer!r}. "
                             "Fix: add --mt-scorer perspective, or drop the option.")
        name = key.removeprefix("perspective_")
        if kind is str:
            if not re.match(r"^https?://[^\s/]+", str(v)):
                raise UsageError(f"{where}: {v!r} is not an http(s) URL.")
            perspective["url"] = str(v)
        else:
            value = _number(v, where, kind, low=low, open_interval=kind is float)
            perspective[{"qps": "qps", "timeout": "timeout_s", "retries": "max_retries"}[name]] = value
    detoxify_v, where, b = get("detoxify_path")
    detoxify_path = _path(detoxify_v, where, b) if detoxify_v is not None else None
    if detoxify_path is not None and run.scorer != "detoxify":
        raise UsageError(f"{where} is only read by the detoxify scorer, but the scorer is {run.scorer!r}. "
                         "Fix: add --mt-scorer detoxify, or drop the path.")

    available: dict[str, PairSpec] = {DEFAULT_PAIR: PairSpec(DEFAULT_PAIR)}
    available.update(_named_pairs(src.tool.get("pairs", {}), src.tool_dir, "[tool.mechtests.pairs]"))
    config_v, config_where, config_dir = get("config_from")
    shared = _model_source(config_v, config_where, config_dir) if config_v is not None else None
    if base_v is not None:
        custom_base, custom_tuned = resolve_pair_sources(
            _model_source(base_v, base_where, base_dir), _model_source(tuned_v, tuned_where, tuned_dir), shared,
            where=f"{base_where}/{tuned_where}")
        available[CUSTOM_PAIR] = PairSpec(CUSTOM_PAIR, custom_base, custom_tuned)
    elif shared is not None:
        raise UsageError(f"{config_where} applies to a state-dict --mt-base/--mt-tuned, and neither is given. "
                         "Fix: add --mt-base and --mt-tuned, or drop it.")
    pair_v, where, _ = get("pair")
    if pair_v is not None:
        names = _pair_names(pair_v)
        if names == ["all"]:
            names = list(available)
    else:
        names = [CUSTOM_PAIR] if base_v is not None else [DEFAULT_PAIR]
    for n in names:
        if n not in available:
            raise UsageError(f"{where}: unknown pair {n!r}. Fix: one of {sorted(available)} "
                             "(define more under [tool.mechtests.pairs.NAME]).")
    pairs = tuple(available[n] for n in dict.fromkeys(names))

    thresholds = _thresholds(src.tool.get("thresholds", {}), "[tool.mechtests.thresholds]")
    json_v, where, b = get("json")
    html_v, where_h, bh = get("html")
    save_v, where_s, _ = get("save")
    compare_v, where_c, bc = get("compare")
    fail_v, where_f, _ = get("compare_fail")
    no_cache_v, where_n, _ = get("no_cache")
    cache_v, where_d, bd = get("cache_dir")
    max_size_v, where_m, _ = get("cache_max_size")
    from mechtests.storage import BaselineStore, parse_compare_fail, parse_size

    cache_max_bytes = parse_size(str(max_size_v), where=where_m) if max_size_v is not None else None

    dir_v, where_bd, bdir = get("baseline_dir")
    baseline_dir = _path(dir_v, where_bd, bdir, must_exist=False) if dir_v is not None else rootdir / ".mechtests" / "baselines"
    if baseline_dir.exists() and not baseline_dir.is_dir():
        raise UsageError(f"{where_bd}: {str(baseline_dir)!r} is a file, not a directory. Fix: give a directory.")
    partial_v, where_sp, _ = get("save_partial")
    save_partial = _flag(partial_v, where_sp) if partial_v is not None else False
    store = BaselineStore(baseline_dir)
    compare = store.resolve(str(compare_v), where=where_c, base=bc) if compare_v is not None else None
    gate_v, where_g, bg = get("gate")
    gate = store.resolve(str(gate_v), where=where_g, base=bg) if gate_v is not None else None
    if gate is not None and compare is not None and gate.resolve() != compare.resolve():
        raise UsageError(f"{where_g} and {where_c} name different baselines ({gate}, {compare}). Fix: give one; "
                         "--mt-gate compares against its baseline itself.")
    tolerances: tuple[Any, ...] = ()
    if fail_v is not None:
        if compare is None and gate is None:
            raise UsageError(f"{where_f} needs --mt-compare NAME|PATH: there is nothing to compare against.")
        tolerances = parse_compare_fail(str(fail_v), where=where_f)
    elif gate is not None:
        tolerances = parse_compare_fail("verdict")  # a gate fails on a worse verdict unless told otherwise
    strict_v, where_st, _ = get("compare_strict")
    compare_strict = _flag(strict_v, where_st) if strict_v is not None else False
    if compare_strict and compare is None and gate is None:
        raise UsageError(f"{where_st} needs --mt-compare or --mt-gate: there is nothing to compare against.")
    no_cache = _flag(no_cache_v, where_n) if no_cache_v is not None else False
    return Settings(
        run=run,
        pairs=pairs,
        thresholds=thresholds,
        rootdir=rootdir,
        json_path=_output(json_v, where, b) if json_v is not None else None,
        html_path=_output(html_v, where_h, bh) if html_v is not None else None,
        save=_name(save_v, where_s) if save_v is not None else None,
        compare=compare,
        compare_fail=str(fail_v) if fail_v is not None else None,
        tolerances=tolerances,
        gate=gate,
        baseline_name=str(gate_v if gate_v is not None else compare_v) if (gate or compare) is not None else None,
        compare_strict=compare_strict,
        baseline_dir=baseline_dir,
        save_partial=save_partial,
        cache_dir=None if no_cache else (_path(cache_v, where_d, bd, must_exist=False) if cache_v is not None
                                         else rootdir / ".mechtests" / "cache"),
        cache_max_bytes=cache_max_bytes,
        probe=probe,
        prompts=prompts,
        data=data,
        probe_data=probe_data,
        perplexity_data=perplexity_data,
        f1_data=f1_data,
        all_prompts=all_prompts,
        probe_hook=probe_hook,
        probe_bias=probe_bias,
        detoxify_path=detoxify_path,
        perspective=perspective,
    )


def with_run(settings: Settings, **changes: Any) -> Settings:
    """A copy of ``settings`` with RunConfig fields changed (tests, programmatic use)."""
    return replace(settings, run=replace(settings.run, **changes))
