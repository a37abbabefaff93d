"""Model sources read exactly as given: directories, state-dict files, hub names.

A *source* is what a user writes after ``--mt-base``/``--mt-tuned``. It is one of

- ``directory``: a Hugging Face checkpoint (config.json, weights, tokenizer);
- ``state_dict``: a weight file (``.safetensors``, ``.bin``, ``.pt``, ``.pth``) holding a state dict,
  bare or nested under ``state`` / ``state_dict`` / ``model`` (Lee et al.'s ``dpo.pt`` is
  ``{"step_idx", "state", "metrics"}``), applied to the config and tokenizer of another source
  (``config_from``: the other model of the pair, or ``--mt-config-from``);
- ``hub``: a Hugging Face hub name, read from the local cache or the hub.

Loading is strict: every parameter of the model must come from the checkpoint with its shape,
and every key of the checkpoint must land somewhere. The only keys that may be dropped are old
GPT-2 attention buffers (``attn.bias``, ``attn.masked_bias``: constant masks, not weights); tied
output embeddings may be absent. Anything else is one :class:`CheckpointError` that names the
path, how many keys were missing/unexpected/mis-shaped, a few of them, and the fix. Weights with
NaN/inf are refused. What was assumed (nesting, dropped buffers, where the config came from) is
kept in a :class:`LoadRecord` for the report.

:func:`inspect_source` does the same checks *without loading weights* (safetensors headers, a
meta-device model for the expected keys), so the plugin can refuse a bad pair at start-up.

Example:
    >>> classify_source("gpt2-medium", Path("."), where="--mt-base").kind
    'hub'
"""

from __future__ import annotations

import difflib
import json
import os
import re
import socket
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlparse

from mechtests.errors import CheckpointError, IncompatiblePairError, UsageError

SourceKind = Literal["directory", "state_dict", "hub"]
WEIGHT_SUFFIXES: tuple[str, ...] = (".safetensors", ".bin", ".pt", ".pth", ".ckpt")
NESTING_KEYS: tuple[str, ...] = ("state", "state_dict", "model")
# Constant causal-mask buffers of old GPT-2 checkpoints: not weights, rebuilt by the model.
DROPPABLE_SUFFIXES: tuple[str, ...] = (".attn.bias", ".attn.masked_bias")
_HUB_NAME = re.compile(r"^[A-Za-z0-9][\w.-]*(/[A-Za-z0-9][\w.-]*)?$")
# Keys of a TransformerLens (HookedTransformer) state dict.
_TL_KEYS = re.compile(r"^(embed\.W_E|pos_embed\.W_pos|unembed\.W_U|blocks\.\d+\.(attn\.W_[QKVO]|mlp\.W_(in|out)))$")
_EXAMPLES = 4


@dataclass(frozen=True)
class ModelSource:
    """Where one model's weights, config and tokenizer come from.

    Attributes:
        location: the directory, file or hub name the weights are read from.
        kind: ``directory`` | ``state_dict`` | ``hub``.
        config_from: for ``state_dict`` sources, the directory or hub name whose config.json and
            tokenizer the weights are applied to (``None`` until the pair resolves it).
    """

    location: str
    kind: SourceKind
    config_from: str | None = None

    @property
    def config_location(self) -> str:
        """Where config.json and the tokenizer are read from."""
        if self.kind != "state_dict":
            return self.location
        if self.config_from is None:
            raise UsageError(f"state-dict file {self.location}: no config to apply it to. Fix: give the "
                             "other model as a checkpoint directory or hub name, or add --mt-config-from DIR_OR_NAME")
        return self.config_from


@dataclass(frozen=True)
class LoadRecord:
    """What loading one model read and assumed (the report's ``inputs`` entry for it)."""

    source: str
    kind: SourceKind
    config_from: str
    weight_files: tuple[str, ...]
    n_tensors: int
    nested_under: str | None = None
    dropped_keys: tuple[str, ...] = ()
    tied_keys_absent: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {"source": self.source, "kind": self.kind, "config_from": self.config_from,
                "weight_files": list(self.weight_files), "n_tensors": self.n_tensors,
                "nested_under": self.nested_under, "dropped_keys": list(self.dropped_keys),
                "tied_keys_absent": list(self.tied_keys_absent)}


# ---- classifying what the user wrote -------------------------------------------------------------

