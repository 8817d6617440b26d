"""The report's Plotly figures, one function each, drawn from the frames of ``reports.data``.

Plotly renders hover and legend text as a small subset of HTML, so every string that comes from a
study (recipes, roles, labels, parameter names) is HTML-escaped here: ``<script>`` then shows as
text. Traces carry ``meta={"kind": ...}`` so tests (and readers of the page's figure data) can
tell the trial points from the front, the reference and the confirmed figures.
"""

from __future__ import annotations

import warnings
from html import escape
from itertools import cycle
from typing import Literal

import optuna
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from edgetune.objectives.runtimes import RUNTIMES
from edgetune.reports.analysis import Hypervolume, Importances
from edgetune.search.constraints import Constraints
from edgetune.spaces.knob import Slot
from edgetune.spaces.registry import knobs

FONT = "system-ui, -apple-system, 'Segoe UI', Roboto, sans-serif"
GREY = "#7f7f7f"
ALERT = "#d62728"
View = Slot | Literal["runtime"]  # what the trials' points are coloured by
# colour -> symbol; "runtime" where a study searched several (``space.runtime``)
VIEWS: dict[View, Slot] = {"quantization": "pruning",
                                                 "pruning": "quantization",
                                                 "runtime": "quantization"}
# For values no registered knob declares a legend for: a knob this edgetune does not have, or
# nothing recorded (""). Each knob's own colour, symbol and name come from its declaration.
SPARE_COLOURS = ("#e377c2", "#bcbd22", "#393b79", "#8c564b")
UNKNOWN_SYMBOL = "x"


def pareto(trials: pd.DataFrame, front: pd.DataFrame, reference: pd.Series | None,
           constraints: Constraints, latency_title: str, metric: str = "accuracy") -> go.Figure:
    """Latency vs the task metric (named ``metric``; its values are in the frames' ``accuracy``
    column): every complete trial, the front as a staircase, FP32 and constraints.

    The staircase reads as "the best score available under a latency budget": follow the
    budget up to the line. Colour and symbol show the quantization scheme and the pruning method;
    the buttons swap which is which.
    """
    done = trials[trials["state"] == "complete"]
    ref_accuracy = None if reference is None else float(reference["accuracy"])
    figure = go.Figure()
    # One front over several runtimes is coloured by runtime first.
    views = list(VIEWS) if done["runtime"].nunique() > 1 else [v for v in VIEWS if v != "runtime"]
    first = views[-1] if "runtime" in views else views[0]
    for colour_by in views:
        _add_trial_traces(figure, done, colour_by, ref_accuracy, metric,
                          visible=colour_by == first)
    _add_front(figure, front, ref_accuracy, metric)
    _add_confirmed(figure, front, ref_accuracy, metric)
    if reference is not None:
        figure.add_trace(go.Scatter(
            x=[reference["latency_ms"]], y=[reference["accuracy"]], mode="markers+text",
            name="FP32 reference", text=["FP32"], textposition="middle left",
            marker={"symbol": "star", "size": 18, "color": "gold",
                    "line": {"color": "black", "width": 1}},
            hovertext=[_hover(reference, ref_accuracy, metric)],
            hovertemplate="%{hovertext}<extra></extra>",
            meta={"kind": "reference"}))
        figure.add_hline(y=ref_accuracy, line={"dash": "dot", "color": GREY, "width": 1},
                         annotation_text=f"FP32 {metric} {ref_accuracy:.2%}",
                         annotation_position="top left")
    _add_constraints(figure, constraints, ref_accuracy, metric)
    trace_views = [(trace.meta or {}).get("view") for trace in figure.data]
    figure.update_layout(
        updatemenus=[{
            "type": "buttons", "direction": "right", "x": 0, "y": 1.13, "xanchor": "left",
            "showactive": True, "active": views.index(first),
            "buttons": [{
                "label": f"colour by {colour_by}", "method": "restyle",
                "args": [{"visible": [view in (None, colour_by) for view in trace_views]}],
            } for colour_by in views],
        }],
    )
    # From zero, distances along the axis read as speed-ups, and labels left of points fit.
    figure.update_xaxes(rangemode="tozero")
    return _styled(figure, f"{metric.capitalize()} vs latency: every complete trial, the front "
                   "joined", latency_title, f"validation {metric}", y_format=".1%", height=560)


