"""The study lock: one worker at a time sets a new study up, or counts its trials and takes one.

Several ``edgetune run`` workers share a study through its storage, and Optuna's
database storage keeps each write consistent, but two steps of edgetune's must not interleave
between workers:

- setting up a new study: else two workers starting together both enqueue the FP32 reference
  and the baselines;
- counting the trials and creating the next one: else, near the end of the budget, each of
  three workers sees room for one more trial and the study overshoots by two.

The lock is held for those steps only, never while a trial builds or measures, and it dies with
its worker, so a killed worker never blocks the others:

- PostgreSQL: a session-level advisory lock keyed by the study name, on a connection of its own
  (the server releases it when the connection drops);
- SQLite: ``flock`` on ``<database>.lock`` beside the database file (the kernel releases it);
- any other storage: no lock. One worker is exact; several may overshoot the budget by up to
  one trial per extra worker.
"""

from __future__ import annotations

import fcntl
import hashlib
from pathlib import Path
from types import TracebackType
from typing import IO

import sqlalchemy

from edgetune.search.study import engine, sqlite_file


class StudyLock:
    """An exclusive lock per study, shared by every worker; ``release`` may be called when free."""

    def __init__(self, storage: str, study: str) -> None:
        self._held = False
        self._file: IO[str] | None = None
        self._connection: sqlalchemy.Connection | None = None
        self._key = 0
        database = sqlite_file(storage)
        if database is not None:
            self._path: Path | None = database.with_name(database.name + ".lock")
        else:
            self._path = None
            if storage.startswith("postgresql"):
                self._connection = engine(storage).connect().execution_options(
                    isolation_level="AUTOCOMMIT")
                # pg_advisory_lock takes a signed 64-bit key
                digest = hashlib.sha256(f"edgetune study {study}".encode()).digest()
                self._key = int.from_bytes(digest[:8], "big", signed=True)

    def acquire(self) -> None:
        if self._held:
            return
        if self._path is not None:
            self._file = self._path.open("a")
            fcntl.flock(self._file, fcntl.LOCK_EX)
        elif self._connection is not None:
            self._connection.execute(sqlalchemy.text("SELECT pg_advisory_lock(:key)"),
                                     {"key": self._key})
        self._held = True

    def release(self) -> None:
        if not self._held:
            return
        if self._file is not None:
            fcntl.flock(self._file, fcntl.LOCK_UN)
            self._file.close()
            self._file = None
        elif self._connection is not None:
            self._connection.execute(sqlalchemy.text("SELECT pg_advisory_unlock(:key)"),
                                     {"key": self._key})
        self._held = False

    def close(self) -> None:
        self.release()
        if self._connection is not None:
            self._connection.close()
            self._connection = None

    def __enter__(self) -> StudyLock:
        self.acquire()
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None:
        self.release()