def _looks_like_path(text: str, base_dir: Path) -> bool:
    """A source a user meant as a path: explicit prefixes, weight suffixes, deep paths, or a
    first component that exists here (``models/bse`` when ``models/`` exists)."""
    if text.startswith((".", "/", "~")) or text.count("/") > 1 or (os.sep != "/" and os.sep in text):
        return True
    if text.lower().endswith(WEIGHT_SUFFIXES):
        return True
    first = text.split("/", 1)[0]
    return "/" in text and (base_dir / first).is_dir()


def _missing_path_error(path: Path, where: str) -> CheckpointError:
    parent = path.parent
    hint = ""
    if parent.is_dir():
        close = difflib.get_close_matches(path.name, [p.name for p in parent.iterdir()], n=3)
        if close:
            hint = f"; in {parent} there is {', '.join(close)}"
    return CheckpointError(path, f"no such directory or file (given as {where}){hint}",
                           "point it at a checkpoint directory, a state-dict file (.safetensors/.bin/.pt), "
                           "or a Hugging Face hub name")


def classify_source(text: str | os.PathLike[str], base_dir: Path, *, where: str) -> ModelSource:
    """Decide whether ``text`` is a directory, a state-dict file or a hub name.

    A path-looking source that does not exist is a :class:`UsageError` at once (never taken for
    a hub name and retried for a minute).

    Example:
        >>> classify_source("org/model", Path("."), where="--mt-tuned")
        ModelSource(location='org/model', kind='hub', config_from=None)
    """
    raw = os.fspath(text)
    candidate = Path(os.path.expanduser(raw))
    candidate = candidate if candidate.is_absolute() else base_dir / candidate
    if candidate.is_dir():
        return ModelSource(str(candidate.resolve()), "directory")
    if candidate.is_file():
        if not candidate.name.lower().endswith(WEIGHT_SUFFIXES):
            raise UsageError(f"{where}: {str(candidate)!r} is a file but not a weight file ({', '.join(WEIGHT_SUFFIXES)}). "
                             "Fix: pass the checkpoint directory, or a state-dict file.")
        return ModelSource(str(candidate.resolve()), "state_dict")
    if _looks_like_path(raw, base_dir) or not _HUB_NAME.match(raw):
        raise _missing_path_error(candidate, where)
    return ModelSource(raw, "hub")


def resolve_pair_sources(base: ModelSource, tuned: ModelSource, config_from: ModelSource | None = None,
                         *, where: str = "--mt-base/--mt-tuned") -> tuple[ModelSource, ModelSource]:
    """Give each state-dict source the config it is applied to.

    ``config_from`` (``--mt-config-from``) wins; otherwise a state-dict file takes the config and
    tokenizer of the other model of the pair.

    Raises:
        UsageError: both are state-dict files and no ``config_from`` is given, or ``config_from``
            is itself a state-dict file.
    """
    if config_from is not None and config_from.kind == "state_dict":
        raise UsageError(f"--mt-config-from {config_from.location}: must be a checkpoint directory or hub name "
                         "(config.json + tokenizer), not a weight file.")

    def fill(side: ModelSource, other: ModelSource) -> ModelSource:
        if side.kind != "state_dict":
            return side
        if config_from is not None:
            return replace(side, config_from=config_from.location)
        if other.kind != "state_dict":
            return replace(side, config_from=other.location)
        raise UsageError(
            f"{where}: both models are state-dict files ({base.location}, {tuned.location}), so neither has a "
            "config.json or tokenizer. Fix: add --mt-config-from DIR_OR_HUB_NAME (the checkpoint they were "
            "fine-tuned from, e.g. --mt-config-from=gpt2-medium), or give the base model as a directory or hub name.")

    return fill(base, tuned), fill(tuned, base)


# ---- reading state-dict files --------------------------------------------------------------------

def _is_tensor_dict(obj: Any) -> bool:
    import torch

    return isinstance(obj, Mapping) and bool(obj) and all(isinstance(v, torch.Tensor) for v in obj.values())


def _read_raw(path: Path, *, lazy: bool) -> Any:
    """The file's object: a safetensors dict, or what ``torch.load(weights_only=True)`` returns."""
    import torch

    if not path.is_file():
        raise CheckpointError(path, "no such weight file")
    if path.stat().st_size == 0:
        raise CheckpointError(path, "the weight file is empty", "re-save the checkpoint; the copy was interrupted")
    if path.suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            if lazy:
                return _safetensors_shapes(path)
            return load_file(str(path))
        except (SafetensorError, OSError) as exc:
            raise CheckpointError(path, f"not a readable safetensors file ({exc})",
                                  "re-save it (save_pretrained / safetensors.torch.save_file); the file may be "
                                  "truncated") from exc
    try:
        return torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception as exc:
        try:
            return torch.load(path, map_location="cpu", weights_only=True)  # legacy (non-zip) torch.save files
        except Exception:
            pass
        raise CheckpointError(path, f"not a readable torch weight file ({type(exc).__name__}: {str(exc)[:200]})",
                              "re-save it with torch.save(model.state_dict(), PATH); the file may be truncated or "
                              "not a PyTorch file") from exc


