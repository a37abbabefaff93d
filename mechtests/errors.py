"""Exceptions raised by mechtests.

Every message says *what* is wrong, *where* (a path, an option, a field) and *how to fix it*.

Example:
    >>> raise IncompatiblePairError("d_mlp", 4096, 3072, where="--mt-base gpt2-medium / --mt-tuned ./ckpt")
    Traceback (most recent call last):
    ...
    mechtests.errors.IncompatiblePairError: base and tuned models differ in d_mlp: base has 4096, tuned has 3072 ...
"""

from __future__ import annotations


class MechtestsError(Exception):
    """Base class of every error mechtests raises on purpose."""


class UsageError(MechtestsError):
    """Bad options or inputs given by the user: fixable without touching mechtests' code."""


class CheckpointError(UsageError):
    """A model checkpoint is missing, unreadable or corrupt."""

    def __init__(self, path: object, problem: str, fix: str = "") -> None:
        self.path = str(path)
        fix = fix or "point --mt-base/--mt-tuned at a Hugging Face checkpoint directory (config.json + weights)"
        super().__init__(f"checkpoint {self.path!r}: {problem}. Fix: {fix}.")


class IncompatiblePairError(UsageError):
    """Base and tuned models cannot be compared neuron by neuron."""

    def __init__(self, field: str, base_value: object, tuned_value: object, where: str = "") -> None:
        self.field, self.base_value, self.tuned_value = field, base_value, tuned_value
        at = f" ({where})" if where else ""
        super().__init__(
            f"base and tuned models differ in {field}: base has {base_value!r}, tuned has {tuned_value!r}{at}. "
            "Fix: the tuned model must be a fine-tune of the base with the same architecture and tokenizer."
        )


class DataError(UsageError):
    """A prompt file, corpus or probe file is malformed or empty."""


class NumericalError(MechtestsError):
    """A computation produced NaN/inf or another value that makes every result meaningless."""
