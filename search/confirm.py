"""``edgetune confirm``: measure the front again, together, before anyone ships from it.

A trial's latency comes from one measurement beside the FP32 reference, taken while the machine
did whatever else it did then. Confirmation takes the front's trials and the trials near it (those
that would be on the front if their latency were ``margin`` lower: within the noise of one
measurement), and measures them all in one process, interleaved with the reference, with more
rounds. Then it:

- stores each one's confirmed figures on its trial (user attr ``confirmed``: latency_ms
  drift-corrected like a trial's, ratio, latency stats, machine, date);
- recomputes the front from the confirmed latencies (validation accuracy does not change) and
  flags the trials that confirmation moved off it (``moved_off_front``);
- computes test accuracy for the confirmed front only (``confirmed.test_accuracy``): reported,
  never used to choose;
- records the confirmation on the study (user attr ``confirmation``).

Candidates from several machines are all measured here, so the confirmed front has one machine.
"""

from __future__ import annotations

import datetime
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

import optuna
from optuna.trial import FrozenTrial
from pydantic import Field

from edgetune.errors import InputError
from edgetune.objectives.accuracy import accuracy
from edgetune.objectives.latency import latency_inputs, measure, ratio
from edgetune.objectives.machine import machine_key, machine_record
from edgetune.objectives.task import Task
from edgetune.search.annotations import annotate
from edgetune.search.artifacts import trial_model
from edgetune.search.front import (
    CONFIRMATION,
    CONFIRMED,
    complete_trials,
    front_trials,
    non_dominated,
    reference,
)
from edgetune.search.study import REFERENCE_LATENCY, Location, make_storage
from edgetune.spaces.base import Strict

if TYPE_CHECKING:
    from edgetune.search.config import StudyConfig


class ConfirmConfig(Strict):
    """The ``confirm:`` section: re-measuring the front after a study (DESIGN §4)."""

    after_run: bool = Field(default=True, description="confirm at the end of `edgetune run`")
    rounds: int = Field(default=20, ge=1, description="rounds of measure.runs runs per model")
    margin: float = Field(
        default=0.10, ge=0,
        description="also confirm trials that would be on the front were they this much faster",
    )


def candidates(study: optuna.Study, margin: float) -> list[FrozenTrial]:
    """The trials to confirm: each machine's front and the trials within ``margin`` of it."""
    return front_trials(complete_trials(study), slack=margin)


def is_current(study: optuna.Study, margin: float | None = None,
               threads: int | None = None) -> bool:
    """Whether the last confirmation measured the candidates the study has now.

    ``margin`` defaults to the confirmation's own; with ``threads``, it must also have been
    measured on this machine with that many threads.
    """
    record = study.user_attrs.get(CONFIRMATION)
    if record is None:
        return False
    chosen = [t.number for t in candidates(study, record["margin"] if margin is None else margin)]
    here = threads is None or record["machine"] == machine_key(machine_record(threads))
    return record["trials"] == chosen and here


def confirm(study: optuna.Study, location: Location, task: Task, settings: StudyConfig) -> None:
    """Measure the candidates again and store the confirmation (see the module docstring).

    Read the figures from a freshly loaded study: Optuna caches finished trials.

    Raises:
        InputError: the study has no complete FP32 reference, or a model file is missing.
    """
    yardstick = reference(study)
    if yardstick is None or REFERENCE_LATENCY not in study.user_attrs:
        raise InputError("--study", f"study {study.study_name!r} has no complete FP32 reference "
                         "trial to measure against: run it first")
    chosen = candidates(study, settings.confirm.margin)
    was_on_front = {t.number for t in front_trials(complete_trials(study))}
    storage = make_storage(location.storage)
    with tempfile.TemporaryDirectory(prefix="edgetune-confirm-") as folder:
        measured = {t.number: t for t in [yardstick, *chosen]}  # the reference is always measured
        files = {n: trial_model(t, storage, location.artifacts, Path(folder))
                 for n, t in measured.items()}
        inputs = latency_inputs(task.encoded("validation"), settings.target,
                                settings.measure.inputs)
        protocol = settings.measure.model_copy(update={"rounds": settings.confirm.rounds})
        latencies = measure({str(n): path for n, path in files.items()}, inputs,
                            settings.target, protocol)
        yardstick_latency = latencies[str(yardstick.number)]
        reference_ms = float(study.user_attrs[REFERENCE_LATENCY])
        ratios = {t.number: ratio(latencies[str(t.number)], yardstick_latency) for t in chosen}
        on_front = dict(zip(ratios, non_dominated(
            [(t.values[0], ratios[t.number].value * reference_ms) for t in chosen])))
        test_accuracy = {
            n: accuracy(files[n], task.encoded("test"), task.labels("test"), settings.target)
            for n, flag in on_front.items() if flag
        }
    date = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    machine = machine_record(settings.target.threads)
    notes: list[tuple[FrozenTrial, dict[str, Any]]] = [
        (t, {CONFIRMED: {
            "latency_ms": ratios[t.number].value * reference_ms,
            "ratio": ratios[t.number].value,
            "ratio_spread": ratios[t.number].spread,
            "latency": latencies[str(t.number)].as_dict(),
            "reference_latency": yardstick_latency.as_dict(),
            "test_accuracy": test_accuracy.get(t.number),
            "on_front": on_front[t.number],
            "moved_off_front": t.number in was_on_front and not on_front[t.number],
            "machine": machine,
            "date": date,
        }})
        for t in chosen
    ]
    superseded = [(t, {CONFIRMED: None}) for t in complete_trials(study)
                  if t.user_attrs.get(CONFIRMED) and t.number not in ratios]
    annotate(location.storage, notes + superseded)
    study.set_user_attr(CONFIRMATION, {
        "date": date,
        "rounds": protocol.rounds,
        "runs": protocol.runs,
        "margin": settings.confirm.margin,
        "machine": machine_key(machine),
        "reference_trial": yardstick.number,
        "trials": [t.number for t in chosen],
    })
