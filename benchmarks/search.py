"""Which sampler finds the best front soonest, how good that front is, and where the time goes.

Issue 8's benchmark. For every sampler and seed it runs one study of ``--trials`` trials with
``edgetune run`` on ``--config`` (the default task unless told otherwise), each in its own process
and with its own cold cache of pruned models and exports (only the fine-tuned base is shared, as
it is for a user's second study), so that wall times compare fairly. With ``--shared-cache`` all
the studies of the run share one cache instead: a model is built from its recipe and the study's
training seed, which the sampler's seed does not change, so a recipe that two studies sample (the
baselines, the start-up trials of samplers seeded alike, where samplers converge) is trained once.
Trial counts still compare fairly; wall times then favour the studies run after the first (the
order of ``--seeds``, then ``--samplers``). With ``--rungs 25,50`` every sampler also runs as
``<sampler>+rungs``, its recoveries compared at those steps (``search.rungs``), right after the
plain study with the same seed: old and new search back to back on the same host. A study the
script finished in ``--work`` before is read, not run again, so a run cut short goes on where it
stopped. Then it prints Markdown for ``benchmarks/RESULTS.md``:

(a) hypervolume after 10, 20, ... trials and after equal wall time, per sampler (mean over seeds),
    then seed by seed at the budget, beside random with the same seed, and writes the curves to
    ``--plot`` (an HTML page; Plotly's script is loaded from its CDN to keep the file small). The
    reference point is the accuracy floor (the FP32 reference's validation accuracy minus
    ``search.constraints.max_accuracy_drop``, 1 point if unset) and the FP32 latency; latency is
    taken as a ratio to FP32, so studies measured under different machine load compare. Infeasible
    trials add nothing (Optuna's hypervolume history).
(b) each study's front confirmed with ``edgetune confirm`` (when this edgetune has it): the
    best confirmed latency ratio within 1 point of FP32 test accuracy, beside FP32, dynamic INT8
    and the peer tool's 0.42x;
(c) each study's wall time, split into training, export and measurement (the trials'
    ``stage_seconds``), accuracy checks (early stopping, rungs), and edgetune's own overhead
    (the rest);
(d) early stopping judged by the trials it let finish: at each check, the forecast (and the
    margin the rule adds to it) beside the validation accuracy the trial ended with.

    flock /tmp/edgetune-heavy.lock python benchmarks/search.py \\
        [--trials 40] [--samplers tpe,nsga2,gp,random] [--seeds 0] [--work runs/bench-search] \\
        [--rungs 25,50 [--only-rungs]]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
import warnings
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import optuna
import yaml
from optuna.trial import FrozenTrial, TrialState

from edgetune.search.early_stopping import stopping_record
from edgetune.search.record import RUNGS
from edgetune.search.repeats import is_repeat

ROOT = Path(__file__).resolve().parents[1]
PEER_RATIO = 0.42  # a peer tool's transformer optimisation + dynamic INT8, measured here (issue 8)
DEFAULT_DROP = 0.01
TRAINING_STAGES = ("prune_recover", "qat")


@dataclass
class Run:
    sampler: str  # with +rungs for a study run with search.rungs (--rungs)
    seed: int
    study: optuna.Study
    started: datetime  # when the `edgetune run` process was started
    wall_seconds: float
    run_dir: Path
    config: Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, default=ROOT / "examples" / "bbc-news.yaml")
    parser.add_argument("--trials", type=int, default=40)
    parser.add_argument("--samplers", default="tpe,nsga2,gp,random")
    parser.add_argument("--seeds", default="0")
    parser.add_argument("--work", type=Path, default=ROOT / "runs" / "bench-search")
    parser.add_argument("--plot", type=Path, default=ROOT / "benchmarks" / "search.html")
    parser.add_argument("--no-confirm", action="store_true", help="skip (b)")
    parser.add_argument("--shared-cache", action="store_true",
                        help="the studies share one cache (see above)")
    parser.add_argument("--reuse", action="store_true",
                        help="only read the studies this script already ran in --work (a "
                             "sampler and seed it did not run are left out)")
    parser.add_argument("--rungs", default="",
                        help="recovery steps, such as 25,50: each sampler also runs as "
                             "<sampler>+rungs with search.rungs set to them, after the plain one")
    parser.add_argument("--only-rungs", action="store_true",
                        help="with --rungs, run only the +rungs studies (the plain ones are "
                             "still read where --work has them)")
    args = parser.parse_args()
    rungs = [int(step) for step in args.rungs.split(",") if step]
    variants = ([[]] if not rungs else [[], rungs])
    runs = [run for seed in args.seeds.split(",") for sampler in args.samplers.split(",")
            for steps in variants
            if (run := run_study(args, sampler, int(seed), steps,
                                 read_only=args.reuse or (args.only_rungs and not steps)))
            is not None]
    curves = {(run.sampler, run.seed): hypervolume_curve(run) for run in runs}
    write_plot(curves, args.plot)
    print(section_a(curves, args.trials, args.shared_cache))
    if not args.no_confirm:
        for run in runs:
            print(section_b(run))
    for run in runs:
        print(section_c(run))
    print(section_d(runs))


def run_study(args: argparse.Namespace, sampler: str, seed: int, rungs: list[int],
              read_only: bool) -> Run | None:
    """One ``edgetune run`` in its own process and run folder, with a cold cache but the base,
    with ``search.rungs`` set to ``rungs`` if any. A study this script finished in ``--work``
    before is read, not run again; ``read_only``: None where there is none."""
    label = f"{sampler}+rungs" if rungs else sampler
    name = f"{sampler}-rungs-s{seed}" if rungs else f"{sampler}-s{seed}"  # a valid study name
    folder = args.work / name
    timing = folder / "wall.json"
    if read_only and not timing.exists():
        print(f"{name}: not run in {args.work}, left out", file=sys.stderr)
        return None
    folder.mkdir(parents=True, exist_ok=True)
    config = yaml.safe_load(args.config.read_text())
    config["study"] = f"bench-{name}"
    config["search"] = {**config.get("search", {}), "sampler": sampler, "seed": seed,
                        "trials": args.trials, **({"rungs": rungs} if rungs else {})}
    config["task"]["model"] = _absolute(config["task"]["model"], args.config.parent)
    config["task"]["data"]["path"] = _absolute(config["task"]["data"]["path"], args.config.parent)
    config_file = folder / "study.yaml"
    config_file.write_text(yaml.safe_dump(config, sort_keys=False))
    if not timing.exists():
        cache = args.work / "cache" if args.shared_cache else folder / "cache"
        env = {**os.environ, "EDGETUNE_CACHE_DIR": str(_cold_cache(cache))}
        started, start = datetime.now(), time.monotonic()
        result = subprocess.run(
            [sys.executable, "-m", "edgetune", "run", str(config_file), "--run-dir",
             str(folder / "run")], env=env, stdout=subprocess.DEVNULL, check=False)
        if result.returncode != 0:
            sys.exit(f"{name}: edgetune run exited {result.returncode}")
        timing.write_text(json.dumps({"started": started.isoformat(),
                                      "wall_seconds": time.monotonic() - start}))
    recorded = json.loads(timing.read_text())
    study = optuna.load_study(study_name=config["study"],
                              storage=f"sqlite:///{folder / 'run' / 'study.db'}")
    return Run(label, seed, study, datetime.fromisoformat(recorded["started"]),
               recorded["wall_seconds"], folder / "run", config_file)


def _absolute(location: str, base: Path) -> str:
    if location.startswith("pkg://") or Path(location).is_absolute():
        return location
    return str((base / location).resolve())


def _cold_cache(folder: Path) -> Path:
    """A cache holding only the shared fine-tuned base (linked, not copied)."""
    from edgetune.objectives.cache import default_cache_dir

    folder.mkdir(parents=True, exist_ok=True)
    shared = default_cache_dir() / "base"
    shared.mkdir(parents=True, exist_ok=True)
    if not (folder / "base").exists():
        (folder / "base").symlink_to(shared, target_is_directory=True)
    return folder


# (a) ---------------------------------------------------------------------------------------

@dataclass
class Curve:
    trials: list[int]  # trials so far that count toward the budget (finished, not repeats)
    minutes: list[float]
    hypervolume: list[float]  # in accuracy x (fraction of FP32 latency saved)


def hypervolume_curve(run: Run) -> Curve:
    """Optuna's hypervolume history, read after every finished trial, in ratio units."""
    study = run.study
    config = study.user_attrs["config"]
    drop = config["search"].get("constraints", {}).get("max_accuracy_drop") or DEFAULT_DROP
    reference_ms = study.user_attrs["reference_latency_ms"]
    floor = _reference_accuracy(study) - drop
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the function's "experimental" label
        history = optuna.visualization.plot_hypervolume_history(
            study, [floor, reference_ms]).data[0]
    by_number = dict(zip(history.x, history.y, strict=True))
    finished = sorted((t for t in study.get_trials(deepcopy=False)
                       if t.state.is_finished() and not is_repeat(t)),
                      key=lambda t: t.datetime_complete)
    curve = Curve([], [], [])
    raw = 0.0  # a pruned or failed trial leaves the hypervolume where it was
    for count, trial in enumerate(finished, start=1):
        raw = by_number.get(trial.number, raw)
        value = raw / reference_ms
        curve.trials.append(count)
        curve.minutes.append((trial.datetime_complete - run.started).total_seconds() / 60)
        curve.hypervolume.append(value)
    return curve