class _Shape:
    """A tensor stand-in from a safetensors header: shape only (no data read)."""

    def __init__(self, shape: Iterable[int]) -> None:
        self.shape = tuple(int(s) for s in shape)


def _safetensors_shapes(path: Path) -> dict[str, _Shape]:
    from safetensors import safe_open

    with safe_open(str(path), "pt") as fh:
        return {key: _Shape(fh.get_slice(key).get_shape()) for key in fh.keys()}  # noqa: SIM118 - safe_open has no __iter__


def unwrap_state_dict(obj: Any, path: Path) -> tuple[dict[str, Any], str | None]:
    """``(state_dict, nested_under)``: a bare dict of tensors, or one nested under a known key.

    Raises:
        CheckpointError: no dict of tensors at the top or under ``state``/``state_dict``/``model``.
    """
    if isinstance(obj, Mapping) and obj and all(isinstance(v, _Shape) for v in obj.values()):
        return dict(obj), None
    if _is_tensor_dict(obj):
        return dict(obj), None
    if isinstance(obj, Mapping):
        for key in NESTING_KEYS:
            if key in obj and _is_tensor_dict(obj[key]):
                return dict(obj[key]), key
        keys = sorted(str(k) for k in obj)[:8]
        raise CheckpointError(path, f"holds a dict without a state dict at the top or under "
                              f"{'/'.join(NESTING_KEYS)} (top-level keys: {keys})",
                              "save model.state_dict() itself, or nest it under 'state'")
    raise CheckpointError(path, f"holds a {type(obj).__name__}, not a state dict",
                          "save model.state_dict() (a dict of tensors)")


def _refuse_transformer_lens(keys: Iterable[str], path: Path) -> None:
    hits = [k for k in keys if _TL_KEYS.match(k)]
    if hits:
        raise CheckpointError(
            path, f"is a TransformerLens (HookedTransformer) state dict (e.g. {hits[:2]}). Its LayerNorm weights "
            "are folded into the next matrices and its weights centred, which cannot be inverted exactly, so it "
            "cannot be read back as the original model",
            "save the Hugging Face model instead (model.save_pretrained(DIR), or torch.save(hf_model.state_dict()))")


def _sample(keys: Iterable[str]) -> str:
    items = sorted(keys)
    more = f" ... (+{len(items) - _EXAMPLES} more)" if len(items) > _EXAMPLES else ""
    return ", ".join(items[:_EXAMPLES]) + more


@dataclass(frozen=True)
class KeyCheck:
    """How a checkpoint's keys meet the model's parameters."""

    missing: tuple[str, ...] = ()
    unexpected: tuple[str, ...] = ()
    mismatched: tuple[str, ...] = ()  # "name: file (a, b) vs model (c, d)"
    dropped: tuple[str, ...] = ()
    tied_absent: tuple[str, ...] = ()
    prefix_added: str | None = None

    def raise_if_bad(self, path: object, *, config_from: str | None = None) -> None:
        if not (self.missing or self.unexpected or self.mismatched):
            return
        parts = []
        if self.missing:
            parts.append(f"{len(self.missing)} parameter(s) missing from the file (e.g. {_sample(self.missing)})")
        if self.unexpected:
            parts.append(f"{len(self.unexpected)} unexpected key(s) (e.g. {_sample(self.unexpected)})")
        if self.mismatched:
            parts.append(f"{len(self.mismatched)} shape mismatch(es) (e.g. {_sample(self.mismatched)})")
        on = f" of {config_from}" if config_from else ""
        raise CheckpointError(path, "its weights do not match the model built from the config" + on + ": "
                              + "; ".join(parts) + ". Loading it would leave randomly initialised weights",
                              "use the config the weights were trained with (--mt-config-from / the other model), "
                              "or re-save the checkpoint with model.save_pretrained(DIR)")


