"""One self-contained HTML page from a study: figures, the front table, failures and context.

The page works from disk with no network: Plotly's JavaScript is inlined once, figures carry no
MathJax and the page loads no fonts. The template (``templates/report.html.j2``) is rendered with
Jinja's autoescaping, so every study string (labels, names, paths, config values, recipes, error
messages) lands in the page as text; figure texts are escaped in ``reports.figures``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jinja2
import optuna
import pandas as pd
import plotly.graph_objects as go
import yaml
from markupsafe import Markup
from plotly.offline import get_plotlyjs

from edgetune.objectives.metrics import ACCURACY
from edgetune.reports import analysis, data, figures
from edgetune.reports.context import context, export_command
from edgetune.search.constraints import Constraints
from edgetune.search.front import other_devices
from edgetune.search.study import Location, metric_name

PLOTLY_CONFIG = {"displaylogo": False, "responsive": True}
TEMPLATES = jinja2.Environment(
    loader=jinja2.PackageLoader("edgetune.reports", "templates"),
    autoescape=True, undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True,
)


def _number(value: float | None, spec: str) -> str:
    """``value`` formatted by ``spec``, or a dash for a figure that was not measured."""
    return "—" if value is None or pd.isna(value) else format(value, spec)


TEMPLATES.filters["number"] = _number


def write_report(study: optuna.Study, location: Location, out: Path) -> Path:
    """Write the report of ``study`` to ``out`` (folders created as needed); return its path."""
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(render(study, location), encoding="utf-8")
    return out


def render(study: optuna.Study, location: Location) -> str:
    trials = data.trials_frame(study)
    front = data.front_frame(trials)
    reference = data.reference(trials)
    about = context(study, location, trials)
    latency_title = _latency_title(about.config, about.data.get("image_size"))
    importances = analysis.importances(study)
    progress = analysis.hypervolume(study, trials, len(about.data.get("labels") or []))
    has_trials = (trials["state"] == data.COMPLETE).any()
    metric = metric_name(study)
    plots = {
        "pareto": figures.pareto(trials, front, reference, about.constraints, latency_title,
                                 metric),
        "importances": figures.importances(importances),
        "parallel": figures.parallel(study) if has_trials else None,
        "size": figures.latency_vs_size(trials, about.constraints),
        "hypervolume": figures.hypervolume(progress) if progress else None,
    }
    device_plots = {}
    for device in other_devices(study):
        measured = data.trials_frame(study, device)
        device_plots[device] = _div(figures.pareto(
            measured, data.front_frame(measured), data.reference(measured), about.constraints,
            f"{latency_title[:-1]}; on device {device})", metric),
            f"pareto-device-{len(device_plots)}")
    return TEMPLATES.get_template("report.html.j2").render(
        about=about,
        metric=metric,
        plotly_js=Markup(get_plotlyjs()),
        plots={name: _div(figure, name) for name, figure in plots.items()},
        device_plots=device_plots,
        counts=trials["state"].value_counts().to_dict(),
        running=[{"trial": int(row["trial"]), "started": f"{row['started']:%Y-%m-%d %H:%M}"}
                 for _, row in trials[trials["state"] == "running"].iterrows()],
        glance=_glance(front, reference, about.constraints, metric),
        front_rows=_front_rows(front, reference, location, about.constraints, metric),
        confusions=_confusions(front),
        failures=_failure_rows(data.failures(trials)),
        importances=importances,
        hypervolume=progress,
        config_yaml=yaml.safe_dump(about.config, sort_keys=False, allow_unicode=True),
    )


def _div(figure: go.Figure | None, name: str) -> Markup | None:
    if figure is None:
        return None
    # Plotly escapes "<", ">" and "/" in the figure JSON it embeds, so no study string can close
    # the script element; texts inside figures were HTML-escaped when the figure was drawn.
    return Markup(figure.to_html(full_html=False, include_plotlyjs=False, div_id=f"plot-{name}",
                                 config=PLOTLY_CONFIG))


def _latency_title(config: dict[str, Any], image_size: int | None = None) -> str:
    """What the latency axis measures; ``image_size``: an image study's input side."""
    target = config.get("target") or {}
    shape = (("px", f"{image_size}x{image_size}") if image_size is not None
             else ("tokens", target.get("sequence_length")))
    setting = ", ".join(f"{value} {name}" for name, value in (
        ("batch", target.get("batch_size")), shape,
        ("threads", target.get("threads"))) if value is not None)
    return "latency (ms, ONNX Runtime CPU" + (f"; {setting}" if setting else "") + ")"


def _violations(row: pd.Series, floor: float | None, constraints: Constraints,
                metric: str) -> list[str]:
    problems = []
    if floor is not None and row["accuracy"] < floor:
        problems.append(f"{metric} below {floor:.2%}")
    budget = constraints.max_latency_ms
    if budget is not None and row["shown_latency_ms"] > budget:
        problems.append(f"slower than {budget:g} ms")
    if constraints.max_size_mb is not None and row["size_mb"] > constraints.max_size_mb:
        problems.append(f"larger than {constraints.max_size_mb:g} MB")
    return problems


