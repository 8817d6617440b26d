"""The examples in docstrings run as written: documentation that cannot drift from the code."""

from __future__ import annotations

import doctest
import importlib
import importlib.util
import pkgutil

import pytest

# The subpackages map from the repository's root folders (pyproject.toml), so each is walked.
PACKAGES = ("edgetune", "edgetune.search", "edgetune.spaces", "edgetune.objectives",
            "edgetune.reports")


def _modules_with_examples() -> list[str]:
    names = list(PACKAGES)
    for name in PACKAGES:
        package = importlib.import_module(name)
        names += [module.name for module in pkgutil.iter_modules(package.__path__,
                                                                 prefix=f"{name}.")]
    return [name for name in names
            if ">>>" in (importlib.util.find_spec(name).loader.get_source(name) or "")]


@pytest.mark.parametrize("name", _modules_with_examples())
def test_docstring_examples_run(name: str) -> None:
    result = doctest.testmod(importlib.import_module(name), optionflags=doctest.ELLIPSIS)
    assert result.failed == 0
