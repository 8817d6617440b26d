"""Notes added to finished trials after the fact, such as the figures ``edgetune confirm`` takes.

Optuna refuses to change a finished trial: its storages call ``check_trial_is_updatable`` before
every write. A confirmation changes no trial's parameters, values or state; it adds a user attr
that readers (``status``, ``report``, ``export``) find on the trial itself. This storage skips
that one check and writes through Optuna's own upsert, so it works on every database Optuna
supports. edgetune's storages are all RDB storages (``search.study.make_storage``).
"""

from __future__ import annotations

from typing import Any

from optuna.storages import RDBStorage
from optuna.trial import FrozenTrial, TrialState

from edgetune.search.study import make_storage


class _AnnotatingStorage(RDBStorage):
    def check_trial_is_updatable(self, trial_id: int, trial_state: TrialState) -> None:
        """Finished trials accept notes; see the module docstring."""


def annotating_storage(storage_url: str) -> RDBStorage:
    """A storage on ``storage_url`` whose finished trials accept user attrs (and nothing else
    changes): the measurement agent's, which records figures on trials already complete."""
    storage = make_storage(storage_url, kind=_AnnotatingStorage)
    assert isinstance(storage, _AnnotatingStorage)
    return storage


def annotate(storage_url: str, notes: list[tuple[FrozenTrial, dict[str, Any]]]) -> None:
    """Set user attrs on finished trials: ``[(trial, {key: JSON-serialisable value})]``.

    Readers holding a study object see the notes after ``load_study``: Optuna caches finished
    trials in memory.
    """
    storage = annotating_storage(storage_url)
    try:
        for trial, attrs in notes:
            for key, value in attrs.items():
                storage.set_trial_user_attr(trial._trial_id, key, value)
    finally:
        storage.remove_session()
