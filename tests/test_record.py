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
from edgetune.search.record import Confirmed, Measured, TrialRecord, anchors, records
from edgetune.search.study import metric_name

from studies import REFERENCE_MS, study_of, trial

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


def without_milliseconds(shown: object) -> object:
    if isinstance(shown, dict):
        return {k: without_milliseconds(v) for k, v in shown.items() if "latency_ms" not in k}
    return [without_milliseconds(v) for v in shown] if isinstance(shown, list) else shown


def test_a_study_written_by_edgetune_0_1_shows_the_same_status(legacy_run: Path) -> None:
    """The same front, figures and confirmation; milliseconds are anchored as they are now."""
    result = CliRunner().invoke(cli, ["status", "--run-dir", str(legacy_run), "--json"])
    assert result.exit_code == 0, result.output
    shown = json.loads(result.stdout)
    before = json.loads((DATA / "study-0.1.0.status.json").read_text())
    assert holds(shown, without_milliseconds(before))
    (anchor,) = shown["reference_latency"].values()
    for row in shown["front"] + shown["confirmed_front"]:
        assert row["latency_ms"] == pytest.approx(row["ratio"] * anchor["ms"])


def test_a_study_started_under_load_shows_the_quiet_machines_milliseconds() -> None:
    """The first trials measured FP32 at 3.6x its quiet latency: that moment's speed must not
    set every figure, nor the latency budget."""
    busy, quiet = 72.85, 20.3
    references = [busy, busy, busy] + [quiet * (1 + i / 100) for i in range(9)]
    study = study_of([trial(0.9, 5.0, reference_ms=ms) for ms in references],
                     config={"study": "s", "search": {"constraints": {"max_latency_ms": 12.0}}})
    (anchor,) = anchors(study.trials).values()
    assert anchor.ms == pytest.approx(quiet, rel=0.02) and anchor.measurements == 12
    shown = records(study)[0]
    assert shown.latency_ms == pytest.approx(0.5 * anchor.ms)  # a ratio of 0.5, in quiet ms
    assert shown.feasible  # about 10 ms, within the 12 ms budget (not 36 ms)


def test_a_study_written_by_edgetune_0_1_picks_and_reports(legacy_run: Path) -> None:
    study = optuna.load_study(study_name="tiny", storage=f"sqlite:///{legacy_run / 'study.db'}")
    assert metric_name(study) == "accuracy"  # 0.1.0 had no task.metric
    chosen = pick(study, "fastest", Constraints(max_accuracy_drop=0.2))
    assert chosen.trial == 3 and "validation accuracy" in chosen.reason
    out = legacy_run / "report.html"
    result = CliRunner().invoke(cli, ["report", "--run-dir", str(legacy_run), "--out", str(out)])
    assert result.exit_code == 0, result.output
    page = out.read_text()
    assert "drop1L-even" in page and "validation accuracy" in page
    assert "Confusion matrices" not in page  # 0.1.0 recorded none


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