def _reference_accuracy(study: optuna.Study) -> float:
    if "reference_accuracy" in study.user_attrs:
        return float(study.user_attrs["reference_accuracy"])
    return _reference_trial(study).values[0]


def _reference_trial(study: optuna.Study) -> FrozenTrial:
    return next(t for t in study.get_trials(states=(TrialState.COMPLETE,))
                if t.user_attrs.get("role") == "reference")


def _at(curve: Curve, axis: list[float], x: float) -> float:
    """The curve's value once ``x`` trials (or minutes) have passed."""
    reached = [hv for position, hv in zip(axis, curve.hypervolume) if position <= x]
    return reached[-1] if reached else 0.0


def section_a(curves: dict[tuple[str, int], Curve], trials: int, shared_cache: bool) -> str:
    samplers = list(dict.fromkeys(sampler for sampler, _ in curves))
    marks = sorted({max(1, trials * k // 4) for k in range(1, 5)})
    shortest = min(c.minutes[-1] for c in curves.values())
    minutes = [round(shortest * k / 4, 1) for k in range(1, 5)]
    lines = ["### (a) hypervolume by trials and by wall time (mean over seeds)", "",
             "| sampler | " + " | ".join(f"{n} trials" for n in marks) + " | "
             + " | ".join(f"{m} min" for m in minutes) + " | seeds |",
             "|---|" + "---:|" * (len(marks) + len(minutes) + 1)]
    for sampler in samplers:
        mine = [c for (s, _), c in curves.items() if s == sampler]
        by_trials = [statistics.mean(_at(c, c.trials, n) for c in mine) for n in marks]
        by_time = [statistics.mean(_at(c, c.minutes, m) for c in mine) for m in minutes]
        lines.append(f"| {sampler} | " + " | ".join(f"{v:.4f}" for v in by_trials + by_time)
                     + f" | {len(mine)} |")
    if shared_cache:
        lines += ["", "The studies shared one cache: by wall time, the studies after the first "
                  f"({samplers[0]}) reused the models it and the others had trained."]
    return "\n".join(lines + ["", per_seed(curves, trials)]) + "\n"


def per_seed(curves: dict[tuple[str, int], Curve], trials: int) -> str:
    """Hypervolume after ``trials`` trials, seed by seed, and in how many seeds each sampler is
    ahead of random with the same seed: a mean can hide one lucky seed."""
    samplers = list(dict.fromkeys(sampler for sampler, _ in curves))
    seeds = sorted({seed for _, seed in curves})
    at = {key: _at(curve, curve.trials, trials) for key, curve in curves.items()}
    lines = [f"Hypervolume after {trials} trials, by seed:", "",
             "| sampler | " + " | ".join(f"seed {seed}" for seed in seeds)
             + " | mean | ahead of random |", "|---|" + "---:|" * (len(seeds) + 2)]
    for sampler in samplers:
        mine = {seed: at[sampler, seed] for seed in seeds if (sampler, seed) in at}
        paired = [seed for seed in mine if ("random", seed) in at]
        ahead = sum(mine[seed] > at["random", seed] for seed in paired)
        lines.append(f"| {sampler} | " + " | ".join(
            f"{mine[seed]:.4f}" if seed in mine else "" for seed in seeds)
            + f" | {statistics.mean(mine.values()):.4f} | "
            + (f"{ahead} of {len(paired)} |" if sampler != "random" and paired else " |"))
    return "\n".join(lines) + "\n"


def write_plot(curves: dict[tuple[str, int], Curve], path: Path) -> None:
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    figure = make_subplots(rows=1, cols=2, subplot_titles=("by finished trials", "by wall time"))
    palette = ["#1f77b4", "#d62728", "#2ca02c", "#7f7f7f", "#9467bd"]
    samplers = list(dict.fromkeys(sampler for sampler, _ in curves))
    colours = {s: palette[i % len(palette)] for i, s in enumerate(samplers)}
    for (sampler, seed), curve in curves.items():
        style = {"color": colours[sampler], "shape": "hv"}
        name = f"{sampler} (seed {seed})"
        figure.add_trace(go.Scatter(x=curve.trials, y=curve.hypervolume, name=name, line=style,
                                    legendgroup=name), row=1, col=1)
        figure.add_trace(go.Scatter(x=curve.minutes, y=curve.hypervolume, name=name, line=style,
                                    legendgroup=name, showlegend=False), row=1, col=2)
    figure.update_yaxes(title_text="hypervolume (accuracy above floor x FP32 latency saved)")
    figure.update_xaxes(title_text="trials", row=1, col=1)
    figure.update_xaxes(title_text="minutes", row=1, col=2)
    figure.update_layout(title="edgetune search: hypervolume per sampler", template="plotly_white")
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.write_html(path, include_plotlyjs="cdn")


# (b) ---------------------------------------------------------------------------------------

def section_b(run: Run) -> str:
    """The confirmed front's best ratio within 1 point of FP32 test accuracy (confirmed here if
    the run did not confirm it at its end)."""
    title = f"### (b) confirmed front of {run.sampler} seed {run.seed}"
    confirm = subprocess.CompletedProcess([], 0) if "confirmation" in run.study.user_attrs else (
        subprocess.run([sys.executable, "-m", "edgetune", "confirm", str(run.config),
                        "--run-dir", str(run.run_dir)], capture_output=True, text=True,
                       check=False))
    if confirm.returncode != 0:
        return (f"{title}\n\nnot measured: `edgetune confirm` exited {confirm.returncode}: "
                f"{confirm.stderr.strip().splitlines()[-1:]}\n")
    # read again: the confirmation wrote its figures after run.study was loaded
    study = optuna.load_study(study_name=run.study.study_name,
                              storage=f"sqlite:///{run.run_dir / 'study.db'}")
    trials = study.get_trials(states=(TrialState.COMPLETE,))
    figures = {t.number: t.user_attrs["confirmed"] for t in trials
               if (t.user_attrs.get("confirmed") or {}).get("test_accuracy") is not None}
    fp32_test = study.user_attrs["confirmation"]["reference_test_accuracy"]
    within = [n for n, f in figures.items() if f["test_accuracy"] >= fp32_test - 0.01]
    best = min(within, key=lambda n: figures[n]["ratio"], default=None)
    lines = [title, "", "| candidate | test accuracy | latency ratio to FP32 |", "|---|---:|---:|",
             f"| FP32 reference | {fp32_test:.2%} | 1.00x |"]
    for trial in sorted((t for t in trials if t.number in figures),
                        key=lambda t: figures[t.number]["ratio"]):
        mark = " (best within 1 point)" if trial.number == best else ""
        lines.append(f"| confirmed front: #{trial.number} {trial.user_attrs['recipe_short']}{mark}"
                     f" | {figures[trial.number]['test_accuracy']:.2%} "
                     f"| {figures[trial.number]['ratio']:.3f}x |")
    dynamic = next((t for t in trials if t.user_attrs.get("baseline") == "dynamic INT8"), None)
    if dynamic is not None:
        measured = dynamic.user_attrs.get("confirmed") or dynamic.user_attrs["measurement"]
        test = measured.get("test_accuracy")
        accuracy = f"{test:.2%}" if test is not None else f"{dynamic.values[0]:.2%} (validation)"
        lines.append(f"| dynamic INT8 baseline | {accuracy} | {measured['ratio']:.3f}x |")
    lines.append(f"| peer tool (issue 8) | within 1 point | {PEER_RATIO:.2f}x |")
    return "\n".join(lines) + "\n"


# (c) ---------------------------------------------------------------------------------------

def section_c(run: Run) -> str:
    """Wall time of one study and how much of it is edgetune's own overhead."""
    trials = [t for t in run.study.get_trials(deepcopy=False) if t.state.is_finished()]
    stages: dict[str, float] = {}
    checks = 0.0
    for trial in trials:
        for stage, seconds in trial.user_attrs.get("stage_seconds", {}).items():
            stages[stage] = stages.get(stage, 0.0) + seconds
        checks += (stopping_record(trial).get("seconds", 0.0)
                   + (trial.user_attrs.get(RUNGS) or {}).get("seconds", 0.0))
    in_trials = sum((t.datetime_complete - t.datetime_start).total_seconds() for t in trials)
    staged = sum(stages.values())
    wall = run.wall_seconds
    rows = [(f"{stage}{' (incl. accuracy checks)' if stage in TRAINING_STAGES else ''}",
             seconds) for stage, seconds in sorted(stages.items(), key=lambda kv: -kv[1])]
    rows += [("  of which accuracy checks (early stopping, rungs)", checks),
             ("in trials, outside stages (sampling, storage, artifacts)", in_trials - staged),
             ("outside trials (start-up, data, base model, end-of-run report/confirmation)",
              wall - in_trials)]
    repeats = sum(is_repeat(t) for t in trials)
    states = {s.name.lower(): sum(t.state == s and not is_repeat(t) for t in trials)
              for s in TrialState if any(t.state == s and not is_repeat(t) for t in trials)}
    states |= {"repeats (not built, not counted)": repeats} if repeats else {}
    overhead = (in_trials - staged) + (wall - in_trials) + checks
    lines = [f"### (c) where the time of one {len(trials) - repeats}-trial study goes "
             f"({run.sampler} seed {run.seed})", "",
             f"wall time {wall / 60:.1f} min; trials: "
             + ", ".join(f"{n} {s}" for s, n in states.items())
             + f"; edgetune's own overhead {overhead / wall:.1%} of the wall time", "",
             "| part | seconds | share |", "|---|---:|---:|"]
    lines += [f"| {label} | {seconds:.0f} | {seconds / wall:.1%} |" for label, seconds in rows]
    return "\n".join(lines) + "\n"


# (d) ---------------------------------------------------------------------------------------

def section_d(runs: list[Run]) -> str:
    """Where complete trials ended, beside what early stopping forecast at each of their checks
    (the final figure is ONNX Runtime's, after any quantization, which only costs accuracy)."""
    lines = ["### (d) early-stopping forecasts of the trials that finished", "",
             "| study | trial | recipe | check: accuracy, forecast | final validation "
             "| worst forecast - final |", "|---|---:|---|---|---:|---:|"]
    for run in runs:
        for trial in run.study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
            record = stopping_record(trial)
            checks = [c for c in record.get("checks", []) if c["forecast"] is not None]
            if not checks:
                continue
            final = trial.values[0]
            shown = "; ".join(f"{c['phase']} {c['step']}: {c['accuracy']:.2%}, "
                              f"{c['forecast']:.2%}" for c in checks)
            worst = min(c["forecast"] for c in checks) - final
            lines.append(f"| {run.sampler}-s{run.seed} | {trial.number} "
                         f"| {trial.user_attrs['recipe_short']} | {shown} | {final:.2%} "
                         f"| {worst * 100:+.2f} pt |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