def _front_rows(front: pd.DataFrame, reference: pd.Series | None, location: Location,
                constraints: Constraints, metric: str) -> list[dict[str, Any]]:
    ref_accuracy = None if reference is None else float(reference["accuracy"])
    floor = constraints.floor(ref_accuracy)
    rows = []
    for _, row in front.iterrows():
        if row["moved_off_front"]:
            status = "moved off the front when confirmed"
        elif not row["on_front"]:
            status = "off the front once confirmed figures count"
        elif pd.notna(row["confirmed_latency_ms"]):
            status = "confirmed"
        else:
            status = "not confirmed"
        problems = _violations(row, floor, constraints, metric)
        delta = None if ref_accuracy is None else (row["accuracy"] - ref_accuracy) * 100
        rows.append({
            "trial": int(row["trial"]),
            "recipe": row["recipe"],
            "accuracy": row["accuracy"],
            "delta": delta,
            "test_accuracy": row["test_accuracy"],
            "latency_ms": row["shown_latency_ms"],
            "ratio": row["shown_ratio"],
            "size_mb": row["size_mb"],
            "zipped_mb": row["zipped_mb"],
            "status": "; ".join([status, *(f"outside constraints: {p}" for p in problems)]),
            "on_front": bool(row["on_front"]),
            "muted": bool(problems) or not row["on_front"],
            "command": export_command(location, int(row["trial"])),
        })
    return rows


def _glance(front: pd.DataFrame, reference: pd.Series | None, constraints: Constraints,
            metric: str) -> list[dict[str, Any]]:
    """The few rows that answer "which trial do I ship under X ms, at what cost in the task
    metric (named ``metric``)?"."""
    kept = front[front["on_front"]]
    if kept.empty:
        return []
    ref_accuracy = None if reference is None else float(reference["accuracy"])
    best = "most accurate" if metric == ACCURACY else f"best {metric}"
    picks: list[tuple[str, pd.Series | None]] = [("FP32 reference", reference),
                                                 ("fastest on the front", kept.iloc[0])]
    if ref_accuracy is not None:
        drop = constraints.max_accuracy_drop or 0.01
        close = kept[kept["accuracy"] >= ref_accuracy - drop]
        picks.append((f"fastest within {drop * 100:g} pt of FP32 {metric}",
                      close.iloc[0] if not close.empty else None))
    if constraints != Constraints():
        floor = constraints.floor(ref_accuracy)
        within = kept[[not _violations(row, floor, constraints, metric)
                       for _, row in kept.iterrows()]]
        picks.append((f"{best} within the constraints "
                       f"({constraints.describe(floor, metric)})",
                       within.loc[within["accuracy"].idxmax()] if not within.empty else None))
    picks.append((f"{best} on the front", kept.loc[kept["accuracy"].idxmax()]))
    return [{"label": label, "row": None if row is None else {
        "trial": int(row["trial"]),
        "recipe": row["recipe"],
        "latency_ms": row.get("shown_latency_ms", row["latency_ms"]),
        "ratio": row.get("shown_ratio", row["ratio"]),
        "accuracy": row["accuracy"],
        "delta": None if ref_accuracy is None else (row["accuracy"] - ref_accuracy) * 100,
    }} for label, row in picks]


def _confusions(front: pd.DataFrame) -> list[dict[str, Any]]:
    """The confusion matrices of the front's trials, in trial order: on validation (what the
    search scored) and on test where a confirmation computed them."""
    return [{"trial": int(row["trial"]), "recipe": row["recipe"],
             "splits": {split: row[column] for split, column in (
                 ("validation", "confusion"), ("test", "test_confusion")) if row[column]}}
            for _, row in front[front["on_front"]].sort_index().iterrows()
            if row["confusion"]]


def _failure_rows(failed: pd.DataFrame) -> list[dict[str, Any]]:
    return [{
        "trial": int(row["trial"]),
        "state": row["state"],
        "stage": row["failure_stage"] or "—",
        "reason": _reason(row),
        "recipe": row["recipe"],
        "traceback": row["failure_traceback"],
    } for _, row in failed.iterrows()]


def _reason(row: pd.Series) -> str:
    if row["failure_error"]:
        reason = (f"{row['failure_type']}: " if row["failure_type"] else "") + row["failure_error"]
    elif row["state"] == "pruned":
        reason = "pruned by the study's pruner"
    else:  # edgetune records every error it catches: the process itself stopped
        reason = "its worker stopped mid-trial (killed, or lost its heartbeat)"
    if pd.notna(row["retried_as"]):
        reason += f"; retried as trial #{int(row['retried_as'])}"
    return reason
