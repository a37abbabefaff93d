"""Start-up checks of every input a run will read, before any model is loaded.

For each pair a run uses: both model sources (config, tokenizer, weight files' key sets and
shapes, without reading the weights: ``checkpoints.inspect_source``), their compatibility, whether
the generation protocol fits the context, the probe file (readable, width, finite; a bias or
data to fit one), and every data file with a source (read and parsed, so counts are known).
Data roles that the selected tests declare with ``@pytest.mark.mechtests_data(ROLE, ...)`` must
have a source. Any problem is one :class:`UsageError` with the cause and the fix; the plugin turns
it into pytest's usage error (exit 4) instead of a fixture error per test, minutes later.

Example:
    >>> checked = preflight_pair(settings, spec, zoo=zoo, needed_roles={"challenge"})  # doctest: +SKIP
    >>> checked.lines()  # doctest: +SKIP
    ['pair default: base directory .../zoo/base (gpt2, 4 layers, d_model 256, d_mlp 1024)', ...]
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mechtests.checkpoints import Inspection, ModelSource, compare_facts, inspect_source
from mechtests.config import PairSpec, Settings
from mechtests.errors import UsageError
from mechtests.eval_data import ROLE_OPTIONS, ROLES, DataSources, EvalData, resolve_sources

if TYPE_CHECKING:
    from mechtests.zoo import ZooPair

DATA_MARKER = "mechtests_data"
# In the needs of a pair, besides data roles: which fixtures the selected tests use (transitively).
USES_MODELS, USES_DATA, USES_PROBE = "@models", "@data", "@probe"
EVERYTHING = frozenset({USES_MODELS, USES_DATA, USES_PROBE})


@dataclass
class CheckedPair:
    """What pre-flight found for one pair: the inspected models, probe facts and the data read."""

    name: str
    base: Inspection | None
    tuned: Inspection | None
    data: EvalData
    probe: dict[str, Any] | None = None
    lines_: list[str] = field(default_factory=list)

    def inputs(self) -> dict[str, Any]:
        """The report's ``inputs`` entry (models as inspected, probe file, data provenance)."""
        def model(ins: Inspection) -> dict[str, Any]:
            src = ins.source
            return {"source": src.location, "kind": src.kind, "config_from": src.config_location,
                    "weight_files": list(ins.weight_files), "nested_under": ins.nested_under,
                    "dropped_keys": list(ins.check.dropped), "model_type": ins.facts.model_type,
                    "n_layers": ins.facts.n_layers, "d_model": ins.facts.d_model, "d_mlp": ins.facts.d_mlp}

        out: dict[str, Any] = {"probe": self.probe, "data": self.data.provenance()}
        if self.base is not None and self.tuned is not None:
            out.update(base=model(self.base), tuned=model(self.tuned))
        return out

    def lines(self) -> list[str]:
        return list(self.lines_)


def _describe(role: str, ins: Inspection) -> str:
    f = ins.facts
    src = ins.source
    what = (f"state dict {src.location}" + (f" (nested under {ins.nested_under!r})" if ins.nested_under else "")
            + f" on the config and tokenizer of {src.config_from}") if src.kind == "state_dict" else (
        f"{src.kind} {src.location}" + (f" (weights nested under {ins.nested_under!r})" if ins.nested_under else ""))
    dropped = f"; {len(ins.check.dropped)} old GPT-2 attention buffer(s) dropped" if ins.check.dropped else ""
    start = f"; every text starts with token id(s) {list(f.tokenizer_start)} (the tokenizer's BOS)" if f.tokenizer_start else ""
    return (f"  {role}: {what} ({f.model_type}, {f.n_layers} layers, d_model {f.d_model}, d_mlp {f.d_mlp})"
            f"{dropped}{start}")


def _inspect(source: ModelSource, memo: dict[ModelSource, Inspection]) -> Inspection:
    if source not in memo:
        memo[source] = inspect_source(source)
    return memo[source]


