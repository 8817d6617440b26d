"""A trial's record: which figures it shows, and studies written by earlier versions still read.

``data/study-0.1.0.db`` is a study ``edgetune run`` wrote before the trial record had a module of
its own (7 trials of the tiny BERT, confirmed), with ``status --json`` as that version printed it.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import optuna
import pytest
from click.testing import CliRunner

from edgetune.search.cli import cli
from edgetune.search.constraints import Constraints
from edgetune.search.pick import pick
from edgetune.search.record import Confirmed, Measured, TrialRecord

from studies import REFERENCE_MS, trial

DATA = Path(__file__).parent / "data"


@pytest.fixture
def legacy_run(tmp_path: Path) -> Path:
    run_dir = tmp_path / "tiny"
    run_dir.mkdir()
    shutil.copyfile(DATA / "study-0.1.0.db", run_dir / "study.db")
    return run_dir


def holds(shown: object, before: object) -> bool:
    """Whether ``shown`` says all ``before`` said, with the same figures (it may say more)."""
    if isinstance(before, dict):
        return isinstance(shown, dict) and all(k in shown and holds(shown[k], v)
                                                for k, v in before.items())
    if isinstance(before, list):
        return (isinstance(shown, list) and len(shown) == len(before)
                and all(holds(a, b) for a, b in zip(shown, before, strict=True)))
    return shown == before


def test_a_study_written_by_edgetune_0_1_shows_the_same_status(legacy_run: Path) -> None:
    result = CliRunner().invoke(cli, ["status", "--run-dir", str(legacy_run), "--json"])
    assert result.exit_code == 0, result.output
    assert holds(json.loads(result.stdout),
                 json.loads((DATA / "study-0.1.0.status.json").read_text()))


def test_a_study_written_by_edgetune_0_1_picks_and_reports(legacy_run: Path) -> None:
    study = optuna.load_study(study_name="tiny", storage=f"sqlite:///{legacy_run / 'study.db'}")
    assert pick(study, "fastest", Constraints(max_accuracy_drop=0.2)).trial == 3
    out = legacy_run / "report.html"
    result = CliRunner().invoke(cli, ["report", "--run-dir", str(legacy_run), "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "drop1L-even" in out.read_text()


def test_confirmed_figures_replace_the_search_latency_but_never_the_accuracy() -> None:
    searched = TrialRecord.of(trial(0.9, 8.0))
    confirmed = searched.with_confirmation(Confirmed(latency_ms=6.0, ratio=0.6, machine={
        "cpu": "Other CPU", "cores": 4, "threads": 2, "runtime": "onnxruntime",
        "onnxruntime": "1.0"}))
    assert (searched.latency_ms, searched.ratio) == (8.0, 8.0 / REFERENCE_MS)
    assert (confirmed.latency_ms, confirmed.ratio, confirmed.accuracy) == (6.0, 0.6, 0.9)
    assert confirmed.values == [0.9, 6.0] and searched.values == [0.9, 8.0]
    assert confirmed.search_latency_ms == 8.0
    assert confirmed.machine_key.startswith("Other CPU ×4") and searched.machine_key.startswith(
        "Test CPU ×2")


def test_a_confirmed_latency_over_the_budget_is_infeasible_even_if_the_trial_was_not() -> None:
    record = TrialRecord.of(trial(0.9, 8.0))
    assert record.feasible
    assert not record.with_confirmation(
        Confirmed(latency_ms=12.0, constraints={"latency_ms": 0.2})).feasible


def test_a_record_is_stored_with_exactly_the_keys_it_was_read_with() -> None:
    older = {"accuracy": 0.9, "latency_ms": 5.0, "ratio": 0.5, "size_mb": 3.0}  # no spread
    measured = Measured.model_validate(older | {"fused_ops": {"Attention": 2}})
    assert measured.as_dict() == older | {"fused_ops": {"Attention": 2}}
    assert measured.spread != measured.spread  # NaN: nothing recorded to take it from
