"""What ``edgetune run`` shows: its own progress on stderr, as one plain line per phase and per
finished trial when stderr is not a terminal (click's runner is not one); library logs, prints and
progress bars go to ``<run-dir>/edgetune.log`` instead.

The study runs the FP32 reference and an NNCF trial (NNCF logs ``INFO:nncf:`` lines and draws
progress bars of its own); a tqdm bar is drawn during the export, as datasets and transformers
draw theirs.
"""

from __future__ import annotations

import io
import logging
import re
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from click.testing import CliRunner
from rich.console import Console
from tqdm import tqdm

from edgetune.objectives import export
from edgetune.search.cli import cli
from edgetune.search.library_log import LOG_FILE, library_output_to
from edgetune.search.progress import TrialProgress, phase

from helpers import tiny_config, write_config

NNCF = {"pruning.method": "none", "quantization.scheme": "nncf",
        "quantization.nncf.preset": "performance", "quantization.nncf.transformer": True,
        "quantization.nncf.smooth_quant": False, "quantization.nncf.keep_fp32": "none"}
LIBRARY_BAR = "a library's bar"


@dataclass(frozen=True)
class Runs:
    run_dir: Path
    first: str  # what the first run printed (stdout and stderr): fine-tuning, two trials
    resumed: str  # what running it again printed: the base comes from the cache


def with_a_tqdm_bar(step: Callable[..., Path]) -> Callable[..., Path]:
    def drawing_a_bar(*args: object, **kwargs: object) -> Path:
        for _ in tqdm(range(3), desc=LIBRARY_BAR):
            pass
        return step(*args, **kwargs)

    return drawing_a_bar


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory, tiny_model: Path, tiny_csv: Path) -> Runs:
    folder = tmp_path_factory.mktemp("output")
    config = write_config(folder, tiny_config(
        tiny_model, tiny_csv, cache_dir=str(folder / "cache"),  # a base fine-tuned by this test
        space={"pruning": {"methods": ["none"]}, "quantization": {"schemes": ["none", "nncf"]},
               "graph": {"fusion": [False]}},
        search={"enqueue": [NNCF]},
    ))
    args = ["run", str(config), "--trials", "2", "--run-dir", str(folder / "run"), "--no-report"]
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(export, "export_onnx", with_a_tqdm_bar(export.export_onnx))
        first = CliRunner().invoke(cli, args, catch_exceptions=False)
    assert first.exit_code == 0, first.output
    resumed = CliRunner().invoke(cli, args, catch_exceptions=False)
    assert resumed.exit_code == 0, resumed.output
    return Runs(folder / "run", first.output, resumed.output)


def test_a_redirected_run_prints_one_line_per_finished_trial(runs: Runs) -> None:
    lines = re.findall(r"^trial (\d+) (\w+)(.*)$", runs.first, re.MULTILINE)
    assert [(number, state) for number, state, _ in lines] == [("0", "complete"),
                                                              ("1", "complete")]
    reference, nncf = (rest for *_, rest in lines)
    assert reference.startswith(": fp32 reference · accuracy ")
    assert nncf.startswith(": nncf-performance-transformer · accuracy ")
    assert all(re.search(r"\d ms \([\d.]+x\) · front \d · \d/2 trials$", rest)
               for rest in (reference, nncf))


def test_a_redirected_run_says_what_its_first_minutes_and_its_end_do(runs: Runs) -> None:
    assert "fine-tuning the base model, 60 steps (cached after this first run)" in runs.first
    assert runs.first.index("fine-tuning the base") < runs.first.index("trial 0 complete")
    assert "\nconfirming the front: measuring it" in runs.first
    assert "fine-tuned base model found in the cache: not fine-tuned again" in runs.resumed
    assert "fine-tuning" not in runs.resumed


def test_library_logs_and_bars_stay_off_the_terminal(runs: Runs) -> None:
    for library_output in ("INFO:nncf", "it/s]", LIBRARY_BAR, "Statistics collection"):
        assert library_output not in runs.first
    assert f"library logs: {runs.run_dir / LOG_FILE}\n" in runs.first


def test_library_logs_and_bars_go_to_the_log_file(runs: Runs) -> None:
    log = (runs.run_dir / LOG_FILE).read_text()
    assert re.search(r"^\S+ \S+ \d+ INFO nncf: ", log, re.MULTILINE)  # NNCF's INFO lines
    assert "Statistics collection" in log  # NNCF's rich progress bar
    assert LIBRARY_BAR in log and "it/s]" in log
    assert "Trial 1 finished with values" in log  # Optuna's own log of each trial


def test_in_a_terminal_library_output_bypasses_edgetunes_live_display(tmp_path: Path) -> None:
    """rich's live displays (spinner, bar) show whatever is printed while they run, by default."""
    screen = io.StringIO()
    console = Console(file=screen, force_terminal=True, width=100)
    nncf_handlers = list(logging.getLogger("nncf").handlers)
    with library_output_to(tmp_path / LOG_FILE):
        with phase(console, "fine-tuning the base model"):
            print("printed during a phase")
        with TrialProgress(2, 0, console):
            print("printed during a trial", file=sys.stderr)
            logging.getLogger("nncf").info("logged during a trial")
    log = (tmp_path / LOG_FILE).read_text()
    for text in ("printed during a phase", "printed during a trial", "logged during a trial"):
        assert text in log and text not in screen.getvalue()
    assert "fine-tuning the base model" in screen.getvalue()
    assert logging.getLogger("nncf").handlers == nncf_handlers  # put back
