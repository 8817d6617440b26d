"""Whether a latency ratio re-measured at export can be trusted, and why not.

Load slows models unequally, which pairing rounds cannot cancel, and the ratio's interval does not
always show it (issue 24: a candidate confirmed at 0.34x FP32 was re-measured at 0.90x while a
test suite ran). Any of three things makes the figure unreliable:

- **Imprecision.** The sequential protocol (``objectives.latency``) stops once the ratio's 95%
  interval is within ``measure.precision``; a measurement that ran out of rounds first holds a
  ratio the protocol itself cannot vouch for.
- **A reference slower than beside the trial's figure**, on the same kind of machine: measured
  during the measurement itself. Under two processes spinning on a 2-core host, a 1.6 ms candidate
  measured 0.106x FP32 (95% interval 0.104-0.108) where it measures 0.23x quiet, while its
  reference ran 2.3x slower than at the trial's confirmation (``benchmarks/RESULTS.md``, export,
  run 5).
- **A busy machine**: a 1-minute load average, before or after the measurement, above the
  machine's cores (more threads wanted a core than there were; the measurement's own threads
  count in it, as they need cores too). It catches load the reference's speed hides: other
  engineers' processes moved a 2.3 ms candidate from 0.45x to 0.54x FP32, interval 0.53-0.54,
  with the reference at its usual speed and the load at 3.4 on 2 cores (run 5 again).

Whether the measurement ran pinned to its own cores is kept beside the verdict too.
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
    with the FP32 reference at ``reference_ms`` (``trial_reference_ms`` beside the trial's figure;
    None when that was another machine's): see the module docstring."""
    slowdown = reference_ms / trial_reference_ms if trial_reference_ms else None
    reasons = []
    if load.busy:
        reasons.append(f"the machine was busy: {load.describe()}")
    if slowdown is not None and slowdown > SLOWDOWN_LIMIT:
        reasons.append(f"the FP32 reference ran {slowdown:.1f}× slower than beside the trial's "
                       f"figure ({reference_ms:.2f} ms against {trial_reference_ms:.2f} ms)")
    if relative.half_width > protocol.precision:
        low, high = relative.interval
        reasons.append(f"the ratio's 95% interval {low:.2f}–{high:.2f} is wider than "
                       f"±{protocol.precision * 100:g}% after {rounds} rounds")
    return Reliability(
        reliable=not reasons, reason="; ".join(reasons) or None, rounds=rounds,
        max_rounds=protocol.max_rounds, precision=protocol.precision,
        ratio_half_width=relative.half_width, reference_slowdown=slowdown,
        load_before=load.before, load_after=load.after, cores=load.cores,
        isolated=protocol.isolate,
    )