def match_keys(file_shapes: Mapping[str, Any], model_shapes: Mapping[str, tuple[int, ...]], *,
               tied: Mapping[str, str] | None = None, prefix: str = "") -> tuple[dict[str, Any], KeyCheck]:
    """Match a file's keys to the model's parameter names and shapes.

    Args:
        file_shapes: key -> tensor (or anything with ``.shape``).
        model_shapes: parameter name -> shape, as the model expects.
        tied: parameter name -> the name it is tied to (shares storage with); such a name may be
            absent when its partner is present.
        prefix: the model's ``base_model_prefix``; added when no file key carries it but the
            model's names do (a bare base-model state dict, like the hub's ``gpt2``).

    Returns:
        ``(renamed file entries, KeyCheck)``.

    Example:
        >>> _, check = match_keys({"a": _Shape((2,))}, {"a": (2,), "b": (3,)})
        >>> check.missing
        ('b',)
    """
    entries = dict(file_shapes)
    prefix_added = None
    if prefix and not any(k.startswith(prefix + ".") for k in entries) and any(
            k.startswith(prefix + ".") for k in model_shapes):
        renamed = {f"{prefix}.{k}": v for k, v in entries.items()}
        if len(set(renamed) & set(model_shapes)) > len(set(entries) & set(model_shapes)):
            entries, prefix_added = renamed, prefix
    dropped = tuple(sorted(k for k in entries if k not in model_shapes and k.endswith(DROPPABLE_SUFFIXES)))
    for key in dropped:
        del entries[key]
    tied = dict(tied or {})

    def covered(key: str) -> bool:
        return key in tied and tied[key] in entries

    missing = sorted(k for k in model_shapes if k not in entries and not covered(k))
    tied_absent = sorted(k for k in model_shapes if k not in entries and covered(k))
    unexpected = sorted(k for k in entries if k not in model_shapes)
    mismatched = sorted(f"{k}: file {tuple(entries[k].shape)} vs model {tuple(model_shapes[k])}"
                        for k in entries if k in model_shapes and tuple(entries[k].shape) != tuple(model_shapes[k]))
    return entries, KeyCheck(tuple(missing), tuple(unexpected), tuple(mismatched), dropped, tuple(tied_absent),
                             prefix_added)


# ---- configs, tokenizers, expected keys ------------------------------------------------------------

def _hub_reachable(timeout: float = 3.0) -> bool:
    from huggingface_hub import constants

    if constants.HF_HUB_OFFLINE:
        return False
    url = urlparse(constants.ENDPOINT)
    try:
        with socket.create_connection((url.hostname or "", url.port or 443), timeout=timeout):
            return True
    except OSError:
        return False


def _hub_kwargs(location: str) -> dict[str, Any]:
    """For a hub name: read the local cache when the hub is unreachable (fail at once, not after a
    minute of retries). Nothing for local paths."""
    if Path(location).exists():
        return {}
    from huggingface_hub import try_to_load_from_cache

    cached = try_to_load_from_cache(location, "config.json")
    if isinstance(cached, str):
        return {"local_files_only": not _hub_reachable()}
    if not _hub_reachable():
        raise CheckpointError(location, "is not a local path, is not in the Hugging Face cache, and the hub is "
                              "unreachable from this machine",
                              "download it where the hub is reachable (huggingface-cli download NAME --local-dir DIR) "
                              "and pass DIR, or point HF_HOME at a cache that holds it")
    return {}


def load_config(location: str) -> Any:
    """The Hugging Face config at a directory or hub name, as a :class:`CheckpointError` if absent."""
    from transformers import AutoConfig

    path = Path(location)
    if path.exists() and not (path / "config.json").is_file():
        raise CheckpointError(path, "has no config.json, so it is not a Hugging Face checkpoint",
                              "save the model with model.save_pretrained(DIR), or pass a state-dict file with "
                              "--mt-config-from naming its config")
    try:
        return AutoConfig.from_pretrained(location, **_hub_kwargs(location))
    except CheckpointError:
        raise
    except Exception as exc:
        raise CheckpointError(location, f"cannot read config.json ({type(exc).__name__}: {str(exc)[:200]})",
                              "re-save the checkpoint with model.save_pretrained(DIR)") from exc


