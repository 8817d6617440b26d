"""End to end on the real default task (docs/architecture.md): the README's main command, small
budget."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_readme_main_command_finds_a_faster_candidate(tmp_path: Path) -> None:
    env = {**os.environ, "EDGETUNE_CACHE_DIR": os.environ.get("EDGETUNE_CACHE_DIR",
                                                              str(tmp_path / "cache"))}
    result = subprocess.run(
        [sys.executable, "-m", "edgetune", "run", str(ROOT / "examples" / "bbc-news.yaml"),
         "--trials", "4", "--run-dir", str(tmp_path / "run"), "--json"],
        capture_output=True, text=True, env=env, timeout=1800, check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    front = json.loads(result.stdout)["front"]
    assert front, "the front is empty"
    reference = [row for row in front if row["trial"] == 0]
    faster = [row for row in front if row["trial"] != 0 and row["ratio"] < 0.9]
    assert faster, f"no candidate faster than trial 0: {front}"
    if reference:
        assert all(row["latency_ms"] < reference[0]["latency_ms"] for row in faster)

    # The sweet spot ships: the export re-measures exactly the accuracy the trial recorded.
    exported = subprocess.run(
        [sys.executable, "-m", "edgetune", "export", "--run-dir", str(tmp_path / "run"),
         "--study", "bbc-news", "--pick", "fastest", "--max-accuracy-drop", "0.02",
         "--out", str(tmp_path / "export"), "--json"],
        capture_output=True, text=True, env=env, timeout=1800, check=False,
    )
    assert exported.returncode == 0, exported.stderr[-3000:]
    assert "picked trial" in exported.stderr
    metrics = json.loads(exported.stdout)
    assert metrics["remeasured"]["validation_accuracy"] == metrics["trial_figures"]["accuracy"]
    assert (tmp_path / "export" / "model.ort").is_file()
