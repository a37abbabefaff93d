"""`import mechtests as mt`: the claim author's names, lazily (issue 12 item 1)."""

from __future__ import annotations

import importlib
import subprocess
import sys

import pytest

import mechtests as mt


def test_importing_the_package_loads_neither_torch_nor_transformers() -> None:
    code = ("import sys, mechtests as mt; mt.evaluate_claim; mt.Estimate; "
            "print(sorted(m for m in ('torch', 'transformers', 'transformer_lens') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120)
    assert out.stdout.strip() == "[]"


def test_every_public_name_is_the_defining_modules_object() -> None:
    for name in mt.__all__:
        if name == "__version__":
            continue
        module = importlib.import_module(mt._EXPORTS[name])
        assert getattr(mt, name) is getattr(module, name), name
    assert set(mt.__all__) <= set(dir(mt))
    assert mt.__all__ == ["__version__", *sorted(mt._EXPORTS)]


def test_an_unknown_name_is_an_attribute_error() -> None:
    with pytest.raises(AttributeError, match="no attribute 'evaluate_claims'"):
        mt.evaluate_claims  # noqa: B018
