"""What ``edgetune run`` shows while it works: each phase, and each trial as it finishes.

In a terminal: a spinner per phase, and a live bar over the trial budget with the front's size
and best figures (failures, early stops and repeats printed above it). Elsewhere (CI, ``nohup``,
a pipe): one plain line per phase and per finished trial, so that a redirected run says what it
is doing from its first minute.

Neither display lets rich redirect ``sys.stdout`` and ``sys.stderr`` through it (rich's default
for live displays): while a study runs they carry library output to the log file
(``edgetune.search.library_log``).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import optuna
from optuna.trial import FrozenTrial, TrialState
from rich.console import Console
from rich.live import Live
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.spinner import Spinner
from rich.text import Text

from edgetune.objectives.metrics import ACCURACY
from edgetune.search.front import front
from edgetune.search.record import FrontRow, TrialRecord
from edgetune.search.study import metric_name

ERROR_CHARACTERS = 200  # of a failure's message: the whole one is on the trial


@contextlib.contextmanager
def phase(console: Console, text: str) -> Iterator[None]:
    """Say what the run is doing during the block: a spinner in a terminal, else one line."""
    if not console.is_terminal:
        console.print(Text(text), soft_wrap=True)
        yield
        return
    with Live(Spinner("dots", Text(text)), console=console, transient=True,
              redirect_stdout=False, redirect_stderr=False):
        yield


class TrialProgress:
    """An Optuna callback that reports trials as they finish. Repeats, which do not count toward
    the budget, do not advance it."""

    def __init__(self, total: int, done: int, console: Console) -> None:
        self.console = console
        self.total = total
        self.done = done
        self.bar: Progress | None = None
        if console.is_terminal:
            self.bar = Progress(
                TextColumn("[bold]trials"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                TextColumn("{task.description}"), console=console, transient=False,
                redirect_stdout=False, redirect_stderr=False,
            )
            self.task = self.bar.add_task("", total=total, completed=done)

    def __enter__(self) -> TrialProgress:
        if self.bar is None:
            self.console.print(f"trials: {self.done} of {self.total} finished", soft_wrap=True)
        else:
            self.bar.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.bar is not None:
            self.bar.stop()

    def __call__(self, study: optuna.Study, trial: FrozenTrial) -> None:
        record = TrialRecord.of(trial)
        counted = record.duplicate_of is None
        if counted:
            self.done += 1
        rows = front(study)
        metric = metric_name(study)
        if self.bar is None:
            self.console.print(outcome(record, metric),
                               f"· front {len(rows)} · {self.done}/{self.total} trials",
                               soft_wrap=True)
            return
        if trial.state != TrialState.COMPLETE:
            self.console.print(outcome(record, metric))
        if counted:
            self.bar.update(self.task, advance=1, description=summary(rows, metric))


def outcome(record: TrialRecord, metric: str = ACCURACY) -> Text:
    """How a finished trial ended: its recipe and figures (``metric``: the task metric's
    name), or why it has none."""
    number = record.number
    if record.duplicate_of is not None:
        return Text(f"trial {number} repeated trial {record.duplicate_of}'s recipe: not built, "
                    "not counted", style="dim")
    if record.state == TrialState.FAIL:
        failure = record.failure or {}
        error = ": ".join(filter(None, (failure.get("type"), failure.get("error"))))
        return Text.assemble((f"trial {number} failed", "red"),
                             f" in {failure.get('stage', '?')}: {error[:ERROR_CHARACTERS]}")
    if record.state == TrialState.PRUNED:
        return Text.assemble((f"trial {number} stopped early", "yellow"),
                             f": {(record.pruned or {}).get('reason', '')}")
    return Text.assemble((f"trial {number} complete", "green"),
                         f": {record.recipe_short} · {metric} {record.accuracy:.2%} · "
                         f"{record.latency_ms:.2f} ms ({record.ratio:.2f}x)")


def summary(rows: list[FrontRow], metric: str = ACCURACY) -> str:
    """The front's size, fastest latency and best score of the task metric (named ``metric``)."""
    if not rows:
        return "front 0"
    fastest = min(rows, key=lambda row: row.latency_ms)
    most_accurate = max(rows, key=lambda row: row.accuracy)
    return (f"front {len(rows)} · fastest {fastest.latency_ms:.2f} ms ({fastest.ratio:.2f}x)"
            f" · best {metric} {most_accurate.accuracy:.2%}")
