"""Every ``Example:`` in mechtests' docstrings runs and prints what it says (doctest)."""

from __future__ import annotations

import doctest
import importlib
import pkgutil

import pytest

import mechtests

MODULES = sorted(
    m.name for m in pkgutil.walk_packages(mechtests.__path__, prefix="mechtests.")
    if m.name != "mechtests.plugin"  # imported by pytest itself as the plugin; its hooks hold no examples
)


@pytest.mark.parametrize("module_name", MODULES)
def test_docstring_examples_run(module_name: str) -> None:
    module = importlib.import_module(module_name)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE, verbose=False)
    assert result.failed == 0, f"{result.failed} of {result.attempted} docstring examples in {module_name} failed"
