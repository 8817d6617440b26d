"""What a reader needs around the figures: where the study lives, its config, machines, versions.

Also the ``edgetune export`` command line for a trial, written so that it can be pasted into a
shell as is (quoted paths; ``--storage``/``--study`` only when the run folder does not imply them).
Storage URLs are shown with their password hidden: a report is meant to be shared.
"""

from __future__ import annotations

import platform
import shlex
from dataclasses import dataclass, field
from datetime import datetime, timezone
from importlib import metadata
from typing import Any

import optuna
import pandas as pd
from pydantic import ValidationError

from edgetune.objectives.machine import machine_key
from edgetune.search.constraints import Constraints
from edgetune.search.front import reference_latencies
from edgetune.search.record import ANCHOR_QUANTILE, Anchor
from edgetune.search.study import Location

VERSIONED = ("edgetune", "optuna", "onnxruntime", "onnx", "torch", "transformers", "nncf", "plotly",
             "ai-edge-litert", "litert-torch", "litert-quantizer", "executorch", "coremltools")


def constraints_of(config: dict[str, Any]) -> Constraints:
    """``search.constraints`` of a stored study config; none where it holds none this reads (a
    report must open any study)."""
    given = (config.get("search") or {}).get("constraints") or {}
    try:
        return Constraints.model_validate(given)
    except ValidationError:
        return Constraints()


@dataclass(frozen=True)
class Context:
    study: str
    storage: str  # password hidden
    run_dir: str
    config: dict[str, Any]
    data: dict[str, Any]
    constraints: Constraints
    machines: dict[str, int]  # machine key -> complete trials measured there
    versions: dict[str, str]
    generated: str
    first_trial: str = ""
    last_trial: str = ""
    confirmation: dict[str, Any] = field(default_factory=dict)
    reference_latency: dict[str, Anchor] = field(default_factory=dict)  # machine -> anchor
    anchor_quantile: float = ANCHOR_QUANTILE


def context(study: optuna.Study, location: Location, trials: pd.DataFrame) -> Context:
    config = dict(study.user_attrs.get("config") or {})
    if config.get("storage"):
        config["storage"] = hide_password(config["storage"])
    done = trials[trials["state"] == "complete"]
    machines = done["machine"].map(lambda m: machine_key(m) if m else "not recorded")
    return Context(
        study=study.study_name,
        storage=hide_password(location.storage),
        run_dir=str(location.run_dir.resolve()),
        config=config,
        data=dict(study.user_attrs.get("data") or {}),
        constraints=constraints_of(config),
        machines=machines.value_counts().to_dict(),
        versions=_versions(),
        generated=_format(datetime.now(timezone.utc).astimezone()),
        first_trial=_format(trials["started"].dropna().min()),
        last_trial=_format(trials["completed"].dropna().max()),
        confirmation=dict(study.user_attrs.get("confirmation") or {}),
        reference_latency=reference_latencies(study),
    )


def export_command(location: Location, trial: int) -> str:
    """The ``edgetune export`` line that writes trial ``trial`` to ``./export-trial-<trial>``."""
    words = ["edgetune", "export", "--run-dir", str(location.run_dir.resolve())]
    other_storage = location.storage != Location.resolve(location.study, location.run_dir).storage
    if other_storage:
        words += ["--storage", hide_password(location.storage)]
    if other_storage or location.study != location.run_dir.name:
        words += ["--study", location.study]
    words += ["--trial", str(trial), "--out", f"export-trial-{trial}"]
    return shlex.join(words)


def hide_password(url: str) -> str:
    """``url`` with any password replaced by ``***`` (database URLs carry credentials)."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        return make_url(url).render_as_string(hide_password=True)
    except (ArgumentError, ValueError):  # not a database URL (a journal file, say): no password
        return url


def _versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for name in VERSIONED:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def _format(moment: datetime | pd.Timestamp | None) -> str:
    if moment is None or pd.isna(moment):
        return ""
    return moment.strftime("%Y-%m-%d %H:%M:%S %Z").strip()