def _add_trial_traces(figure: go.Figure, done: pd.DataFrame,
                      colour_by: View,
                      ref_accuracy: float | None, metric: str, visible: bool) -> None:
    """One trace per colour; each point's symbol by the other attribute, explained in the legend
    by point-less traces."""
    symbol_by = VIEWS[colour_by]
    colours = _colours(colour_by, done[colour_by])
    for value, rows in done.groupby(colour_by, sort=False):
        figure.add_trace(go.Scatter(
            x=rows["latency_ms"], y=rows["accuracy"], mode="markers",
            name=escape(_name(colour_by, value)),
            legendgroup=colour_by, legendgrouptitle={"text": f"colour: {colour_by}"},
            marker={"color": colours[value], "size": 10, "opacity": 0.85,
                    "symbol": [_symbol(symbol_by, v) for v in rows[symbol_by]],
                    "line": {"color": "white", "width": 1}},
            hovertext=[_hover(row, ref_accuracy, metric) for _, row in rows.iterrows()],
            hovertemplate="%{hovertext}<extra></extra>",
            visible=visible, meta={"kind": "trial", "view": colour_by},
        ))
    for value in dict.fromkeys(done[symbol_by]):
        figure.add_trace(go.Scatter(
            x=[None], y=[None], mode="markers", name=escape(_name(symbol_by, value)),
            legendgroup=f"{colour_by}-symbols",
            legendgrouptitle={"text": f"symbol: {symbol_by}"},
            marker={"color": GREY, "size": 10, "symbol": _symbol(symbol_by, value)},
            hoverinfo="skip", visible=visible, meta={"kind": "legend", "view": colour_by}))


def _add_front(figure: go.Figure, front: pd.DataFrame, ref_accuracy: float | None,
               metric: str) -> None:
    kept = front[front["on_front"]]
    figure.add_trace(go.Scatter(
        x=kept["shown_latency_ms"], y=kept["accuracy"], mode="lines+markers+text",
        line={"shape": "hv", "color": "black", "width": 2},
        marker={"size": 16, "symbol": "circle-open", "color": "black", "line": {"width": 2}},
        text=[f"#{row['trial']}" + _cost(row["accuracy"], ref_accuracy)
              for _, row in kept.iterrows()], textposition="top left",
        textfont={"size": 12, "color": "black"},
        name="Pareto front",
        hovertext=[_hover(row, ref_accuracy, metric) for _, row in kept.iterrows()],
        hovertemplate="%{hovertext}<extra>front</extra>", meta={"kind": "front"},
    ))


def _add_confirmed(figure: go.Figure, front: pd.DataFrame, ref_accuracy: float | None,
                   metric: str) -> None:
    """Confirmed latencies with the range of their rounds; a cross where a trial left the front."""
    confirmed = front[front["confirmed_latency_ms"].notna()]
    if confirmed.empty:
        return
    figure.add_trace(go.Scatter(
        x=confirmed["confirmed_latency_ms"], y=confirmed["accuracy"], mode="markers",
        name="confirmed (range of rounds)",
        error_x={"type": "data", "symmetric": False, "color": "black", "thickness": 1.5,
                 "array": confirmed["confirmed_high_ms"] - confirmed["confirmed_latency_ms"],
                 "arrayminus": confirmed["confirmed_latency_ms"] - confirmed["confirmed_low_ms"]},
        marker={"size": 9, "color": [ALERT if off else "black"
                                     for off in confirmed["moved_off_front"]],
                "symbol": ["x" if off else "diamond" for off in confirmed["moved_off_front"]]},
        hovertext=[_hover(row, ref_accuracy, metric) for _, row in confirmed.iterrows()],
        hovertemplate="%{hovertext}<extra>confirmed</extra>", meta={"kind": "confirmed"},
    ))