def pair_sources(spec: PairSpec, zoo: ZooPair | None) -> tuple[ModelSource, ModelSource]:
    """The two sources of a configured pair; the embedded pair's directories for ``default``."""
    if spec.base is None or spec.tuned is None:
        if zoo is None:  # a caller's mistake, not a user's: only the embedded pair has no sources
            raise UsageError(f"pair {spec.name!r} names no base/tuned model and no embedded pair was given. "
                             "Fix: set both --mt-base and --mt-tuned (or the pair's base/tuned keys).")
        return ModelSource(str(zoo.base_dir), "directory"), ModelSource(str(zoo.tuned_dir), "directory")
    return spec.base, spec.tuned


def data_sources(settings: Settings, spec: PairSpec, zoo_data: Path) -> DataSources:
    """Where each data role of ``spec`` comes from (``eval_data.resolve_sources``)."""
    directory, where = settings.data_directory(spec)
    return resolve_sources(settings.data_paths(spec), directory, directory_where=where, default_directory=zoo_data,
                           all_prompts=settings.all_prompts)


def preflight_pair(settings: Settings, spec: PairSpec, *, zoo: ZooPair | None, zoo_data: Path,
                   needed_roles: Iterable[str] | None = None,
                   memo: dict[ModelSource, Inspection] | None = None) -> CheckedPair:
    """Check one pair and its data (module docstring).

    Args:
        needed_roles: what the selected tests use: data roles they declare (each must have a
            source) and the ``USES_*`` flags (models, data, probe fixtures). ``None``: everything.

    Raises:
        UsageError (CheckpointError, IncompatiblePairError, DataError): the first problem found.
    """
    memo = {} if memo is None else memo
    needed = set(EVERYTHING if needed_roles is None else needed_roles)
    run = settings.run
    lines = [f"mechtests: pair {spec.name}:"]
    base = tuned = None
    if USES_MODELS in needed:
        base_src, tuned_src = pair_sources(spec, zoo)
        base, tuned = _inspect(base_src, memo), _inspect(tuned_src, memo)
        where = f"pair {spec.name!r}: base={base_src.location}, tuned={tuned_src.location}"
        compare_facts(base.facts, tuned.facts, where=where)
        needed_ctx = run.max_prompt_tokens + run.max_new_tokens
        if needed_ctx > base.facts.n_ctx:
            raise UsageError(f"{where}: the models' context is {base.facts.n_ctx} tokens, but the protocol needs "
                             f"{run.max_prompt_tokens} prompt + {run.max_new_tokens} generated = {needed_ctx}. "
                             "Fix: use models with a context of at least that many tokens")
        lines += [_describe("base", base), _describe("tuned", tuned)]
    data = EvalData(sources=data_sources(settings, spec, zoo_data))
    roles = needed & set(ROLES)
    if USES_DATA in needed or roles:
        for role in ROLES:
            if data.available(role):
                data.load(role)  # parse now: a malformed file is a start-up error, and counts are known
        for missing in sorted(roles - {r for r in ROLES if data.available(r)}):
            data.load(missing)  # raises the DataError that names the option providing it
    checked = CheckedPair(spec.name, base, tuned, data)
    if base is not None:
        checked.probe = _check_probe(settings, spec, zoo, base, data, lines, needed=USES_PROBE in needed)
    used = {"challenge": run.n_prompts, "f1": run.n_f1, "probe": run.n_probe_eval}
    units = {"challenge": "prompts", "probe": "labelled texts", "f1": "items"}
    if not (USES_DATA in needed or roles):
        checked.lines_ = lines
        return checked
    for name, info in data.provenance().items():
        if info.get("sha256"):
            size = f", {info['count']} {units[name]}" if name in units else ""
            limit = used.get(name)
            if limit is not None and limit < info["count"]:
                size += f" (profile {run.profile} uses the first {limit})"
            note = f"; {info['note']}" if info.get("note") else ""
            lines.append(f"  {name}: {info['path']} ({info['format']}{size}{note}) [{info['origin']}]")
    for name in ROLES:
        if not data.available(name):
            lines.append(f"  {name}: none ({data.sources.missing.get(name)}; claims needing it will say so)")
    checked.lines_ = lines
    return checked