def load_tokenizer(location: str, n_embeddings: int | None = None) -> Any:
    """The tokenizer saved with a checkpoint; refused when missing or larger than the embedding."""
    from transformers import AutoTokenizer

    fix = "save the tokenizer next to the weights (tokenizer.save_pretrained(DIR))"
    try:
        tokenizer = AutoTokenizer.from_pretrained(location, **_hub_kwargs(location))
    except CheckpointError:
        raise
    except Exception as exc:
        raise CheckpointError(location, f"cannot load the tokenizer ({type(exc).__name__}: {str(exc)[:200]})", fix) from exc
    if len(tokenizer) <= 1:
        # transformers builds an empty tokenizer when the files are missing instead of failing.
        raise CheckpointError(location, "has no usable tokenizer (tokenizer.json / vocab files missing)", fix)
    if n_embeddings is not None and len(tokenizer) > n_embeddings:
        raise CheckpointError(location, f"tokenizer has {len(tokenizer)} tokens but the model embeds only {n_embeddings}",
                              "save the tokenizer the model was trained with")
    return tokenizer


def expected_parameters(config: Any) -> tuple[dict[str, tuple[int, ...]], dict[str, str], str]:
    """``(parameter name -> shape, tied name -> partner, base_model_prefix)`` of the model a config builds
    (on the meta device: no memory, no initialisation)."""
    return _expected(_meta_model(config))


def _expected(model: Any) -> tuple[dict[str, tuple[int, ...]], dict[str, str], str]:
    shapes = {name: tuple(t.shape) for name, t in model.state_dict().items()}
    return shapes, _tied_names(model), str(getattr(model, "base_model_prefix", "") or "")


def _meta_model(config: Any) -> Any:
    import torch
    from transformers import AutoModelForCausalLM

    with torch.device("meta"):
        return AutoModelForCausalLM.from_config(config)


def _tied_names(model: Any) -> dict[str, str]:
    """Tied parameter name -> the earlier name it shares storage with (tied output embeddings)."""
    seen: dict[int, str] = {}
    tied: dict[str, str] = {}
    for name, param in model.named_parameters(remove_duplicate=False):
        if id(param) in seen:
            tied[name] = seen[id(param)]
        else:
            seen[id(param)] = name
    return tied


def transformers_key_renames(model: Any, keys: Iterable[str], where: object) -> dict[str, str]:
    """``{file key: model key}`` for the keys transformers itself renames when it loads this model
    (its checkpoint conversion mapping: e.g. EXAONE's ``transformer.h.*`` -> ``model.layers.*``,
    legacy ``LayerNorm.gamma`` -> ``.weight``), so the strict key check reads such a checkpoint as
    ``from_pretrained`` does instead of refusing it.

    Raises:
        CheckpointError: a key that transformers would merge or split with others (a converter, not
            a renaming): its tensors cannot be checked key by key.
    """
    try:
        from transformers.conversion_mapping import get_model_conversion_mapping
        from transformers.core_model_loading import WeightConverter, WeightRenaming, rename_source_key
    except ImportError:  # a transformers without conversion mappings renames nothing
        return {}
    transforms = get_model_conversion_mapping(model)
    renamings = [t for t in transforms if isinstance(t, WeightRenaming)]
    converters = [t for t in transforms if isinstance(t, WeightConverter)]
    renames: dict[str, str] = {}
    for key in keys:
        new, converter = rename_source_key(key, renamings, converters)
        if converter is not None:
            raise CheckpointError(where, f"key {key!r} is one that transformers merges or splits with others when it "
                                  f"loads a {getattr(model.config, 'model_type', '?')} checkpoint, so its weights "
                                  "cannot be checked key by key",
                                  "pass the checkpoint directory without nesting (transformers converts it when "
                                  "loading, checked strictly), or save torch.save(model.state_dict()) of the loaded model")
        if new != key:
            renames[key] = new
    return renames


# ---- weight files of a directory ------------------------------------------------------------------

def directory_weight_files(directory: Path) -> list[Path]:
    """The weight files a Hugging Face directory holds (sharded indexes resolved), safetensors first."""
    for index_name, single in (("model.safetensors.index.json", "model.safetensors"),
                               ("pytorch_model.bin.index.json", "pytorch_model.bin")):
        index = directory / index_name
        if index.is_file():
            try:
                weight_map = json.loads(index.read_text())["weight_map"]
            except (OSError, ValueError, KeyError, TypeError) as exc:
                raise CheckpointError(index, f"not a readable shard index ({exc})",
                                      "re-save the checkpoint with model.save_pretrained(DIR)") from exc
            files = [directory / name for name in sorted(set(weight_map.values()))]
            absent = [f.name for f in files if not f.is_file()]
            if absent:
                raise CheckpointError(directory, f"shard index names missing file(s) {absent[:3]}",
                                      "copy every shard next to the index")
            return files
        if (directory / single).is_file():
            return [directory / single]
    raise CheckpointError(directory, "holds no weights (model.safetensors or pytorch_model.bin)",
                          "save the model with model.save_pretrained(DIR)")