def _add_constraints(figure: go.Figure, constraints: Constraints,
                     ref_accuracy: float | None, metric: str) -> None:
    floor = constraints.floor(ref_accuracy)
    if floor is not None:
        figure.add_hline(y=floor, line={"dash": "dash", "color": ALERT, "width": 1.5},
                         annotation_text=f"{metric} floor {floor:.2%}",
                         annotation_position="top left")
    if constraints.max_latency_ms is not None:
        figure.add_vline(x=constraints.max_latency_ms,
                         line={"dash": "dash", "color": ALERT, "width": 1.5},
                         annotation_text=f"latency budget {constraints.max_latency_ms:g} ms",
                         annotation_position="bottom right")


def _cost(accuracy: float, ref_accuracy: float | None, against: str = "") -> str:
    """The score a trial gives up against FP32, in points: what shipping it costs."""
    if ref_accuracy is None:
        return ""
    return f" ({(accuracy - ref_accuracy) * 100:+.1f} pt{against})"


def _hover(row: pd.Series, ref_accuracy: float | None, metric: str) -> str:
    role = f" · {escape(row['role'])}" if row["role"] else ""
    lines = [f"<b>trial #{row['trial']}</b>{role}",
             escape(row["recipe"] or "(no recipe recorded)")]
    lines.append(f"validation {metric} {row['accuracy']:.2%}"
                 + _cost(row["accuracy"], ref_accuracy, " vs FP32"))
    lines.append(f"latency {row['latency_ms']:.2f} ms · {row['ratio']:.2f}× FP32"
                 + (f" · rounds spread {row['spread']:.0%}" if pd.notna(row["spread"]) else ""))
    if pd.notna(row["confirmed_latency_ms"]):
        lines.append(f"confirmed {row['confirmed_latency_ms']:.2f} ms "
                     f"({row['confirmed_low_ms']:.2f}–{row['confirmed_high_ms']:.2f}) · "
                     f"{row['confirmed_ratio']:.2f}× FP32 · "
                     f"test {metric} {row['test_accuracy']:.2%}"
                     + (" · <b>moved off the front</b>" if row["moved_off_front"] else ""))
    lines.append(f"size {row['size_mb']:.1f} MB · zipped {row['zipped_mb']:.1f} MB")
    return "<br>".join(lines)


def importances(result: Importances) -> go.Figure | None:
    """Each knob's share of importance for each objective, as grouped horizontal bars."""
    if result.frame is None:
        return None
    frame = result.frame.iloc[::-1]  # most important at the top
    figure = go.Figure()
    for objective, colour in zip(frame.columns, ("#1f77b4", "#ff7f0e")):
        figure.add_trace(go.Bar(
            y=[escape(str(name)) for name in frame.index], x=frame[objective], orientation="h",
            name=escape(str(objective)), marker_color=colour,
            hovertemplate="%{y}: %{x:.0%} of the importance for " + escape(str(objective))
                          + "<extra></extra>"))
    figure.update_layout(barmode="group")
    return _styled(figure, "Which knob moves which objective (PED-ANOVA importance, per objective)",
                   "share of importance", "", x_format=".0%", height=120 + 45 * len(frame))