def probe_file(settings: Settings, spec: PairSpec, zoo: ZooPair | None) -> Path | None:
    """The probe file a pair uses: ``--mt-probe``, else the pair's ``probe``, else for the embedded
    pair its toxicity probe — unless labelled probe data was given for it (``--mt-probe-data`` or
    the pair's ``probe_data``): that is another concept's data, so a probe is trained on it rather
    than checked against a toxicity probe. None: a probe is trained on the probe data."""
    explicit = settings.probe or spec.probe
    if explicit is not None:
        return explicit
    if spec.is_default and zoo is not None and settings.data_paths(spec)["probe"] is None:
        return Path(zoo.probe_path)
    return None


def _check_probe(settings: Settings, spec: PairSpec, zoo: ZooPair | None, base: Inspection, data: EvalData,
                 lines: list[str], *, needed: bool) -> dict[str, Any] | None:
    """A given probe file is always checked; what it lacks matters only when a test uses it."""
    from mechtests.probes import load_probe

    path = probe_file(settings, spec, zoo)
    if path is None:
        if not needed:
            return None
        if not data.available("probe"):
            raise UsageError(f"pair {spec.name!r}: no probe is given and there is no labelled probe data to train one. "
                             f"Fix: pass --mt-probe FILE, or {ROLE_OPTIONS['probe']} FILE (or probe.jsonl in --mt-data)")
        because = (" (labelled probe data was given, so the embedded pair's toxicity probe is not used)"
                   if spec.is_default else "")
        lines.append(f"  probe: trained on the probe data with the base model (seed {settings.run.seed}){because}")
        return {"source": None, "trained": True}
    bias = settings.probe_bias if isinstance(settings.probe_bias, float) else None
    probe = load_probe(path, d_model=base.facts.d_model, hook_name=settings.probe_hook, bias=bias)
    hook = probe.hook_name or "resid_final"
    if hook.startswith("blocks."):
        layer = int(hook.split(".")[1])
        if layer >= base.facts.n_layers:
            raise UsageError(f"--mt-probe-hook {hook}: layer {layer} is out of range; the models have layers "
                             f"0..{base.facts.n_layers - 1}")
    meta = probe.metadata
    if needed and meta["bias_source"] == "missing" and not data.available("probe"):
        raise UsageError(f"probe {path}: the file has no bias and there is no labelled probe data to fit one. Fix: pass "
                         f"--mt-probe-bias NUMBER, or {ROLE_OPTIONS['probe']} FILE to fit it")
    bias_text = {"file": f"bias {probe.bias:.4g} from the file", "option": f"bias {probe.bias:.4g} from --mt-probe-bias",
                 "missing": "no bias in the file: fitted on the probe data's training split"}[meta["bias_source"]]
    hook_text = {"file": "hook from the file", "option": "hook from --mt-probe-hook",
                 "default": "hook not in the file: default resid_final (before the final LayerNorm)"}[meta["hook_source"]]
    lines.append(f"  probe: {path} ({meta['format']}; {hook} [{hook_text}]; {probe.pooling} pooling; {bias_text})")
    return {k: meta.get(k) for k in ("source", "sha256", "format", "hook_source", "bias_source")} | {
        "hook": hook, "pooling": probe.pooling}


def needed_by_items(items: Iterable[Any]) -> dict[str, set[str]]:
    """pair name -> the data roles the selected items declare (``mechtests_data`` markers), for
    every pair some selected item runs on."""
    needs: dict[str, set[str]] = {}
    for item in items:
        callspec = getattr(item, "callspec", None)
        pair = callspec.params.get("mt_pair") if callspec is not None else None
        if pair is None:
            continue
        roles = needs.setdefault(str(pair), set())
        names = set(getattr(item, "fixturenames", ()))
        roles.update(flag for flag, fixture in ((USES_MODELS, "model_pair"), (USES_DATA, "eval_data"),
                                                (USES_PROBE, "probe")) if fixture in names)
        for mark in item.iter_markers(DATA_MARKER):
            for role in mark.args:
                if role not in ROLES:
                    raise UsageError(f"{item.nodeid}: @pytest.mark.{DATA_MARKER}({role!r}): unknown data role; "
                                     f"known: {', '.join(ROLES)}")
                roles.add(role)
    return needs
