"""A linear (logistic-regression) probe on the last block's residual stream, mean-pooled over real tokens.

Example:
    >>> fit = train_probe(model, labelled, seed=0)  # doctest: +SKIP
    >>> fit.test_accuracy  # doctest: +SKIP
    0.93
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from mechtests.data import TextSet, left_padded_batch, masked_mean
from mechtests.errors import DataError, NumericalError, UsageError

if TYPE_CHECKING:
    from mechtests.models import LoadedModel

PROBE_FORMAT = "mechtests-probe/1"


@dataclass(frozen=True, eq=False)
class Probe:
    """``logit = pooled_residual . weight + bias``; positive logit = the probed class (toxic).

    Attributes:
        weight: ``[d_model]`` float32 (cpu).
        bias: the intercept.
        hook_name: where the residual is read; ``None`` means the model's final residual
            (last block's ``hook_resid_post``, before the final LayerNorm).
        metadata: free-form facts (training data hash, accuracy, seed ...).
    """

    weight: torch.Tensor
    bias: float = 0.0
    hook_name: str | None = None
    metadata: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        weight = torch.as_tensor(self.weight).detach().to("cpu", torch.float32).reshape(-1)
        if weight.numel() == 0:
            raise UsageError("probe weight is empty")
        if not bool(torch.isfinite(weight).all()) or not np.isfinite(self.bias):
            raise NumericalError("probe weight or bias contains NaN/inf")
        if float(weight.norm()) == 0.0:
            raise UsageError("probe weight is all zeros: it has no direction")
        object.__setattr__(self, "weight", weight)
        object.__setattr__(self, "bias", float(self.bias))
        object.__setattr__(self, "metadata", dict(self.metadata))  # a copy: callers cannot alter it

    @property
    def d_model(self) -> int:
        return int(self.weight.numel())

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


def pooled_residual(model: LoadedModel, texts: TextSet | list[str] | tuple[str, ...], *, hook_name: str | None = None,
                    batch_size: int = 32, max_tokens: int | None = None) -> torch.Tensor:
    """``[N, d_model]`` residual at ``hook_name`` (default: final residual), mean over real tokens only.

    Raises:
        UsageError: no texts, or ``max_tokens`` beyond the model's context.
        NumericalError: NaN/inf in the residual.

    Example:
        >>> pooled_residual(model, ["some text"]).shape  # doctest: +SKIP
        torch.Size([1, 768])
    """
    items = list(texts.texts if isinstance(texts, TextSet) else texts)
    if not items:
        raise UsageError("pooled_residual got no texts")
    max_tokens = model.n_ctx if max_tokens is None else max_tokens
    if max_tokens > model.n_ctx:
        raise UsageError(f"max_tokens={max_tokens} exceeds the context length n_ctx={model.n_ctx} of {model.source}")
    name = hook_name or model.final_resid_hook
    out: list[torch.Tensor] = []
    captured: dict[str, torch.Tensor] = {}

    def capture(resid: torch.Tensor) -> None:
        captured["resid"] = resid

    with torch.inference_mode(), model.hooks([(name, capture)]):
        for start in range(0, len(items), batch_size):
            ids, mask = left_padded_batch(model.tokenizer, items[start : start + batch_size], max_tokens=max_tokens,
                                          device=model.device)
            model.forward(ids, mask, last_only=True)
            out.append(masked_mean(captured.pop("resid").to(torch.float32), mask).cpu())
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
                batch_size: int = 32, max_tokens: int | None = None, max_iter: int = 500) -> ProbeFit:
    """Train a logistic-regression probe on pooled final residuals (seeded split, deterministic fit).

    Raises:
        DataError: no labels, a single class, or too few examples for the split.

    Example:
        >>> fit = train_probe(model, TextSet("d", texts, labels), seed=0)  # doctest: +SKIP
    """
    if data.labels is None:
        raise DataError(f"text set {data.name!r} has no labels; a probe needs labelled examples")
    if not 0.0 < test_fraction < 1.0:
        raise UsageError(f"test_fraction must be in (0, 1), got {test_fraction}")
    labels = np.asarray(data.labels)
    if set(np.unique(labels).tolist()) != {0, 1}:
        raise DataError(f"text set {data.name!r} needs both labels 0 and 1, has {sorted(set(labels.tolist()))}")
    n = len(data)
    n_test = max(1, int(round(n * test_fraction)))
    if n - n_test < 2:
        raise DataError(f"text set {data.name!r} has {n} examples; too few to train and test a probe")
    order = np.random.default_rng(seed).permutation(n)
    test_idx, train_idx = order[:n_test], order[n_test:]
    pooled = pooled_residual(model, data, batch_size=batch_size, max_tokens=max_tokens)
    y = torch.as_tensor(labels, dtype=torch.float64)
    weight, bias = _fit_logistic(pooled[train_idx], y[train_idx], l2, max_iter)
    probe = Probe(weight, bias, None, {"trained_on": data.sha256, "seed": seed, "l2": l2, "model": model.fingerprint})
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
    pooled = pooled_residual(model, data, hook_name=probe.hook_name, batch_size=batch_size, max_tokens=max_tokens)
    return (probe.predict_logits(pooled) > 0).numpy() == np.asarray(data.labels).astype(bool)


def save_probe(probe: Probe, path: str | os.PathLike[str]) -> Path:
    """Save in mechtests' own format (a ``torch.save`` dict loadable with ``weights_only=True``)."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"format": PROBE_FORMAT, "weight": probe.weight.clone(), "bias": probe.bias,
                "hook_name": probe.hook_name, "metadata": dict(probe.metadata)}, target)
    return target


def load_probe(path: str | os.PathLike[str], *, d_model: int | None = None) -> Probe:
    """Load a probe: mechtests' format, or a raw tensor ``[d]``, ``[d, 1]`` or ``[1, d]`` (the papers' ``probe.pt``).

    Raises:
        DataError: missing or unreadable file, or an unknown layout.
        UsageError: ``d_model`` given and the probe has another width.

    Example:
        >>> probe = load_probe("probe.pt", d_model=1024)  # doctest: +SKIP
    """
    source = Path(path)
    if not source.exists():
        raise DataError(f"{source}: no such probe file. Fix: check --mt-probe")
    try:
        raw: Any = torch.load(source, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unpickling failure means a bad file
        raise DataError(f"{source}: cannot read the probe ({type(exc).__name__}: {exc})") from exc
    if isinstance(raw, dict) and raw.get("format") == PROBE_FORMAT:
        probe = Probe(raw["weight"], float(raw["bias"]), raw.get("hook_name"), raw.get("metadata", {}))
    elif isinstance(raw, torch.Tensor):
        if raw.ndim == 1 or (raw.ndim == 2 and 1 in raw.shape):
            probe = Probe(raw.reshape(-1), 0.0, None, {"source": str(source)})
        else:
            raise DataError(f"{source}: probe tensor has shape {tuple(raw.shape)}; expected [d], [d, 1] or [1, d]")
    else:
        raise DataError(f"{source}: not a mechtests probe or a probe tensor (got {type(raw).__name__})")
    if d_model is not None and probe.d_model != d_model:
        raise UsageError(f"probe {source} has width {probe.d_model}, but the model has d_model={d_model}. "
                         "Fix: use a probe trained on this model")
    return probe
