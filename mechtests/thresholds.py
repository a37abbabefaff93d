"""A claim's direction and threshold: the types, the one validation rule and how they read.

Every place that takes a threshold — ``claim()`` / ``evaluate_claim``, ``[tool.mechtests.thresholds]``
overrides, baselines — checks it here, so "impossible threshold" means the same everywhere. The
module imports nothing heavy (config reads thresholds at pytest start-up).

Example:
    >>> check_threshold([0.1, 0.2], "within", where="claim 'x'")
    (0.1, 0.2)
    >>> satisfies(0.3, 0.2, ">")
    True
"""

from __future__ import annotations

import math
import numbers
from typing import Literal, get_args

from mechtests.errors import UsageError

Direction = Literal[">", "<", "within"]
DIRECTIONS: tuple[str, ...] = get_args(Direction)
#: one number for ">" and "<", ``(low, high)`` with ``low < high`` for "within"
Threshold = float | tuple[float, float]


def check_threshold(value: object, direction: str | None = None, *, where: str = "claim") -> Threshold:
    """``value`` as a threshold, or a `UsageError` saying what is wrong, where, and the fix.

    A threshold is a finite number, or ``[low, high]`` of finite numbers with ``low < high``
    (booleans are not numbers). With ``direction`` (a claim's), the shape must also match it: one
    number for ``">"``/``"<"``, an interval for ``"within"``; without it (an override read before
    the claim that uses it is known) either shape is accepted here and matched when the claim runs.

    Example:
        >>> check_threshold(0.5, ">")
        0.5
        >>> check_threshold((0.3, 0.1), "within")  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        mechtests.errors.UsageError: claim: impossible threshold [0.3, 0.1]: low must be below high. ...
    """
    if direction is not None and direction not in DIRECTIONS:
        raise UsageError(f"{where}: direction {direction!r} is not one of {DIRECTIONS}.")
    if isinstance(value, (tuple, list)):
        if direction is not None and direction != "within":
            raise UsageError(f"{where}: direction {direction!r} needs one number, got {value!r} "
                             "(an interval needs direction='within').")
        if len(value) != 2:
            raise UsageError(f"{where}: a 'within' threshold is [low, high], got {value!r}.")
        lo, hi = (_finite(v, where) for v in value)
        if not lo < hi:
            raise UsageError(f"{where}: impossible threshold [{lo:g}, {hi:g}]: low must be below high. "
                             "Fix: give [low, high] with low < high.")
        return (lo, hi)
    if direction == "within":
        raise UsageError(f"{where}: direction 'within' needs threshold=(low, high), got {value!r}.")
    return _finite(value, where)


def _finite(value: object, where: str) -> float:
    # numbers.Real: Python and numpy scalars alike (np.float32 is no float); bool (and numpy's, which
    # is no numbers.Real) is not a threshold
    if isinstance(value, bool) or not isinstance(value, (numbers.Real, str)):
        raise UsageError(f"{where}: threshold {value!r} is not a number. Fix: a number, or [low, high] for 'within'.")
    try:
        f = float(value)
    except ValueError:
        raise UsageError(f"{where}: threshold {value!r} is not a number. "
                         "Fix: a number, or [low, high] for 'within'.") from None
    if not math.isfinite(f):
        raise UsageError(f"{where}: threshold {value!r} is not finite. Fix: give a finite number.")
    return f


def satisfies(value: float, threshold: Threshold, direction: Direction) -> bool:
    """Whether one number lies strictly on the claimed side of the threshold.

    Example:
        >>> satisfies(0.15, (0.1, 0.2), "within"), satisfies(0.2, 0.2, "<")
        (True, False)
    """
    if direction == "within":
        lo, hi = threshold  # type: ignore[misc]
        return bool(lo < value < hi)
    t = float(threshold)  # type: ignore[arg-type]
    return bool(value > t) if direction == ">" else bool(value < t)


def format_threshold(direction: str, threshold: Threshold) -> str:
    """The claim's side of its threshold as text.

    Example:
        >>> format_threshold("within", (0.1, 0.25)), format_threshold(">", 0.5)
        ('within (0.1, 0.25)', '> 0.5')
    """
    if direction == "within":
        lo, hi = threshold  # type: ignore[misc]
        return f"within ({lo:.4g}, {hi:.4g})"
    return f"{direction} {threshold:.4g}"
