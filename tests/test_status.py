"""What ``edgetune status`` shows beside the front: the FP32 reference every row is measured
against, and how precise each confirmed ratio is."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from edgetune.search.cli import cli

STUDY = Path(__file__).parent / "data" / "study-0.1.0.db"  # trial 3 on the confirmed front


@pytest.fixture
def run_dir(tmp_path: Path) -> Path:
    (tmp_path / "tiny").mkdir()
    shutil.copyfile(STUDY, tmp_path / "tiny" / "study.db")
    return tmp_path / "tiny"


def status(run_dir: Path, *extra: str) -> str:
    result = CliRunner().invoke(cli, ["status", "--run-dir", str(run_dir), *extra])
    assert result.exit_code == 0, result.output
    return result.stdout


def test_the_front_table_starts_with_the_fp32_reference_and_its_test_accuracy(
        run_dir: Path) -> None:
    shown = json.loads(status(run_dir, "--json"))
    fp32 = shown["reference"]
    assert (fp32["trial"], fp32["recipe"], fp32["ratio"]) == (0, "fp32 reference", 1.0)
    assert fp32["test_accuracy"] == shown["confirmation"]["reference_test_accuracy"]
    table = status(run_dir)
    front = table[:table.index("Confirmed front")]
    assert front.index("fp32") < front.index("drop1L-")  # a column as narrow as a terminal


def test_confirmed_ratios_come_with_their_95_percent_interval(run_dir: Path) -> None:
    shown = json.loads(status(run_dir, "--json"))
    low, high = shown["confirmed_front"][0]["interval"]
    assert low <= shown["confirmed_front"][0]["ratio"] <= high
    table = status(run_dir)
    assert "95% interval" in table and f"{low:.2f}–{high:.2f}" in table
    assert "ratio spread" not in table