def _renamed(entries: Mapping[str, Any], renames: Mapping[str, str], where: object) -> dict[str, Any]:
    """``entries`` under their renamed keys; two file keys landing on one name are refused (one
    of them would be silently dropped)."""
    out: dict[str, Any] = {}
    origin: dict[str, str] = {}
    for key, value in entries.items():
        name = renames.get(key, key)
        if name in out:
            raise CheckpointError(where, f"keys {origin[name]!r} and {key!r} both load as {name!r} (transformers renames "
                                  "old key names on load), so one of them would be silently dropped",
                                  "re-save the checkpoint with model.save_pretrained(DIR) so each weight appears once")
        out[name], origin[name] = value, key
    return out


def _file_entries(files: list[Path], *, lazy: bool) -> tuple[dict[str, Any], str | None]:
    entries: dict[str, Any] = {}
    nested = None
    for file in files:
        state, nested_under = unwrap_state_dict(_read_raw(file, lazy=lazy), file)
        nested = nested or nested_under
        entries.update(state)
    _refuse_transformer_lens(entries, files[0])
    return entries, nested


# ---- inspecting without loading (pre-flight) --------------------------------------------------------

@dataclass(frozen=True)
class ModelFacts:
    """What two models must share to be compared neuron by neuron (from config + tokenizer)."""

    model_type: str
    n_layers: int
    d_model: int
    d_mlp: int
    d_vocab: int
    n_ctx: int
    tokenizer_size: int
    tokenizer_vocab: str
    tokenizer_start: tuple[int, ...] = ()  # the ids put before every text (`data.start_tokens`: a BOS)

    COMPARED = ("model_type", "n_layers", "d_model", "d_mlp", "d_vocab", "n_ctx", "tokenizer_size", "tokenizer_vocab",
                "tokenizer_start")


def _config_int(config: Any, *names: str, default: int | None = None) -> int:
    text = config.get_text_config() if hasattr(config, "get_text_config") else config
    for name in names:
        value = getattr(text, name, None)
        if value is not None:
            return int(value)
    if default is None:
        raise UsageError(f"config of model type {getattr(config, 'model_type', '?')} has none of {names}")
    return default


# Config fields that count a mixture-of-experts MLP's experts (Mixtral, Granite-MoE, GPT-OSS, Llama-4:
# num_local_experts; Qwen-MoE, OLMoE: num_experts; DeepSeek: n_routed_experts).
MOE_EXPERT_FIELDS: tuple[str, ...] = ("num_local_experts", "num_experts", "n_routed_experts", "moe_num_experts")


def refuse_mixture_of_experts(config: Any, location: str) -> None:
    """Refuse a config whose MLPs are routed experts: a neuron index names no unit every token uses,
    and the papers' neuron analysis (rows of one ``W_out`` per layer) is not defined for it.

    Checked from the config alone, before any weights (a MoE checkpoint's saved keys would
    otherwise be refused as a mismatch, with the wrong fix).

    Example:
        >>> from transformers import MixtralConfig
        >>> refuse_mixture_of_experts(MixtralConfig(num_local_experts=8), "mixtral")
        Traceback (most recent call last):
        ...
        mechtests.errors.UsageError: mixtral: a mixture-of-experts model (mixtral, num_local_experts=8)...
    """
    text = config.get_text_config() if hasattr(config, "get_text_config") else config
    for name in MOE_EXPERT_FIELDS:
        value = getattr(text, name, None)
        if isinstance(value, int) and not isinstance(value, bool) and value > 1:
            raise UsageError(
                f"{location}: a mixture-of-experts model ({getattr(config, 'model_type', '?')}, {name}={value}). Its MLPs "
                "are routed experts, so a neuron index does not name one unit of the model and mechtests' per-neuron "
                "statistics (activations, value vectors, ablations) are not defined for it. Fix: compare dense models "
                "(GPT-2, Llama, Mistral, Qwen2, ...)")


def tokenizer_signature(tokenizer: Any) -> str:
    """sha256 prefix of the tokenizer's (index, token) table."""
    import hashlib

    digest = hashlib.sha256()
    for token, index in sorted(tokenizer.get_vocab().items(), key=lambda kv: kv[1]):
        digest.update(f"{index}\t{token}\n".encode())
    return digest.hexdigest()[:16]


