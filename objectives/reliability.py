"""Whether a latency ratio measured beside its reference can be trusted, and why not.

The sequential protocol (``objectives.latency``) stops once the ratio's 95% interval is within
``measure.precision``; a measurement that ran out of rounds first holds a ratio the protocol itself
cannot vouch for. The usual cause is a busy machine: at about a millisecond a model's thread pool
waits for cores more often than pairing rounds can cancel (issue 24: a candidate confirmed at
0.34x FP32 was re-measured at 0.90x while a test suite ran). The machine's load average before and
after the measurement, and whether it ran pinned to its own cores, are kept beside the verdict to
say why.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass

from edgetune.objectives.latency import MeasureConfig, Ratio


@dataclass(frozen=True)
class Load:
    """The machine's 1-minute load average (threads running or waiting for a core, in every
    process) before and after a measurement, and the machine's cores."""

    before: float
    after: float
    cores: int

    @staticmethod
    def now() -> float:
        return os.getloadavg()[0]

    @classmethod
    def since(cls, before: float) -> Load:
        """The load from ``before`` (``Load.now()`` when the measurement began) until now."""
        return cls(before=before, after=cls.now(), cores=os.cpu_count() or 1)

    @property
    def busy(self) -> bool:
        """Whether more threads wanted a core than there were, on average."""
        return max(self.before, self.after) > self.cores

    def describe(self) -> str:
        return f"load {max(self.before, self.after):.1f} on {self.cores} cores"


@dataclass(frozen=True)
class Reliability:
    """A measured ratio's verdict: reliable when its interval reached the protocol's precision."""

    reliable: bool
    reason: str | None  # why not, in a sentence a user acts on; None when reliable
    rounds: int
    max_rounds: int
    precision: float
    ratio_half_width: float  # of the 95% interval, relative to the ratio
    load_before: float
    load_after: float
    cores: int
    isolated: bool  # measured in a process pinned to its own cores (``measure.isolate``)

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


def judge(relative: Ratio, rounds: int, protocol: MeasureConfig, load: Load) -> Reliability:
    """The verdict on ``relative``, measured in ``rounds`` rounds of ``protocol`` under ``load``:
    reliable when its interval is within ``protocol.precision``."""
    reliable = relative.half_width <= protocol.precision
    reason = None
    if not reliable:
        low, high = relative.interval
        reason = (f"the ratio's 95% interval {low:.2f}–{high:.2f} is wider than "
                  f"±{protocol.precision * 100:g}% after {rounds} rounds")
        if load.busy:
            reason = f"the machine was busy: {load.describe()}; {reason}"
    return Reliability(
        reliable=reliable, reason=reason, rounds=rounds, max_rounds=protocol.max_rounds,
        precision=protocol.precision, ratio_half_width=relative.half_width,
        load_before=load.before, load_after=load.after, cores=load.cores,
        isolated=protocol.isolate,
    )
