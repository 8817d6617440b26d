"""The study's constraints (``search.constraints``, issue 8): the limits a shipped model must meet.

Read by the report (which marks them) and by ``export --pick`` (which honours them). Each limit is
None when not set.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Constraints:
    """``search.constraints`` of the study config (issue 8), each None when not set."""

    max_accuracy_drop: float | None = None  # fraction below the FP32 reference's accuracy
    max_latency_ms: float | None = None
    max_size_mb: float | None = None

    @staticmethod
    def of(config: dict[str, Any]) -> Constraints:
        given = (config.get("search") or {}).get("constraints") or {}
        return Constraints(**{name: given.get(name) for name in Constraints.__dataclass_fields__})

    def describe(self, accuracy_floor: float | None) -> str:
        """The constraints in a few words, such as ``≤ 8 ms, ≥ 96.01% accuracy``."""
        parts = [f"≤ {self.max_latency_ms:g} ms" if self.max_latency_ms is not None else "",
                 f"≥ {accuracy_floor:.2%} accuracy" if accuracy_floor is not None else "",
                 f"≤ {self.max_size_mb:g} MB" if self.max_size_mb is not None else ""]
        return ", ".join(part for part in parts if part)

    def accuracy_floor(self, reference_accuracy: float | None) -> float | None:
        if self.max_accuracy_drop is None or reference_accuracy is None:
            return None
        return reference_accuracy - self.max_accuracy_drop