def facts_from(config: Any, tokenizer: Any) -> ModelFacts:
    """:class:`ModelFacts` of a config and tokenizer."""
    from mechtests.data import start_tokens

    d_model = _config_int(config, "hidden_size", "n_embd", "d_model")
    return ModelFacts(
        model_type=str(getattr(config, "model_type", "")),
        n_layers=_config_int(config, "num_hidden_layers", "n_layer"),
        d_model=d_model,
        d_mlp=_config_int(config, "intermediate_size", "n_inner", default=4 * d_model),
        d_vocab=_config_int(config, "vocab_size"),
        n_ctx=_config_int(config, "max_position_embeddings", "n_positions", "n_ctx"),
        tokenizer_size=len(tokenizer),
        tokenizer_vocab=tokenizer_signature(tokenizer),
        tokenizer_start=start_tokens(tokenizer),
    )


def compare_facts(base: ModelFacts, tuned: ModelFacts, *, where: str) -> None:
    """Raise :class:`IncompatiblePairError` naming the first field the two models differ in."""
    labels = {"tokenizer_size": "tokenizer vocabulary size", "tokenizer_vocab": "tokenizer vocabulary (sha256 prefix)",
              # each model reads the prompts with its own tokenizer: a BOS on one side only would confound the pair
              "tokenizer_start": "tokens the tokenizer puts before every text (a BOS)"}
    for name in ModelFacts.COMPARED:
        b, t = getattr(base, name), getattr(tuned, name)
        if b != t:
            raise IncompatiblePairError(labels.get(name, name), b, t, where)


@dataclass(frozen=True)
class Inspection:
    """Pre-flight facts of one source: its config/tokenizer facts and the weight files checked."""

    source: ModelSource
    facts: ModelFacts
    weight_files: tuple[str, ...]
    nested_under: str | None
    check: KeyCheck


def inspect_source(source: ModelSource) -> Inspection:
    """Check one model source without loading its weights: config, tokenizer, weight key set and shapes.

    Hub sources are checked for config and tokenizer only (their weights are fetched at load).

    Raises:
        CheckpointError: any problem, naming the path and the fix.
    """
    config = load_config(source.config_location)
    refuse_mixture_of_experts(config, source.location)
    tokenizer = load_tokenizer(source.config_location)
    facts = facts_from(config, tokenizer)
    if facts.tokenizer_size > facts.d_vocab:
        raise CheckpointError(source.config_location, f"tokenizer has {facts.tokenizer_size} tokens but the model "
                              f"embeds only {facts.d_vocab}", "save the tokenizer the model was trained with")
    if source.kind == "hub":
        return Inspection(source, facts, (), None, KeyCheck())
    files = directory_weight_files(Path(source.location)) if source.kind == "directory" else [Path(source.location)]
    entries, nested = _file_entries(files, lazy=True)
    meta = _meta_model(config)
    shapes, tied, prefix = _expected(meta)
    entries = _renamed(entries, transformers_key_renames(meta, entries, source.location), source.location)
    _, check = match_keys(entries, shapes, tied=tied, prefix=prefix)
    check.raise_if_bad(source.location, config_from=source.config_from)
    for file in files:
        _check_file_finite(file)
    return Inspection(source, facts, tuple(str(f) for f in files), nested, check)


def _check_file_finite(file: Path) -> None:
    """Refuse NaN/inf weights before any model is built, one tensor in memory at a time."""
    if file.suffix == ".safetensors":
        from safetensors import safe_open

        with safe_open(str(file), "pt") as fh:
            for key in fh.keys():  # noqa: SIM118 - safe_open has no __iter__
                check_finite({key: fh.get_tensor(key)}, file)
    else:  # torch files are memory-mapped where possible (zip format)
        state, _ = unwrap_state_dict(_read_raw(file, lazy=True), file)
        check_finite(state, file)


# ---- loading -------------------------------------------------------------------------------------

def check_finite(state: Mapping[str, Any], where: object) -> None:
    """Refuse weights with NaN/inf: every result computed from them would be meaningless."""
    import torch

    for name, tensor in state.items():
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            bad = int((~torch.isfinite(tensor)).sum())
            raise CheckpointError(where, f"weight {name} holds {bad} NaN/inf value(s)",
                                  "use a checkpoint saved before training diverged")


