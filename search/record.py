"""What a trial stores, typed: written by the objective and the confirmation, read by the front,
``pick``, ``export``, ``status``, the report and the tests' study fixtures.

A trial's record is its Optuna user attrs (JSON, so ``optuna-dashboard`` shows them too); the keys
below are the stored format, unchanged since edgetune 0.1, so studies of any version read:

- ``role`` (``reference`` for the FP32 yardstick, ``baseline``, ``enqueued``) and ``baseline``;
- ``recipe`` (``Recipe.model_dump``) and ``recipe_short``;
- ``measurement``: the trial's ``Measured`` figures (the task metric's validation score, under the
  key ``accuracy`` whatever the metric, and its confusion matrix; latency beside the FP32
  reference, file sizes, and notes of the build such as ``fused_ops``);
- ``confirmed``: the last confirmation's ``Confirmed`` figures (``edgetune.search.confirm``);
- ``machine`` (``objectives.machine.machine_record``), ``worker``, ``stage``, ``stage_seconds``;
- ``failure`` {stage, error, type, traceback}, or ``pruned`` {stage, reason} with
  ``duplicate_of`` for a repeated recipe and ``early_stopping`` for a trial stopped below the
  accuracy floor; ``rungs`` for a recovery scored at the ``search.rungs`` steps (stopped or not);
- with measurement agents (``edgetune agent``): ``awaiting_device`` (the device a built candidate
  waits for), ``claim:<device>`` (the agent measuring it, with its heartbeat) and
  ``device:<device>``, that device's ``DeviceFigures``. ``TrialRecord.of(trial, device=NAME)``
  shows a trial as that device measured it: one front per device.

Which figures a trial shows is decided here, once: a confirmed trial's confirmed latency, ratio,
machine and constraints replace its search figures (``TrialRecord.latency_ms`` and its
neighbours); its validation accuracy is the search's, always.

Milliseconds are shown as the ratio to the FP32 reference times the reference's latency on the
same machine, taken as a low quantile (``ANCHOR_QUANTILE``) of every time the reference was
measured there (beside each trial and in each confirmation): load only ever slows a run, so the
fastest measurements are the quiet machine's, and a study started while the machine was busy is
not shown at that moment's speed for ever (``anchors``). The latency budget
(``search.constraints.max_latency_ms``) is judged on those milliseconds. A trial's stored
``latency_ms`` value is the ratio on the study's own fixed scale (times the reference latency
first measured), so that every value the sampler compares is on one scale.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import numpy as np
import optuna
from optuna.trial import FrozenTrial, TrialState
from pydantic import BaseModel, ConfigDict

from edgetune.objectives.latency import Latency, Ratio, ratio
from edgetune.objectives.machine import machine_key
from edgetune.search.constraints import LATENCY, is_feasible

ROLE = "role"
REFERENCE = "reference"  # the role of the FP32 reference trial
BASELINE = "baseline"  # the name of an enqueued baseline
RECIPE = "recipe"
RECIPE_SHORT = "recipe_short"
MEASUREMENT = "measurement"
CONFIRMED = "confirmed"
MACHINE = "machine"
WORKER = "worker"  # the process that runs the trial (``edgetune.search.lost_trials``)
STAGE = "stage"  # the stage the trial is in now, or was in when it stopped
STAGE_SECONDS = "stage_seconds"
FAILURE = "failure"
PRUNED = "pruned"
DUPLICATE_OF = "duplicate_of"
EARLY_STOPPING = "early_stopping"
RUNGS = "rungs"  # a recovery's scores at the search.rungs steps (``edgetune.search.rungs``)
AWAITING = "awaiting_device"
BUILD_NOTES = "build_notes"  # a device trial's notes of its build, until the device measured it
DEVICE_PREFIX = "device:"
CLAIM_PREFIX = "claim:"
UNKNOWN_MACHINE = "unknown machine"
NAN = float("nan")
# The reference measurements' quantile taken as the quiet machine's: low, not the minimum, so
# that one lucky measurement does not set every figure.
ANCHOR_QUANTILE = 0.1


class Figures(BaseModel):
    """A latency measured beside the FP32 reference, interleaved, and what it means in
    milliseconds: the ratio to the reference times the study's reference latency (drift
    correction). Built once here for trials, confirmations and exports."""

    model_config = ConfigDict(extra="allow", frozen=True)

    latency_ms: float = NAN
    ratio: float = NAN
    ratio_spread: float | None = None
    ratio_interval: tuple[float, float] | None = None
    latency: dict[str, Any] = {}  # ``Latency.as_dict`` of the model
    reference_latency: dict[str, Any] = {}  # and of the FP32 reference beside it

    @classmethod
    def beside(cls, latency: Latency, reference: Latency, reference_ms: float,
               **extra: Any) -> Figures:
        """The figures of ``latency``, measured with ``reference`` in one ``measure`` call."""
        relative = ratio(latency, reference)
        return cls(latency_ms=relative.value * reference_ms, ratio=relative.value,
                   ratio_spread=relative.spread, ratio_interval=relative.interval,
                   latency=latency.as_dict(), reference_latency=reference.as_dict(), **extra)

    @property
    def spread(self) -> float:
        """Of the ratio over rounds (of the model's own rounds in records that lack it)."""
        return self.ratio_spread if self.ratio_spread is not None else self.latency.get(
            "spread", NAN)

    @property
    def half_width(self) -> float:
        """Of the ratio's 95% interval, relative to the ratio (NaN in records that lack it)."""
        if self.ratio_interval is None:
            return NAN
        return Ratio(self.ratio, self.spread, self.ratio_interval).half_width

    def round_ratios(self) -> list[float] | None:
        """The per-round ratios the figure is the median of (each round ran both models back to
        back), where the record holds them."""
        model = self.latency.get("round_medians_ms")
        fp32 = self.reference_latency.get("round_medians_ms")
        if not model or not fp32:
            return None
        return [c / r for c, r in zip(model, fp32, strict=False)]

    def as_dict(self) -> dict[str, Any]:
        """As stored: the fields it was built or read with (a record of an older version keeps
        the keys it had)."""
        return self.model_dump(mode="json", exclude_unset=True)


class Measured(Figures):
    """A trial's own measurement (user attr ``measurement``)."""

    accuracy: float = NAN  # the task metric's validation score (named so since 0.1.0)
    confusion: list[list[int]] | None = None  # on validation; rows: true class (not in 0.1.0)
    size_mb: float = NAN
    zipped_mb: float = NAN


class Confirmed(Figures):
    """A trial's figures from the last confirmation (user attr ``confirmed``)."""

    constraints: dict[str, float] | None = None  # with the latency budget checked against these
    machine: dict[str, Any] | None = None
    date: str = ""
    # The task metric's test score and confusion matrix, the confirmed front's only: never
    # used to choose.
    test_accuracy: float | None = None
    test_confusion: list[list[int]] | None = None
    on_front: bool = False
    moved_off_front: bool = False


class DeviceFigures(BaseModel):
    """What an agent recorded of a trial on its device (user attr ``device:<name>``): the raw
    ``objectives.measurement.Measurement``, or the error that kept it from measuring."""

    model_config = ConfigDict(extra="allow", frozen=True)

    measurement: dict[str, Any] | None = None
    machine: dict[str, Any] | None = None
    agent: dict[str, Any] = {}
    date: str = ""
    error: dict[str, Any] | None = None

    def measured(self) -> Measured | None:
        """As a trial's own ``Measured``, in the device's milliseconds at measurement time (the
        record's anchors rescale them)."""
        if self.measurement is None:
            return None
        raw = self.measurement
        latency, reference = (Latency(**raw["latency"]), Latency(**raw["reference_latency"]))
        figures = Measured.beside(latency, reference, reference.median_ms,
                                  accuracy=raw["accuracy"], confusion=raw.get("confusion"),
                                  size_mb=raw["size_mb"], zipped_mb=raw["zipped_mb"])
        assert isinstance(figures, Measured)
        return figures


def device_figures(trial: FrozenTrial, device: str) -> DeviceFigures | None:
    stored = trial.user_attrs.get(DEVICE_PREFIX + device)
    return DeviceFigures.model_validate(stored) if stored else None


def devices(trials: Sequence[FrozenTrial]) -> list[str]:
    """The devices whose agents recorded figures on any of ``trials``."""
    return sorted({key[len(DEVICE_PREFIX):] for trial in trials for key in trial.user_attrs
                   if key.startswith(DEVICE_PREFIX)})


@dataclass(frozen=True)
class TrialRecord:
    """One trial as edgetune recorded it, with the figures it shows (see the module docstring)."""

    trial: FrozenTrial
    measured: Measured | None
    confirmed: Confirmed | None
    # The study's reference latency on each machine (``anchors``) and the latency budget: given
    # by ``records``; without them milliseconds are the stored ones.
    anchors: Mapping[str, Anchor] = field(default_factory=dict)
    budget_ms: float | None = None
    # Set when the record shows the trial as an agent's device measured it (``of(device=)``).
    device: DeviceFigures | None = None

    @classmethod
    def of(cls, trial: FrozenTrial, anchors: Mapping[str, Anchor] | None = None,
           budget_ms: float | None = None, device: str | None = None) -> TrialRecord:
        """The trial's record; with ``device``, as that device's agent measured it (no figures:
        no ``measured``), never confirmed."""
        if device is not None:
            figures = device_figures(trial, device)
            return cls(trial, figures.measured() if figures else None, None, anchors or {},
                       budget_ms, figures or DeviceFigures())
        attrs = trial.user_attrs
        measured, confirmed = attrs.get(MEASUREMENT), attrs.get(CONFIRMED)
        return cls(trial, Measured.model_validate(measured) if measured else None,
                   Confirmed.model_validate(confirmed) if confirmed else None, anchors or {},
                   budget_ms)

    def with_confirmation(self, confirmed: Confirmed | None) -> TrialRecord:
        """This trial as it shows with ``confirmed`` figures (None: its search figures)."""
        return replace(self, confirmed=confirmed)

    @property
    def number(self) -> int:
        return self.trial.number

    @property
    def state(self) -> TrialState:
        """The trial's state; on a device, complete once the device measured it."""
        if self.device is None:
            return self.trial.state
        if self.measured is not None:
            return TrialState.COMPLETE
        return TrialState.FAIL if self.device.error else TrialState.RUNNING

    @property
    def role(self) -> str:
        return str(self.trial.user_attrs.get(ROLE, ""))

    @property
    def is_reference(self) -> bool:
        return self.role == REFERENCE

    @property
    def recipe(self) -> dict[str, Any]:
        return self.trial.user_attrs.get(RECIPE) or {}

    @property
    def recipe_short(self) -> str:
        return str(self.trial.user_attrs.get(RECIPE_SHORT, ""))

    @property
    def search_machine(self) -> dict[str, Any] | None:
        """Where the trial itself was measured."""
        if self.device is not None:
            return self.device.machine
        return self.trial.user_attrs.get(MACHINE)

    @property
    def machine(self) -> dict[str, Any] | None:
        """Where the figures shown were measured: the confirmation's machine, if confirmed."""
        return (self.confirmed and self.confirmed.machine) or self.search_machine

    @property
    def machine_key(self) -> str:
        return machine_key(self.machine) if self.machine else UNKNOWN_MACHINE

    @property
    def failure(self) -> dict[str, Any] | None:
        return self.trial.user_attrs.get(FAILURE) or None

    @property
    def pruned(self) -> dict[str, Any] | None:
        return self.trial.user_attrs.get(PRUNED) or None

    @property
    def duplicate_of(self) -> int | None:
        return self.trial.user_attrs.get(DUPLICATE_OF)

    @property
    def accuracy(self) -> float:
        """The task metric's validation score: what the search saw and every front is drawn
        on (accuracy unless ``task.metric`` names another)."""
        if self.device is not None:
            return self.measured.accuracy if self.measured else NAN
        return float(self.trial.values[0]) if self.trial.values else NAN

    @property
    def search_latency_ms(self) -> float:
        """The trial's own latency, in its machine's milliseconds."""
        if self.device is not None:
            stored = self.measured.latency_ms if self.measured else NAN
        else:
            stored = float(self.trial.values[1]) if self.trial.values else NAN
        return self._in_ms(self.measured, self.search_machine, stored)

    @property
    def latency_ms(self) -> float:
        """The latency shown: the confirmed one where the trial was confirmed."""
        if self.confirmed is None:
            return self.search_latency_ms
        return self._in_ms(self.confirmed, self.machine, self.confirmed.latency_ms)

    def _in_ms(self, figures: Figures | None, machine: dict[str, Any] | None,
               stored: float) -> float:
        anchor = self.anchors.get(machine_key(machine)) if machine else None
        if figures is None or anchor is None or not np.isfinite(figures.ratio):
            return stored
        return figures.ratio * anchor.ms

    @property
    def figures(self) -> Figures | None:
        """The latency figures shown: the confirmation's, else the trial's own."""
        return self.confirmed or self.measured

    @property
    def ratio(self) -> float:
        return self.figures.ratio if self.figures else NAN

    @property
    def size_mb(self) -> float:
        return self.measured.size_mb if self.measured else NAN

    @property
    def values(self) -> list[float]:
        """The objective values shown: the search's, with the confirmed latency if any."""
        values = list(self.trial.values or [])
        if self.device is not None and self.measured is not None:
            return [self.accuracy, self.search_latency_ms, *values[2:]]
        if self.confirmed and values:
            values[1] = self.confirmed.latency_ms
        return values

    @property
    def feasible(self) -> bool:
        """Whether the trial meets every constraint: the confirmation's values where it stored
        them, and the latency budget judged on the milliseconds shown."""
        stored = (self.confirmed.constraints if self.confirmed and self.confirmed.constraints
                  is not None else None)
        if stored is None and self.budget_ms is None:
            return is_feasible(self.trial)
        values = dict(self.trial.constraints if stored is None else stored)
        if self.budget_ms is not None and LATENCY in values:
            values[LATENCY] = (self.latency_ms - self.budget_ms) / self.budget_ms
        return all(value <= 0 for value in values.values())

    def row(self) -> FrontRow:
        return FrontRow(
            trial=self.number, recipe=self.recipe_short, accuracy=self.accuracy,
            latency_ms=self.latency_ms, ratio=self.ratio, size_mb=self.size_mb,
            machine=self.machine_key, confirmed=self.confirmed is not None,
            test_accuracy=self.confirmed.test_accuracy if self.confirmed else None,
        )


@dataclass(frozen=True)
class FrontRow:
    """A trial as the front lists it (``status``, ``export --pick``), with the figures shown."""

    trial: int
    recipe: str
    accuracy: float  # the task metric, validation: what the search and the front see
    latency_ms: float  # confirmed where the trial was confirmed, else the search's
    ratio: float  # latency relative to the FP32 reference measured beside it
    size_mb: float
    machine: str
    confirmed: bool
    test_accuracy: float | None  # the confirmed front's only: reported, never used to choose

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


@dataclass(frozen=True)
class Anchor:
    """The FP32 reference's latency on one machine, as milliseconds are shown there."""

    ms: float
    measurements: int  # the reference's measurements it was taken from
    confirmed: bool  # whether a confirmation's measurement is among them

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


def anchors(trials: Sequence[FrozenTrial], also: tuple[str, float] | None = None,
            device: str | None = None) -> dict[str, Anchor]:
    """The reference's latency on each machine (by ``machine_key``): ``ANCHOR_QUANTILE`` of the
    latencies it had beside each complete trial and in each confirmation measured there, and
    ``also`` (machine key, milliseconds: a trial's own before it completes); with ``device``,
    of that device's measurements."""
    measured: dict[str, list[float]] = {also[0]: [also[1]]} if also else {}
    confirmations: dict[str, set[float]] = {}
    for trial in trials:
        record = TrialRecord.of(trial, device=device)
        if record.state == TrialState.COMPLETE and record.measured and record.search_machine:
            median = record.measured.reference_latency.get("median_ms")
            if median:
                measured.setdefault(machine_key(record.search_machine), []).append(median)
        if record.confirmed and record.confirmed.machine:
            median = record.confirmed.reference_latency.get("median_ms")
            if median:  # every trial of one confirmation holds the same measurement
                confirmations.setdefault(machine_key(record.confirmed.machine), set()).add(median)
    found = {}
    for machine in measured.keys() | confirmations.keys():
        times = measured.get(machine, []) + sorted(confirmations.get(machine, ()))
        found[machine] = Anchor(float(np.quantile(times, ANCHOR_QUANTILE)), len(times),
                                machine in confirmations)
    return found


def records(study: optuna.Study, states: tuple[TrialState, ...] | None = None,
            device: str | None = None) -> list[TrialRecord]:
    """The study's trials as records, in trial order, with their milliseconds anchored and the
    latency budget of the study's config; with ``device``, as that device measured them (its
    states: complete once measured there)."""
    everything = study.get_trials(deepcopy=False)
    found = anchors(everything, device=device)
    budget = (((study.user_attrs.get("config") or {}).get("search") or {}).get(
        "constraints") or {}).get("max_latency_ms")
    shown = [TrialRecord.of(t, found, budget, device) for t in everything]
    return [record for record in shown if states is None or record.state in states]

