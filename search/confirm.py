"""``edgetune confirm``: measure the front again, together, before anyone ships from it.

A trial's latency comes from one measurement beside the FP32 reference, taken while the machine
did whatever else it did then. Confirmation takes the front's trials and the trials near it (those
that would be on the front if their latency were ``margin`` lower: within the noise of one
measurement), and measures them all in one process, interleaved with the reference, with more
rounds. Then it:

- stores each one's confirmed figures on its trial (user attr ``confirmed``: latency_ms
  drift-corrected like a trial's, ratio, latency stats, machine, date);
- recomputes the front from the confirmed latencies (validation accuracy does not change; the
  latency constraint is checked against the confirmed figure) and flags the trials that
  confirmation moved off it (``moved_off_front``);
- computes the task metric on test for the confirmed front only (``confirmed.test_accuracy``,
  with its confusion matrix ``test_confusion``): reported, never used to choose;
- records the confirmation on the study (user attr ``confirmation``).

Candidates from several machines are all measured here, so the confirmed front has one machine.
Models come from the artifact store, or are rebuilt from their recipes where the store no longer
holds them (``artifacts.keep``), as ``edgetune export`` does.
"""

from __future__ import annotations

import datetime
import tempfile
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import FrozenTrial

from edgetune.errors import InputError
from edgetune.objectives.accuracy import scored
from edgetune.objectives.latency import latency_inputs, measure
from edgetune.objectives.machine import machine_key, machine_record
from edgetune.objectives.task import Task
from edgetune.search.annotations import annotate
from edgetune.search.artifacts import describe, open_store
from edgetune.search.config import StudyConfig
from edgetune.search.constraints import LATENCY
from edgetune.search.front import (
    CONFIRMATION,
    candidates,
    complete,
    front_trials,
    reference,
    search_front,
)
from edgetune.search.models import Models, Source
from edgetune.search.record import CONFIRMED, Confirmed, Figures, TrialRecord
from edgetune.search.study import REFERENCE_LATENCY, Location


def confirm(study: optuna.Study, location: Location, task: Task, settings: StudyConfig,
            config_dir: Path) -> None:
    """Measure the candidates again and store the confirmation (see the module docstring).

    ``config_dir`` is the folder the config's relative paths (an artifact store) start from.
    Read the figures from a freshly loaded study: Optuna caches finished trials.

    Raises:
        InputError: the study has no complete FP32 reference, or a model is neither in the
            artifact store nor rebuildable here.
    """
    yardstick = reference(study)
    if yardstick is None or REFERENCE_LATENCY not in study.user_attrs:
        raise InputError("--study", f"study {study.study_name!r} has no complete FP32 reference "
                         "trial to measure against: run it first")
    chosen = candidates(study, settings.confirm.margin)
    was_on_front = {t.number for t in search_front(study)}
    source = Source(study=study, config=settings,
                    store=open_store(settings.artifacts, location.artifacts, config_dir),
                    store_name=describe(settings.artifacts, location.artifacts), base=config_dir)
    with tempfile.TemporaryDirectory(prefix="edgetune-confirm-") as folder:
        models = Models(source, Path(folder), task)
        measured = {t.number: t for t in [yardstick, *chosen]}  # the reference is always measured
        files = {n: models.model(t, Path(folder) / f"trial-{n}{models.suffix(t)}")
                 for n, t in measured.items()}
        reads = {n: models.model_task(t) for n, t in measured.items()}
        inputs = latency_inputs(task.encoded("validation"), settings.target,
                                settings.measure.inputs)
        protocol = settings.measure.model_copy(update={
            "rounds": settings.confirm.rounds, "max_rounds": settings.confirm.max_rounds})
        latencies = measure({str(n): path for n, path in files.items()}, inputs,
                            settings.target, protocol, reference=str(yardstick.number),
                            own_inputs={str(n): latency_inputs(
                                read.encoded("validation"), settings.target,
                                settings.measure.inputs)
                                for n, read in reads.items() if read is not task})
        yardstick_latency = latencies[str(yardstick.number)]
        reference_ms = float(study.user_attrs[REFERENCE_LATENCY])
        date = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
        machine = machine_record(settings.target)
        figures: dict[int, Confirmed] = {}
        for t in chosen:
            beside = Figures.beside(latencies[str(t.number)], yardstick_latency, reference_ms)
            figures[t.number] = Confirmed(**beside.model_dump(), machine=machine, date=date,
                                          constraints=_constraints(t, beside.latency_ms,
                                                                   settings))
        # The front of every trial, the confirmed ones by their new figures (earlier
        # confirmations of trials not measured now are superseded: their search figures count).
        on_front = {t.number for t in front_trials(complete(study), study.directions,
                                                   confirmations=figures)}
        tested = {
            n: scored(files[n], reads[n].encoded("test"), task.labels("test"), settings.target,
                      task.config.metric, task.label_names)
            for n in [*figures, yardstick.number] if n in on_front or n == yardstick.number
        }
    notes: list[tuple[FrozenTrial, dict[str, Any]]] = [
        (t.trial, {CONFIRMED: figures[t.number].model_copy(update={
            # the reference's is computed for every confirmation, but shown only on the front
            "test_accuracy": tested[t.number].value if t.number in on_front else None,
            "test_confusion": tested[t.number].confusion if t.number in on_front else None,
            "on_front": t.number in on_front,
            "moved_off_front": t.number in was_on_front and t.number not in on_front,
        }).model_dump(mode="json")})
        for t in chosen
    ]
    superseded = [(t.trial, {CONFIRMED: None}) for t in complete(study)
                  if t.confirmed is not None and t.number not in figures]
    annotate(location.storage, notes + superseded)
    study.set_user_attr(CONFIRMATION, {
        "date": date,
        "rounds": len(yardstick_latency.round_medians_ms),
        "runs": protocol.runs,
        "margin": settings.confirm.margin,
        "machine": machine_key(machine),
        "reference_trial": yardstick.number,
        # what "within N points of FP32 test accuracy" is measured against
        "reference_test_accuracy": tested[yardstick.number].value,
        "trials": [t.number for t in chosen],
    })


def _constraints(trial: TrialRecord, latency_ms: float,
                 settings: StudyConfig) -> dict[str, float]:
    """The trial's constraint values with the latency budget checked against ``latency_ms``."""
    values = dict(trial.trial.constraints)
    budget = settings.search.constraints.max_latency_ms
    if budget is not None and LATENCY in values:
        values[LATENCY] = (latency_ms - budget) / budget
    return values