def load_hf_model(source: ModelSource, dtype: Any) -> tuple[Any, Any, LoadRecord]:
    """Load a Hugging Face causal LM strictly (module docstring): ``(model, tokenizer, record)``.

    Raises:
        CheckpointError: missing/unexpected/mis-shaped keys, unreadable files, NaN/inf weights,
            a missing tokenizer.
    """
    import torch
    from transformers import AutoModelForCausalLM

    config = load_config(source.config_location)
    refuse_mixture_of_experts(config, source.location)
    if source.kind == "directory":
        files = directory_weight_files(Path(source.location))
        entries, nested = _file_entries(files, lazy=True)
        if nested is not None:
            source = replace(source, kind="state_dict", config_from=source.location)
        else:
            del entries
    if source.kind == "state_dict":
        files = directory_weight_files(Path(source.location)) if Path(source.location).is_dir() else [Path(source.location)]
        entries, nested = _file_entries(files, lazy=False)
        with torch.random.fork_rng(devices=[]):
            model = AutoModelForCausalLM.from_config(config, dtype=dtype)
        shapes = {name: tuple(t.shape) for name, t in model.state_dict().items()}
        entries = _renamed(entries, transformers_key_renames(model, entries, source.location), source.location)
        renamed, check = match_keys(entries, shapes, tied=_tied_names(model),
                                    prefix=str(getattr(model, "base_model_prefix", "") or ""))
        check.raise_if_bad(source.location, config_from=source.config_from)
        _check_tied_agree(model, renamed, source.location)
        model.load_state_dict(renamed, strict=False)
        if getattr(config, "tie_word_embeddings", False):
            model.tie_weights()
        record = LoadRecord(source.location, "state_dict", source.config_location, tuple(str(f) for f in files),
                            len(renamed), nested, check.dropped, check.tied_absent)
    else:
        try:
            loaded: Any = AutoModelForCausalLM.from_pretrained(
                source.location, dtype=dtype, output_loading_info=True, **_hub_kwargs(source.location))
            model, info = loaded
        except CheckpointError:
            raise
        except Exception as exc:
            raise CheckpointError(source.location, f"cannot load the weights ({type(exc).__name__}: {str(exc)[:300]})",
                                  "re-save the checkpoint with model.save_pretrained(DIR); the files may be truncated "
                                  "or corrupt") from exc
        unexpected = [k for k in info.get("unexpected_keys", ()) if not str(k).endswith(DROPPABLE_SUFFIXES)]
        mismatched = [f"{k}: file {tuple(a)} vs model {tuple(b)}" if isinstance(k, str) else str(k)
                      for k, a, b in _mismatches(info.get("mismatched_keys", ()))]
        check = KeyCheck(tuple(sorted(info.get("missing_keys", ()))), tuple(sorted(unexpected)), tuple(mismatched),
                         tuple(sorted(k for k in info.get("unexpected_keys", ()) if str(k).endswith(DROPPABLE_SUFFIXES))))
        check.raise_if_bad(source.location)
        if info.get("error_msgs"):
            raise CheckpointError(source.location, f"loading reported errors: {list(info['error_msgs'])[:2]}",
                                  "re-save the checkpoint with model.save_pretrained(DIR)")
        files = directory_weight_files(Path(source.location)) if source.kind == "directory" else []
        record = LoadRecord(source.location, source.kind, source.location, tuple(str(f) for f in files),
                            len(model.state_dict()), None, check.dropped, ())
    check_finite(model.state_dict(), source.location)
    n_embeddings = int(model.get_input_embeddings().weight.shape[0])
    tokenizer = load_tokenizer(source.config_location, n_embeddings)
    model.eval()
    return model, tokenizer, record


def _mismatches(items: Iterable[Any]) -> list[tuple[Any, Any, Any]]:
    out = []
    for item in items:
        if isinstance(item, (tuple, list)) and len(item) == 3:
            out.append((item[0], item[1], item[2]))
        else:
            out.append((str(item), (), ()))
    return out


def _check_tied_agree(model: Any, entries: Mapping[str, Any], where: str) -> None:
    """A file holding both halves of a tied pair with different values cannot be loaded as saved."""
    import torch

    groups: dict[int, list[str]] = {}
    for name, param in model.named_parameters(remove_duplicate=False):
        groups.setdefault(id(param), []).append(name)
    for names in groups.values():
        present = [n for n in names if n in entries]
        for other in present[1:]:
            if not torch.equal(entries[present[0]].float(), entries[other].float()):
                raise CheckpointError(where, f"{present[0]} and {other} differ, but the config ties them "
                                      "(tie_word_embeddings), so one of them would be silently discarded",
                                      "set tie_word_embeddings=false in the config the file is applied to, or save "
                                      "the tied model")
