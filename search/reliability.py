"""Whether a latency ratio re-measured at export can be trusted, and why not.

Two things make it unreliable:

- **Imprecision.** The sequential protocol (``objectives.latency``) stops once the ratio's 95%
  interval is within ``measure.precision``; a measurement that ran out of rounds first holds a
  ratio the protocol itself cannot vouch for.
- **A machine busier than when the trial was measured.** Load slows models unequally, which
  pairing rounds cannot cancel, and a tight interval does not show it: under two processes
  spinning on a 2-core host, a 1.6 ms candidate measured 0.106x FP32 (95% interval 0.104-0.108)
  where it measures 0.23x quiet, while the FP32 reference ran 2.3x slower than at the trial's
  confirmation (``benchmarks/RESULTS.md``, export, run 5; issue 24 met the opposite: 0.90x for a
  candidate confirmed at 0.34x). So the reference's own latency, set against the one beside the
  trial's figure on the same kind of machine, is the busy signal that decides.

The machine's load average before and after the measurement, against its cores, and whether the
measurement ran pinned to its own cores are kept beside the verdict: they say why, not whether
(other processes' load varies too much within a minute to judge by).
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass

from edgetune.objectives.latency import MeasureConfig, Ratio

# Quiet re-measurements of the FP32 reference on the benchmark's host took 0.67-0.96x the
# confirmation's time, and 2.3x under two spinning processes (benchmarks/RESULTS.md, export, run 5).
SLOWDOWN_LIMIT = 1.5


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
    """A re-measured ratio's verdict, with what it was judged on."""

    reliable: bool
    reason: str | None  # why not, in a sentence a user acts on; None when reliable
    rounds: int
    max_rounds: int
    precision: float
    ratio_half_width: float  # of the 95% interval, relative to the ratio
    reference_slowdown: float | None  # the reference's time over its time beside the trial's
    load_before: float
    load_after: float
    cores: int
    isolated: bool  # measured in a process pinned to its own cores (``measure.isolate``)

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


def judge(relative: Ratio, rounds: int, protocol: MeasureConfig, load: Load,
          reference_ms: float, trial_reference_ms: float | None) -> Reliability:
    """The verdict on ``relative``, measured in ``rounds`` rounds of ``protocol`` under ``load``
    with the FP32 reference at ``reference_ms``: reliable when its interval is within
    ``protocol.precision`` and the reference ran at most ``SLOWDOWN_LIMIT`` times slower than
    beside the trial's figure (``trial_reference_ms``; None when that was another machine's)."""
    slowdown = reference_ms / trial_reference_ms if trial_reference_ms else None
    reasons = []
    if slowdown is not None and slowdown > SLOWDOWN_LIMIT:
        reasons.append(f"the FP32 reference ran {slowdown:.1f}× slower than beside the trial's "
                       f"figure ({reference_ms:.2f} ms against {trial_reference_ms:.2f} ms), and "
                       "load slows models unequally")
    if relative.half_width > protocol.precision:
        low, high = relative.interval
        reasons.append(f"the ratio's 95% interval {low:.2f}–{high:.2f} is wider than "
                       f"±{protocol.precision * 100:g}% after {rounds} rounds")
    if reasons and load.busy:
        reasons.insert(0, f"the machine was busy: {load.describe()}")
    return Reliability(
        reliable=not reasons, reason="; ".join(reasons) or None, rounds=rounds,
        max_rounds=protocol.max_rounds, precision=protocol.precision,
        ratio_half_width=relative.half_width, reference_slowdown=slowdown,
        load_before=load.before, load_after=load.after, cores=load.cores,
        isolated=protocol.isolate,
    )
