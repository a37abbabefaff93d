"""A linear (logistic-regression) probe on the residual stream, pooled over real tokens.

A probe says what it is: its direction, bias, the hook it reads (``resid_final``: the last block's
output, before the final LayerNorm — Lee et al.'s ``probe.pt``; ``ln_final``: after it — Hugging
Face's ``hidden_states[-1]``, the reference paper's ``clf.coef_``; or ``blocks.L.hook_resid_post``)
and its pooling (``mean`` over real tokens, or the ``last`` token). Files from elsewhere carry
only a direction: :func:`load_probe` records what it assumed for the rest, and
:func:`fit_intercept` / :func:`check_probe_sign` fit a missing bias on labelled data and refuse a
probe that points the wrong way.

Example:
    >>> fit = train_probe(model, labelled, seed=0)
    >>> fit.test_accuracy >= 0.9  # held-out accuracy on the tiny example model
    True
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from mechtests.data import TextSet, left_padded_batch, masked_mean, start_tokens, without_start_tokens
from mechtests.errors import DataError, NumericalError, UsageError

if TYPE_CHECKING:
    from mechtests.models import LoadedModel

PROBE_FORMAT = "mechtests-probe/1"
HOOK_ALIASES: tuple[str, ...] = ("resid_final", "ln_final")
POOLINGS: tuple[str, ...] = ("mean", "last")
# Keys a plain probe dict may carry (the first of each group is the canonical one).
_DICT_KEYS = {"weight": ("weight", "direction", "coef", "coef_", "probe"), "bias": ("bias", "intercept", "intercept_"),
              "hook_name": ("hook_name", "hook"), "pooling": ("pooling",), "metadata": ("metadata",)}


@dataclass(frozen=True, eq=False)
class Probe:
    """``logit = pooled_residual . weight + bias``; positive logit = the probed class (toxic).

    Attributes:
        weight: ``[d_model]`` float32 (cpu).
        bias: the intercept.
        hook_name: where the residual is read: ``None`` or ``"resid_final"`` (last block's
            ``hook_resid_post``, before the final LayerNorm), ``"ln_final"`` (after it), or a
            hook name such as ``blocks.3.hook_resid_post``.
        metadata: free-form facts (training data hash, accuracy, seed, what was assumed ...).
        pooling: ``"mean"`` over real tokens, or ``"last"`` (the last real token).
    """

    weight: torch.Tensor
    bias: float = 0.0
    hook_name: str | None = None
    metadata: Mapping[str, Any] = field(default_factory=dict)
    pooling: str = "mean"

    def __post_init__(self) -> None:
        weight = torch.as_tensor(self.weight).detach().to("cpu", torch.float32).reshape(-1)
        if weight.numel() == 0:
            raise UsageError("probe weight is empty")
        if not bool(torch.isfinite(weight).all()) or not np.isfinite(self.bias):
            raise NumericalError("probe weight or bias contains NaN/inf")
        if float(weight.norm()) == 0.0:
            raise UsageError("probe weight is all zeros: it has no direction")
        if self.pooling not in POOLINGS:
            raise UsageError(f"probe pooling must be one of {', '.join(POOLINGS)}, got {self.pooling!r}")
        object.__setattr__(self, "weight", weight)
        object.__setattr__(self, "bias", float(self.bias))
        object.__setattr__(self, "metadata", dict(self.metadata))  # a copy: callers cannot alter it

    @property
    def d_model(self) -> int:
        return int(self.weight.numel())

    def hook(self, model: LoadedModel) -> str:
        """The hook name this probe reads on ``model``."""
        return resolve_probe_hook(model, self.hook_name)

    @property
    def direction(self) -> torch.Tensor:
        """Unit vector along ``weight`` (cpu float32)."""
        return self.weight / self.weight.norm()

    def predict_logits(self, pooled: torch.Tensor) -> torch.Tensor:
        """Logits for pooled residuals ``[N, d_model]``."""
        if pooled.shape[-1] != self.d_model:
            raise UsageError(f"probe has width {self.d_model} but the residuals have width {pooled.shape[-1]}")
        return pooled.to(torch.float32).cpu() @ self.weight + self.bias

    def check_width(self, model: LoadedModel) -> None:
        """Raise :class:`UsageError` unless the probe's width equals the model's ``d_model``."""
        if self.d_model != model.d_model:
            raise UsageError(
                f"probe of width {self.d_model} does not fit {model.source} (d_model={model.d_model}). "
                "Fix: use a probe trained on this model's residual stream (--mt-probe)"
            )


@dataclass(frozen=True, eq=False)
class ProbeFit:
    """A trained probe with its train/test accuracy and per-example test correctness."""

    probe: Probe
    train_accuracy: float
    test_accuracy: float
    n_train: int
    n_test: int
    test_correct: np.ndarray


def resolve_probe_hook(model: LoadedModel, hook_name: str | None) -> str:
    """``None``/``"resid_final"`` -> the final residual, ``"ln_final"`` -> the final norm's output,
    anything else as given (an unknown name fails when hooked).

    Example:
        >>> resolve_probe_hook(model, "ln_final")
        'ln_final.hook_out'
    """
    if hook_name in (None, "resid_final"):
        return model.final_resid_hook
    if hook_name == "ln_final":
        return model.final_norm_hook
    return str(hook_name)


def pooled_residual(model: LoadedModel, texts: TextSet | list[str] | tuple[str, ...], *, hook_name: str | None = None,
                    batch_size: int = 32, max_tokens: int | None = None, pooling: str = "mean") -> torch.Tensor:
    """``[N, d_model]`` residual at ``hook_name`` (default: final residual), pooled over real tokens
    only: their mean (``pooling="mean"``) or the last one (``"last"``). Texts longer than
    ``max_tokens`` keep their first tokens.

    Raises:
        UsageError: no texts, or ``max_tokens`` beyond the model's context.
        NumericalError: NaN/inf in the residual.

    Example:
        >>> pooled_residual(model, ["some text"]).shape  # [texts, d_model]
        torch.Size([1, 32])
    """
    items = list(texts.texts if isinstance(texts, TextSet) else texts)
    if not items:
        raise UsageError("pooled_residual got no texts")
    n_start = len(start_tokens(model.tokenizer))
    max_tokens = model.n_ctx - n_start if max_tokens is None else max_tokens
    if max_tokens + n_start > model.n_ctx:
        raise UsageError(f"max_tokens={max_tokens} (+ {n_start} start token(s)) exceeds the context length "
                         f"n_ctx={model.n_ctx} of {model.source}")
    if pooling not in POOLINGS:
        raise UsageError(f"pooling must be one of {', '.join(POOLINGS)}, got {pooling!r}")
    name = resolve_probe_hook(model, hook_name)
    out: list[torch.Tensor] = []
    captured: dict[str, torch.Tensor] = {}

    def capture(resid: torch.Tensor) -> None:
        captured["resid"] = resid

    with torch.inference_mode(), model.hooks([(name, capture)]):
        for start in range(0, len(items), batch_size):
            ids, mask = left_padded_batch(model.tokenizer, items[start : start + batch_size], max_tokens=max_tokens,
                                          device=model.device)
            model.forward(ids, mask, last_only=True)
            resid = captured.pop("resid").to(torch.float32)
            # Left padding: the last position is every row's last real token.
            # The mean is over the text's own tokens: a BOS's residual is the same for every text.
            text = without_start_tokens(mask, n_start)
            out.append((masked_mean(resid, text) if pooling == "mean" else resid[:, -1, :]).cpu())
    pooled = torch.cat(out)
    if not bool(torch.isfinite(pooled).all()):
        raise NumericalError(f"{model.source}: NaN/inf in the residual stream at {name}")
    return pooled


def _fit_logistic(x: torch.Tensor, y: torch.Tensor, l2: float, max_iter: int) -> tuple[torch.Tensor, float]:
    """L2-regularised logistic regression by full-batch L-BFGS in float64 (deterministic)."""
    x64, y64 = x.to(torch.float64), y.to(torch.float64)
    # Standardising conditions the problem; the solution is mapped back to raw residual space.
    mean, std = x64.mean(0), x64.std(0).clamp(min=1e-8)
    z = (x64 - mean) / std
    w = torch.zeros(z.shape[1], dtype=torch.float64, requires_grad=True)
    b = torch.zeros((), dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([w, b], lr=1.0, max_iter=max_iter, tolerance_grad=1e-10, tolerance_change=1e-12,
                            history_size=20, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = torch.nn.functional.binary_cross_entropy_with_logits(z @ w + b, y64) + l2 * (w @ w)
        loss.backward()
        return loss

    with torch.enable_grad():
        opt.step(closure)
    w_raw = (w.detach() / std)
    b_raw = float(b.detach() - (w_raw * mean).sum())
    return w_raw.to(torch.float32), b_raw


def train_probe(model: LoadedModel, data: TextSet, *, seed: int = 0, test_fraction: float = 0.1, l2: float = 1e-3,
                batch_size: int = 32, max_tokens: int | None = None, max_iter: int = 500,
                hook_name: str | None = None, pooling: str = "mean") -> ProbeFit:
    """Train a logistic-regression probe on pooled residuals at ``hook_name`` (default: the final
    residual; ``"ln_final"``: after the final norm) with a seeded split and a deterministic fit.

    Raises:
        DataError: no labels, a single class, or too few examples for the split.

    Example:
        >>> fit = train_probe(model, TextSet("d", labelled.texts, labelled.labels), seed=0)
        >>> fit.n_train + fit.n_test == len(labelled)
        True
    """
    if data.labels is None:
        raise DataError(f"text set {data.name!r} has no labels; a probe needs labelled examples")
    if not 0.0 < test_fraction < 1.0:
        raise UsageError(f"test_fraction must be in (0, 1), got {test_fraction}")
    labels = np.asarray(data.labels)
    if set(np.unique(labels).tolist()) != {0, 1}:
        raise DataError(f"text set {data.name!r} needs both labels 0 and 1, has {sorted(set(labels.tolist()))}")
    n = len(data)
    n_test = max(1, round(n * test_fraction))
    if n - n_test < 2:
        raise DataError(f"text set {data.name!r} has {n} examples; too few to train and test a probe")
    order = np.random.default_rng(seed).permutation(n)
    test_idx, train_idx = order[:n_test], order[n_test:]
    pooled = pooled_residual(model, data, batch_size=batch_size, max_tokens=max_tokens, hook_name=hook_name,
                             pooling=pooling)
    y = torch.as_tensor(labels, dtype=torch.float64)
    weight, bias = _fit_logistic(pooled[train_idx], y[train_idx], l2, max_iter)
    probe = Probe(weight, bias, hook_name, {"trained_on": data.sha256, "seed": seed, "l2": l2, "model": model.fingerprint,
                                            "test_fraction": test_fraction}, pooling)
    predictions = (probe.predict_logits(pooled) > 0).numpy()
    correct = predictions == labels.astype(bool)
    return ProbeFit(probe, float(correct[train_idx].mean()), float(correct[test_idx].mean()), len(train_idx),
                    len(test_idx), correct[test_idx])


def probe_correct(model: LoadedModel, probe: Probe, data: TextSet, *, batch_size: int = 32,
                  max_tokens: int | None = None) -> np.ndarray:
    """Per-example correctness (bool) of the probe on labelled ``data`` (for a bootstrap CI)."""
    if data.labels is None:
        raise DataError(f"text set {data.name!r} has no labels")
    probe.check_width(model)
    pooled = pooled_residual(model, data, hook_name=probe.hook_name, batch_size=batch_size, max_tokens=max_tokens,
                             pooling=probe.pooling)
    return (probe.predict_logits(pooled) > 0).numpy() == np.asarray(data.labels).astype(bool)


def probe_scores(model: LoadedModel, probe: Probe, data: TextSet, *, batch_size: int = 32) -> np.ndarray:
    """``pooled . weight`` (no bias) per text, float64: what :func:`fit_intercept` and
    :func:`check_probe_sign` work on."""
    probe.check_width(model)
    pooled = pooled_residual(model, data, hook_name=probe.hook_name, batch_size=batch_size, pooling=probe.pooling)
    return (pooled.to(torch.float64) @ probe.weight.to(torch.float64)).numpy()


def fit_intercept(scores: np.ndarray, labels: np.ndarray, *, max_iter: int = 100) -> float:
    """The bias ``b`` minimising the logistic loss of ``scores + b`` (direction fixed), by Newton's method.

    Example:
        >>> round(fit_intercept(np.zeros(4), np.array([1, 1, 1, 0])), 6) == round(float(np.log(3)), 6)
        True
    """
    s, y = np.asarray(scores, dtype=np.float64), np.asarray(labels, dtype=np.float64)
    if s.shape != y.shape or s.size == 0:
        raise UsageError(f"fit_intercept needs matching non-empty scores and labels, got {s.shape} and {y.shape}")
    if not 0 < y.mean() < 1:
        raise DataError("fitting a probe's intercept needs both labels 0 and 1")
    b = float(np.log(y.mean() / (1 - y.mean())) - np.median(s))
    for _ in range(max_iter):
        p = 1.0 / (1.0 + np.exp(-(s + b)))
        grad, hess = float((p - y).sum()), float((p * (1 - p)).sum())
        if hess < 1e-12:
            break
        step = grad / hess
        b -= float(np.clip(step, -10.0, 10.0))
        if abs(step) < 1e-12:
            break
    return b


@dataclass(frozen=True)
class SignCheck:
    """How a probe's direction orders labelled texts: AUC (1 = toxic always scored higher) and the
    one-sided Mann-Whitney p of "the toxic texts score lower" (a reversed sign)."""

    auc: float
    p_reversed: float
    n: int
    accuracy: float


def check_probe_sign(scores: np.ndarray, labels: np.ndarray, *, bias: float, where: str,
                     alpha: float = 1e-3) -> SignCheck:
    """Refuse a probe whose direction scores the probed class clearly *lower* (its sign reversed).

    Raises:
        UsageError: AUC < 0.5 with one-sided p < ``alpha``, naming the AUC, the accuracy and the fix.

    Example:
        >>> check_probe_sign(np.array([2.0, 1.0, -1.0]), np.array([1, 1, 0]), bias=0.0, where="p").auc
        1.0
    """
    from scipy.stats import mannwhitneyu

    s, y = np.asarray(scores, dtype=np.float64), np.asarray(labels).astype(bool)
    pos, neg = s[y], s[~y]
    if pos.size == 0 or neg.size == 0:
        raise DataError(f"{where}: checking the probe's sign needs examples of both labels")
    u = mannwhitneyu(pos, neg, alternative="less")
    auc = float(u.statistic) / (pos.size * neg.size)
    accuracy = float(((s + bias > 0) == y).mean())
    result = SignCheck(auc, float(u.pvalue), int(s.size), accuracy)
    if auc < 0.5 and result.p_reversed < alpha:
        raise UsageError(
            f"{where}: the probe scores the probed (label 1) texts lower than the others: AUC {auc:.3f}, accuracy "
            f"{accuracy:.3f} on {s.size} labelled examples, far below chance; its sign is reversed. Fix: negate the "
            "probe (torch.save(-probe, PATH)), or check that label 1 is the toxic class and that --mt-probe-hook "
            "names where it was trained")
    return result


def prepare_probe(model: LoadedModel, probe: Probe, data: TextSet | None, *, seed: int = 0,
                  test_fraction: float = 0.1, max_fit: int = 2000, max_check: int = 512, where: str = "--mt-probe",
                  scores: Any = None) -> tuple[Probe, dict[str, Any]]:
    """Make a probe from elsewhere usable as it was meant, and say what was done.

    A probe without a bias (``metadata["bias_source"] == "missing"``) gets its intercept fitted
    on the training part of a seeded split of ``data`` (at most ``max_fit`` examples; the rest stays
    held out, so claim 2 scores it on examples the fit never saw). Every file probe's sign is then
    checked on labelled data (:func:`check_probe_sign`; the fit sample, or the first ``max_check``
    examples when the file has its own bias).

    Args:
        scores: optional ``fn(probe, TextSet) -> np.ndarray`` computing :func:`probe_scores`
            (e.g. through a cache); default computes them.

    Returns:
        ``(probe, record)``, the record for the report (bias, where it came from, AUC, n).

    Raises:
        UsageError: no bias and no data to fit it on; a reversed sign.
    """
    compute = scores or (lambda p, d: probe_scores(model, p, d))
    meta = dict(probe.metadata)
    record: dict[str, Any] = {k: meta.get(k) for k in ("source", "sha256", "format", "hook_source", "bias_source")}
    record.update({"hook": probe.hook_name, "hook_name": probe.hook(model), "pooling": probe.pooling})
    if data is None or data.labels is None:
        if meta.get("bias_source") == "missing":
            raise UsageError(f"{where}: the probe file has no bias, and there is no labelled probe data to fit it on. "
                             "Fix: pass --mt-probe-bias NUMBER, or --mt-probe-data FILE to fit it")
        record.update({"bias": probe.bias, "sign_check": "not checked: no labelled probe data"})
        return probe, record
    labels = np.asarray(data.labels)
    if meta.get("bias_source") == "missing":
        order = np.random.default_rng(seed).permutation(len(data))
        n_test = max(1, round(len(data) * test_fraction))
        fit_idx = sorted(order[n_test:].tolist())[:max_fit]
        fit_data = data.subset(fit_idx)
        fit_scores = compute(probe, fit_data)
        bias = fit_intercept(fit_scores, labels[fit_idx])
        meta.update({"bias_source": "fitted", "trained_on": data.sha256, "seed": seed, "test_fraction": test_fraction})
        probe = Probe(probe.weight, bias, probe.hook_name, meta, probe.pooling)
        check = check_probe_sign(fit_scores, labels[fit_idx], bias=bias, where=where)
        record.update({"bias_source": "fitted", "bias_fitted_on": {"data": data.name, "sha256": data.sha256,
                                                                   "n": len(fit_idx), "seed": seed}})
    else:
        sample = data.head(min(len(data), max_check))
        check = check_probe_sign(compute(probe, sample), labels[: len(sample)], bias=probe.bias, where=where)
    record.update({"bias": probe.bias, "sign_check": {"auc": check.auc, "p_reversed": check.p_reversed, "n": check.n,
                                                      "accuracy": check.accuracy}})
    return probe, record


def save_probe(probe: Probe, path: str | os.PathLike[str]) -> Path:
    """Save in mechtests' own format (a ``torch.save`` dict loadable with ``weights_only=True``)."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"format": PROBE_FORMAT, "weight": probe.weight.clone(), "bias": probe.bias,
                "hook_name": probe.hook_name, "pooling": probe.pooling, "metadata": dict(probe.metadata)}, target)
    return target


