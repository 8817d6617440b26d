"""The front: no trial beats a front trial on both objectives, and machines are never mixed."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner

from edgetune.objectives.machine import machine_record
from edgetune.search.cli import cli
from edgetune.search.front import non_dominated
from studies import HandmadeStudy


def test_a_point_beaten_on_both_objectives_is_off_the_front() -> None:
    points = [(0.90, 10.0), (0.80, 5.0), (0.80, 6.0), (0.95, 20.0), (0.90, 10.0)]
    assert non_dominated(points) == [True, True, False, True, True]  # equal points both stay


def test_slack_keeps_points_that_a_small_latency_error_would_put_on_the_front() -> None:
    points = [(0.90, 10.0), (0.85, 10.5), (0.85, 13.0)]
    assert non_dominated(points) == [True, False, False]
    assert non_dominated(points, slack=0.10) == [True, True, False]


def test_trials_from_two_machines_get_one_front_each(tmp_path: Path, tiny_model: Path,
                                                     tiny_csv: Path, tiny_onnx: Path) -> None:
    made = HandmadeStudy(tmp_path, tiny_model, tiny_csv)
    elsewhere = {**machine_record(1), "cpu": "Other CPU", "host": "other"}
    here = made.add(0.90, 10.0, tiny_onnx)
    there = made.add(0.80, 20.0, tiny_onnx, machine=elsewhere)  # beaten, but not comparable
    status = json.loads(CliRunner().invoke(cli, ["status", *made.cli_args(), "--json"]).stdout)
    machines = {row["trial"]: row["machine"] for row in status["front"]}
    assert set(machines) == {here, there}
    assert "Other CPU" in machines[there] and "Other CPU" not in machines[here]
    assert sorted(status["machines"]) == sorted(set(machines.values()))
    result = CliRunner().invoke(cli, ["status", *made.cli_args()])
    assert "latencies measured on 2 kinds of machine" in " ".join(result.stderr.split())