def parallel(study: optuna.Study) -> go.Figure:
    """Optuna's parallel coordinates: both objectives, every parameter, colour by Pareto rank."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        figure = optuna.visualization.plot_parallel_coordinate(study)
    figure.update_layout(title=None, height=480, font={"family": FONT},
                         margin={"l": 40, "r": 40, "t": 60, "b": 90})
    return figure


def latency_vs_size(trials: pd.DataFrame, constraints: Constraints) -> go.Figure:
    """Latency against file size (filled) and zipped size (open), by pruning method.

    Unstructured pruning zeroes weights: the zipped file shrinks, the latency does not (dense
    kernels do the same work). The grey segment joins a trial's two sizes so this shows.
    """
    done = trials[trials["state"] == "complete"]
    figure = go.Figure()
    segments_x: list[float | None] = []
    segments_y: list[float | None] = []
    for _, row in done.iterrows():
        segments_x += [row["size_mb"], row["zipped_mb"], None]
        segments_y += [row["latency_ms"], row["latency_ms"], None]
    figure.add_trace(go.Scatter(x=segments_x, y=segments_y, mode="lines", hoverinfo="skip",
                                line={"color": "#cccccc", "width": 1}, showlegend=False))
    colours = _colours("pruning", done["pruning"])
    for method, rows in done.groupby("pruning", sort=False):
        name = escape(_name("pruning", method))
        hover = [f"<b>trial #{row['trial']}</b><br>{escape(row['recipe'])}<br>"
                 f"{row['latency_ms']:.2f} ms · file {row['size_mb']:.1f} MB · "
                 f"zipped {row['zipped_mb']:.1f} MB" for _, row in rows.iterrows()]
        for column, symbol, label in (("size_mb", "circle", "file"),
                                      ("zipped_mb", "circle-open", "zipped")):
            figure.add_trace(go.Scatter(
                x=rows[column], y=rows["latency_ms"], mode="markers",
                name=f"{name} · {label}", legendgroup=name,
                marker={"color": colours[method], "symbol": symbol, "size": 10,
                        "line": {"width": 2, "color": colours[method]}},
                hovertext=hover, hovertemplate="%{hovertext}<extra></extra>"))
    if constraints.max_size_mb is not None:
        figure.add_vline(x=constraints.max_size_mb,
                         line={"dash": "dash", "color": ALERT, "width": 1.5},
                         annotation_text=f"size budget {constraints.max_size_mb:g} MB")
    return _styled(figure, "Latency vs model size: file (filled) and zipped (open)",
                   "size (MB)", "latency (ms)", height=440)


def hypervolume(result: Hypervolume) -> go.Figure:
    """The hypervolume after each complete trial, against trial number and against wall time."""
    frame = result.frame
    figure = make_subplots(rows=1, cols=2, subplot_titles=("over trials", "over wall time"),
                           shared_yaxes=True, horizontal_spacing=0.06)
    for col, x in ((1, frame["trial"]), (2, frame["minutes"])):
        figure.add_trace(go.Scatter(x=x, y=frame["hypervolume"], mode="lines+markers",
                                    line={"shape": "hv", "color": "#1f77b4"}, showlegend=False,
                                    hovertext=[f"after trial #{n}" for n in frame["trial"]],
                                    hovertemplate="%{hovertext}: %{y:.4g}<extra></extra>"),
                         row=1, col=col)
    figure.update_xaxes(title_text="trial number", row=1, col=1)
    figure.update_xaxes(title_text="minutes since the study started", row=1, col=2)
    figure.update_yaxes(title_text=f"hypervolume ({escape(result.metric)} × ms)", row=1, col=1)
    figure.update_layout(height=360, font={"family": FONT}, template="plotly_white",
                         margin={"l": 60, "r": 20, "t": 40, "b": 50})
    return figure


def _colours(slot: View, values: pd.Series) -> dict[str, str]:
    spare = cycle(SPARE_COLOURS)
    if slot == "runtime":
        return {value: RUNTIMES[value].colour if value in RUNTIMES else next(spare)
                for value in dict.fromkeys(values)}
    known = knobs(slot)
    return {value: known[value].colour if value in known else next(spare)
            for value in dict.fromkeys(values)}


def _symbol(slot: Slot, value: str) -> str:
    known = knobs(slot).get(value)
    return known.symbol if known else UNKNOWN_SYMBOL


def _name(slot: View, value: str) -> str:
    """A legend's name for a recipe's knob: the knob's own, where it declares one; a runtime's
    title."""
    if slot == "runtime":
        return RUNTIMES[value].title if value in RUNTIMES else value
    known = knobs(slot).get(value)
    return known.legend if known else (value or "unknown")


def _styled(figure: go.Figure, title: str, x_title: str, y_title: str, *,
            x_format: str | None = None, y_format: str | None = None,
            height: int = 420) -> go.Figure:
    figure.update_layout(
        title={"text": title, "x": 0, "xanchor": "left", "y": 0.98},
        template="plotly_white", height=height, font={"family": FONT, "size": 13},
        hoverlabel={"align": "left"}, legend={"groupclick": "toggleitem"},
        margin={"l": 70, "r": 20, "t": 90, "b": 60},
    )
    figure.update_xaxes(title_text=x_title, tickformat=x_format)
    figure.update_yaxes(title_text=y_title, tickformat=y_format)
    return figure