def _dict_probe(raw: Mapping[str, Any], source: Path) -> tuple[Any, Any, Any, Any, dict[str, Any]]:
    known = {alias: key for key, aliases in _DICT_KEYS.items() for alias in aliases}
    unknown = sorted(str(k) for k in raw if k not in known)
    if unknown:
        raise DataError(f"{source}: probe dict has unknown key(s) {unknown}. Fix: keys are weight (or direction/coef), "
                        "bias (or intercept), hook_name, pooling, metadata")
    values: dict[str, Any] = {}
    for alias, value in raw.items():
        key = known[str(alias)]
        if key in values:
            raise DataError(f"{source}: probe dict gives {key} twice ({[a for a in raw if known[str(a)] == key]})")
        values[key] = value
    if "weight" not in values:
        raise DataError(f"{source}: probe dict has no weight (keys: {sorted(map(str, raw))})")
    metadata = dict(values.get("metadata") or {})
    return values["weight"], values.get("bias"), values.get("hook_name"), values.get("pooling"), metadata


def _probe_vector(value: Any, source: Path) -> torch.Tensor:
    if isinstance(value, np.ndarray):
        value = torch.from_numpy(value)
    if not isinstance(value, torch.Tensor):
        raise DataError(f"{source}: probe weight is a {type(value).__name__}, not a tensor")
    if not (value.ndim == 1 or (value.ndim == 2 and 1 in value.shape)):
        raise DataError(f"{source}: probe tensor has shape {tuple(value.shape)}; expected [d], [d, 1] or [1, d] "
                        "(one direction)")
    if not value.is_floating_point():
        raise DataError(f"{source}: probe tensor has dtype {value.dtype}; expected floating point")
    return value.reshape(-1)


