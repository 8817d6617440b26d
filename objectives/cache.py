"""A content-addressed cache of expensive stages (the fine-tuned base, pruned models, exports).

An entry is a folder named by the hash of everything that determines it, written to a temporary
folder and renamed into place when complete, so a crash never leaves a half-built entry behind.
A per-entry file lock makes concurrent workers on one machine build an entry once.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any


def default_cache_dir() -> Path:
    """``$EDGETUNE_CACHE_DIR``, else ``$XDG_CACHE_HOME/edgetune``, else ``~/.cache/edgetune``."""
    if "EDGETUNE_CACHE_DIR" in os.environ:
        return Path(os.environ["EDGETUNE_CACHE_DIR"])
    xdg = os.environ.get("XDG_CACHE_HOME", str(Path.home() / ".cache"))
    return Path(xdg) / "edgetune"


def key_hash(key: Any) -> str:
    """A short, stable hash of a JSON-serialisable key."""
    blob = json.dumps(key, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:20]


def file_hash(path: Path) -> str:
    """sha256 of a file's bytes, or of every file below a folder (names and bytes)."""
    digest = hashlib.sha256()
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    for file in files:
        digest.update(str(file.relative_to(path) if path.is_dir() else file.name).encode())
        with file.open("rb") as handle:
            for chunk in iter(lambda: handle.read(1 << 20), b""):
                digest.update(chunk)
    return digest.hexdigest()


class Cache:
    """Folders under ``root/<kind>/<hash>``, each built once.

    Example:
        >>> import tempfile, pathlib
        >>> cache = Cache(pathlib.Path(tempfile.mkdtemp()))
        >>> entry = cache.get_or_build("demo", {"a": 1}, lambda d: (d / "x.txt").write_text("hi"))
        >>> (entry / "x.txt").read_text()
        'hi'
    """

    def __init__(self, root: Path) -> None:
        self.root = root

    def path(self, kind: str, key: Any) -> Path:
        return self.root / kind / key_hash(key)

    def get_or_build(self, kind: str, key: Any, build: Callable[[Path], None]) -> Path:
        """Return the entry for ``key``, calling ``build(folder)`` to fill it the first time."""
        final = self.path(kind, key)
        if final.is_dir():
            return final
        final.parent.mkdir(parents=True, exist_ok=True)
        with locked(final.with_suffix(".lock")):
            if final.is_dir():  # another worker built it while we waited
                return final
            staging = Path(tempfile.mkdtemp(prefix=f".{final.name}-", dir=final.parent))
            try:
                build(staging)
                (staging / "cache-key.json").write_text(json.dumps(key, indent=2, default=str))
                os.replace(staging, final)
            finally:
                shutil.rmtree(staging, ignore_errors=True)
        return final


@contextmanager
def locked(lock_file: Path) -> Iterator[None]:
    """Hold an exclusive lock on ``lock_file`` (created if missing) for the block."""
    with lock_file.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
