"""What ``run``, ``status``, ``confirm`` and ``bench`` print: rich tables, or JSON on stdout."""

from __future__ import annotations

import json
from typing import Any

import click
import optuna
from rich.console import Console
from rich.table import Table

from edgetune.search import front as fronts
from edgetune.search.record import ANCHOR_QUANTILE, Anchor, FrontRow
from edgetune.search.study import metric_name


def print_study(study: optuna.Study, as_json: bool, extra: dict[str, Any] | None = None) -> None:
    """The front of each machine, confirmed figures (and the test score of the task metric) where
    the confirmation measured them, then what the confirmation changed.

    Notes about the front (machines, a stale confirmation) go to stderr with the study's counts.
    """
    rows = fronts.front(study)
    fp32 = fronts.reference_row(study)
    machines = fronts.machines(rows)
    record = fronts.confirmation(study)
    confirmed = fronts.confirmed_rows(study)
    current = record is not None and fronts.is_current(study)
    others = fronts.other_devices(study)
    if as_json:
        click.echo(json.dumps({
            "study": study.study_name, **(extra or {}),
            "metric": metric_name(study),  # what each row's accuracy and test_accuracy score
            "machines": machines,
            "reference": fp32.as_dict() if fp32 else None,
            "reference_latency": {machine: anchor.as_dict() for machine, anchor in
                                  fronts.reference_latencies(study).items()},
            "front": [row.as_dict() for row in rows],
            "confirmation": {**record, "current": current} if record else None,
            "confirmed_front": [row.as_dict() for row in confirmed if row.on_front],
            "moved_off_front": [row.as_dict() for row in confirmed if row.moved_off_front],
            "devices": {device: [row.as_dict() for row in fronts.front(study, device)]
                        for device in others},
        }, indent=2))
        return
    console = Console()
    if len(machines) > 1:
        Console(stderr=True).print(
            f"[yellow]note[/yellow]: latencies measured on {len(machines)} kinds of machine "
            f"({'; '.join(machines)}): latencies from different machines are not compared, each "
            "has its own front", highlight=False)
    _fronts(console, study, rows, fp32, None)
    if record is not None:
        _confirmed(console, record, confirmed, current, metric_name(study))
    for device in others:
        _fronts(console, study, fronts.front(study, device), fronts.reference_row(study, device),
                device)


def _fronts(console: Console, study: optuna.Study, rows: list[FrontRow], fp32: FrontRow | None,
            device: str | None) -> None:
    """A table per machine of ``rows``, with the FP32 reference's row and what ms mean there."""
    source = f" (agent of device {device!r})" if device is not None else ""
    metric = metric_name(study)
    for machine in fronts.machines(rows):
        table = Table(title=f"Pareto front of {study.study_name}: {metric} (validation) vs "
                            f"latency, measured on {machine}{source}"
                            + (" (confirmed where marked)" if any(r.confirmed for r in rows)
                               else ""))
        for column in ("trial", "recipe", metric, f"test {metric}", "latency ms", "× FP32",
                       "size MB"):
            table.add_column(column, justify="left" if column == "recipe" else "right")
        shown = [row for row in rows if row.machine == machine]
        if fp32 is not None and fp32.machine == machine and fp32.trial not in {
                row.trial for row in shown}:
            table.add_row(*_cells(fp32), style="dim", end_section=True)
        for row in shown:
            table.add_row(*_cells(row))
        console.print(table)
        anchor = fronts.reference_latencies(study, device).get(machine)
        if anchor is not None:
            console.print(_milliseconds(anchor), highlight=False)


def _milliseconds(anchor: Anchor) -> str:
    where = "beside the trials" + (" and in the confirmation" if anchor.confirmed else "")
    return (f"latency ms: × FP32 times {anchor.ms:.2f} ms, the FP32 reference's latency here: the "
            f"{ANCHOR_QUANTILE:.0%} quantile of its {anchor.measurements} measurements "
            f"{where} (a busy machine only slows it)")


def _cells(row: FrontRow) -> list[str]:
    test = f"{row.test_accuracy:.2%}" if row.test_accuracy is not None else ""
    return [str(row.trial), row.recipe, f"{row.accuracy:.2%}", test,
            f"{row.latency_ms:.2f}{' ✓' if row.confirmed else ''}", f"{row.ratio:.2f}",
            f"{row.size_mb:.1f}"]


def _confirmed(console: Console, record: dict[str, Any], rows: list[fronts.ConfirmedRow],
               current: bool, metric: str) -> None:
    table = Table(title=f"Confirmed front: measured again together, {record['rounds']} rounds, "
                        f"{record['date']}, on {record['machine']}")
    table.caption = ("× FP32: the median of the per-round ratios to the FP32 reference, measured "
                     "beside it; 95% interval: where that median lies (docs/measurement.md)")
    for column in ("trial", "recipe", metric, f"test {metric}", "latency ms", "× FP32",
                   "95% interval"):
        table.add_column(column, justify="left" if column == "recipe" else "right")
    for row in rows:
        if row.on_front:
            test = f"{row.test_accuracy:.2%}" if row.test_accuracy is not None else ""
            interval = "{:.2f}–{:.2f}".format(*row.interval) if row.interval else ""
            table.add_row(str(row.trial), row.recipe, f"{row.accuracy:.2%}", test,
                          f"{row.latency_ms:.2f}", f"{row.ratio:.2f}", interval)
    console.print(table)
    for row in rows:
        if row.moved_off_front:
            console.print(f"[yellow]trial {row.trial} ({row.recipe}) moved off the front on "
                          f"confirmation: {row.latency_ms:.2f} ms ({row.ratio:.2f}x FP32), "
                          f"{row.search_latency_ms:.2f} ms in its trial[/yellow]")
    if not current:
        console.print("[yellow]trials finished since this confirmation: run `edgetune confirm` "
                      "to confirm the front again[/yellow]")


def print_bench(result: dict[str, Any], as_json: bool) -> None:
    """``edgetune bench``'s figures: each model's latency and the ratio to the baseline."""
    if as_json:
        click.echo(json.dumps(result, indent=2))
        return
    target, protocol = result["target"], result["measure"]
    rounds = len(result["models"]["model"]["round_medians_ms"])
    images = [shape for shape in (result.get("input_shapes") or {}).values() if len(shape) == 4]
    size = (f"{images[0][2]}x{images[0][3]} images" if images
            else f"sequence {target['sequence_length']}")
    table = Table(title=f"ONNX Runtime CPU, {target['threads']} thread(s), batch "
                        f"{target['batch_size']}, {size}, "
                        f"{result['inputs']} inputs: {rounds} rounds of "
                        f"{protocol['runs']} runs")
    for column in ("model", "median ms", "p90 ms", "spread", "× baseline", "95% interval",
                   "ratio spread"):
        table.add_column(column, justify="left" if column == "model" else "right")
    relative = result["ratio"]
    for name, figures in result["models"].items():
        ratio_cells = ([f"{relative['value']:.3f}",
                        "{:.3f}-{:.3f}".format(*relative["interval"]),
                        f"{relative['spread']:.1%}"]
                       if relative and name == "model" else ["", "", ""])
        table.add_row(figures["path"], f"{figures['median_ms']:.3f}", f"{figures['p90_ms']:.3f}",
                      f"{figures['spread']:.1%}", *ratio_cells)
    Console().print(table)