def load_probe(path: str | os.PathLike[str], *, d_model: int | None = None, hook_name: str | None = None,
               bias: float | None = None) -> Probe:
    """Load a probe and record what was assumed about it in ``probe.metadata``.

    Formats: mechtests' own (``save_probe``); a raw tensor ``[d]``, ``[d, 1]`` or ``[1, d]`` (Lee et
    al.'s ``probe.pt``, the reference paper's ``clf.coef_``); a dict with ``weight`` (or
    ``direction``/``coef``) and optionally ``bias`` (or ``intercept``), ``hook_name``, ``pooling``.

    ``hook_name`` is used when the file names no hook (default ``resid_final``); ``bias`` when the
    file has none. With neither, ``metadata["bias_source"]`` is ``"missing"`` and the caller fits
    one (:func:`fit_intercept`). ``metadata`` records ``source``, ``sha256``, ``format``,
    ``hook_source`` and ``bias_source``.

    Raises:
        DataError: missing or unreadable file, or an unknown layout (named, with the fix).
        UsageError: ``d_model`` given and the probe has another width; NaN/inf or zero weights.

    Example:
        >>> probe = load_probe(probe_file, d_model=32)  # a bare weight tensor, as the papers' files
        >>> probe.metadata["bias_source"]
        'missing'
    """
    from mechtests.data import file_sha256

    source = Path(path)
    if not source.is_file():
        raise DataError(f"{source}: no such probe file. Fix: check --mt-probe")
    try:
        raw: Any = torch.load(source, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise DataError(f"{source}: not a readable torch file ({type(exc).__name__}: {str(exc)[:120]}). Fix: save the "
                        "probe with torch.save(tensor_or_dict, PATH) or mechtests.probes.save_probe") from exc
    meta: dict[str, Any] = {}
    if isinstance(raw, dict) and raw.get("format") == PROBE_FORMAT:
        # Own format: no hook name means the final residual, stated by the file.
        weight, file_bias = raw["weight"], raw.get("bias")
        file_hook, pooling = raw.get("hook_name") or "resid_final", raw.get("pooling")
        meta, fmt = dict(raw.get("metadata") or {}), PROBE_FORMAT
    elif isinstance(raw, torch.Tensor):
        weight, file_bias, file_hook, pooling, fmt = raw, None, None, None, f"raw tensor {tuple(raw.shape)}"
    elif isinstance(raw, dict):
        weight, file_bias, file_hook, pooling, meta = _dict_probe(raw, source)
        fmt = f"dict {sorted(map(str, raw))}"
    else:
        raise DataError(f"{source}: not a mechtests probe, a probe tensor or a probe dict (got {type(raw).__name__})")
    vector = _probe_vector(weight, source)
    if file_bias is not None:
        if isinstance(file_bias, torch.Tensor | np.ndarray):
            if int(np.prod(file_bias.shape)) != 1:
                raise DataError(f"{source}: probe bias has shape {tuple(file_bias.shape)}; expected one number")
            file_bias = float(file_bias.reshape(-1)[0])
        if not isinstance(file_bias, int | float) or isinstance(file_bias, bool):
            raise DataError(f"{source}: probe bias is a {type(file_bias).__name__}, not a number")
    if file_hook is not None and not isinstance(file_hook, str):
        raise DataError(f"{source}: probe hook_name is a {type(file_hook).__name__}, not a string")
    chosen_bias = file_bias if file_bias is not None else bias
    meta.update({
        "source": str(source), "sha256": file_sha256(source), "format": fmt,
        "hook_source": "file" if file_hook is not None else ("option" if hook_name is not None else "default"),
        "bias_source": "file" if file_bias is not None else ("option" if bias is not None else "missing"),
    })
    try:
        probe = Probe(vector, float(chosen_bias) if chosen_bias is not None else 0.0,
                      file_hook if file_hook is not None else (hook_name or "resid_final"), meta, pooling or "mean")
    except UsageError as exc:
        raise type(exc)(f"{source}: {exc}. Fix: use the trained probe file") from None
    except NumericalError as exc:  # a NaN file is a bad input, refused like any other
        raise DataError(f"{source}: {exc}. Fix: use the trained probe file") from None
    if d_model is not None and probe.d_model != d_model:
        raise UsageError(f"probe {source} has width {probe.d_model}, but the model has d_model={d_model}. "
                         "Fix: use a probe trained on this model's residual stream")
    return probe
