"""`edgetune report` writes the page of an existing study; `edgetune run` ends by writing it."""

from __future__ import annotations

from pathlib import Path

import optuna
from click.testing import CliRunner

from edgetune.search.cli import cli
from edgetune.search.front import front_of

from conftest import HOSTILE_LABEL, HostileRun


def test_run_ends_by_saying_where_the_report_was_written(hostile_run: HostileRun) -> None:
    report = hostile_run.folder / "run" / "report.html"
    assert f"report written to {report}" in " ".join(hostile_run.stderr.split())
    assert report.stat().st_size > 1_000_000  # Plotly's JavaScript is in it


def test_run_with_no_report_writes_none(hostile_run: HostileRun) -> None:
    assert not hostile_run.report_after_first_run
    assert "report written" not in hostile_run.stderr_without_report


def test_report_names_the_study_by_run_folder_and_study_or_by_config(
        hostile_run: HostileRun, tmp_path: Path) -> None:
    folder = hostile_run.folder
    run_dir = str(folder / "run")
    for args in (["--run-dir", run_dir, "--study", "tiny"],
                 ["--storage", f"sqlite:///{run_dir}/study.db", "--study", "tiny"],
                 [str(folder / "study.yaml"), "--run-dir", run_dir]):
        out = tmp_path / "deep" / f"{len(args)}.html"
        result = CliRunner().invoke(cli, ["report", *args, "--out", str(out)])
        assert result.exit_code == 0, result.output
        page = out.read_text()
        assert "edgetune report: <span id=\"study-name\">tiny</span>" in page
        assert HOSTILE_LABEL not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page


def test_the_report_shows_every_complete_trial_and_the_front(hostile_run: HostileRun,
                                                             tmp_path: Path) -> None:
    folder = hostile_run.folder
    study = optuna.load_study(study_name="tiny", storage=f"sqlite:///{folder}/run/study.db")
    page = (folder / "run" / "report.html").read_text()
    complete = study.get_trials(states=(optuna.trial.TrialState.COMPLETE,))
    shown = front_of(study)  # the confirmed front: run confirms at its end
    assert f"{len(complete)} complete trials, {len(shown)} on the Pareto front" in page
    for trial in shown:
        assert f"--trial {trial.number} --out export-trial-{trial.number}" in page


def test_an_unknown_study_is_one_line_and_exit_code_2(hostile_run: HostileRun,
                                                     tmp_path: Path) -> None:
    folder = hostile_run.folder
    out = tmp_path / "report.html"
    result = CliRunner().invoke(cli, ["report", "--run-dir", str(folder / "run"), "--study", "nope",
                                      "--out", str(out)])
    assert result.exit_code == 2
    assert "no study 'nope'" in result.output and "tiny" in result.output
    assert not out.exists()
