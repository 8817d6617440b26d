"""The live view of a running study: a bar per trial with the front's size and best figures."""

from __future__ import annotations

import optuna
from optuna.trial import FrozenTrial, TrialState
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from edgetune.search.front import front
from edgetune.search.record import TrialRecord


class TrialProgress:
    """An Optuna callback that advances a progress bar as trials finish (repeats, which do not
    count toward the budget, do not advance it)."""

    def __init__(self, total: int, done: int, console: Console) -> None:
        self.console = console
        self.progress = Progress(
            TextColumn("[bold]trials"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
            TextColumn("{task.description}"), console=console, transient=False,
        )
        self.task = self.progress.add_task("", total=total, completed=done)

    def __enter__(self) -> TrialProgress:
        self.progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.progress.stop()

    def status(self, text: str) -> None:
        self.progress.update(self.task, description=text)

    def __call__(self, study: optuna.Study, trial: FrozenTrial) -> None:
        record = TrialRecord.of(trial)
        if trial.state == TrialState.FAIL:
            failure = record.failure or {}
            self.console.print(f"[red]trial {trial.number} failed[/red] in "
                               f"{failure.get('stage', '?')}: {failure.get('error', '')[:200]}")
        if record.duplicate_of is not None:
            self.console.print(f"[dim]trial {trial.number} repeated trial "
                               f"{record.duplicate_of}'s recipe: not built, not counted[/dim]")
            return
        if trial.state == TrialState.PRUNED:
            reason = (record.pruned or {}).get("reason", "")
            self.console.print(f"[yellow]trial {trial.number} stopped early[/yellow]: {reason}")
        rows = front(study)
        best = ""
        if rows:
            fastest = min(rows, key=lambda r: r.latency_ms)
            most_accurate = max(rows, key=lambda r: r.accuracy)
            best = (f" · fastest {fastest.latency_ms:.2f} ms ({fastest.ratio:.2f}x)"
                    f" · best accuracy {most_accurate.accuracy:.2%}")
        self.progress.update(self.task, advance=1,
                             description=f"front {len(rows)}{best}")
