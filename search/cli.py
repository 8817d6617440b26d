"""The ``edgetune`` command line: ``run`` a study, show its ``status``, write its ``report``,
``confirm`` its front, ``bench`` any ONNX file, ``export`` a trial, measure on a device with
``agent``.

Bad input (a wrong config, a missing file, an unknown study) prints one line naming the field or
file and what was expected, and exits with code 2, as click does for usage errors.

Each command imports what it runs when it runs (no cycle calls for it): ``edgetune --help`` and
``status`` then start without loading torch and the training stack.
"""

from __future__ import annotations

import functools
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click
from rich.console import Console
from rich.markup import escape
from rich.text import Text

from edgetune import __version__
from edgetune.errors import InputError
from edgetune.objectives.latency import MeasureConfig
from edgetune.objectives.target import TargetConfig
from edgetune.search.tables import print_bench, print_study

if TYPE_CHECKING:
    import optuna

    from edgetune.search.study import Location

USAGE_ERROR = 2


def main() -> None:
    cli(prog_name="edgetune")


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="edgetune")
def cli() -> None:
    """Search compression recipes for a fine-tuned model; keep the Pareto front of latency
    (ONNX Runtime) vs accuracy (or task.metric); report it and export the trial you choose."""


def input_errors(command: Callable[..., Any]) -> Callable[..., Any]:
    """Turn ``InputError`` into one line on stderr and exit code 2."""

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return command(*args, **kwargs)
        except InputError as error:
            click.echo(f"edgetune: error: {error}", err=True)
            sys.exit(USAGE_ERROR)

    return wrapper


def study_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """--run-dir, --storage and --study: where a study lives (docs/architecture.md)."""
    for option in reversed([
        click.option("--run-dir", type=click.Path(file_okay=False, path_type=Path),
                     help="Run folder [default: runs/<study>]."),
        click.option("--storage", metavar="URL",
                     help="Optuna storage URL [default: sqlite:///<run-dir>/study.db]."),
        click.option("--study", "study_name", metavar="NAME", help="Optuna study name."),
    ]):
        command = option(command)
    return command


def existing_study(command: Callable[..., Any]) -> Callable[..., Any]:
    """A study named by its CONFIG_FILE or by the study options, and --json."""
    command = click.option("--json", "as_json", is_flag=True, help="Print as JSON on stdout.")(
        command)
    command = click.argument("config_file", required=False,
                             type=click.Path(dir_okay=False, path_type=Path))(command)
    return study_options(command)


@cli.command()
@click.argument("config_file", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--trials", type=click.IntRange(min=1),
              help="Finished trials the study should hold [default: search.trials].")
@click.option("--timeout", type=click.FloatRange(min=0, min_open=True),
              help="Stop starting trials after this many seconds.")
@study_options
@click.option("--runtime", metavar="NAME[,NAME...]",
              help="Compile, time and score every candidate in this runtime (onnxruntime, "
                   "litert, executorch) instead of target.runtime, searching its default "
                   "quantization schemes; several: search them (space.runtime), timed beside "
                   "the first one's FP32 model. The study is then named <study>-<NAME>[-NAME...] "
                   "unless --study names it.")
@click.option("--json", "as_json", is_flag=True, help="Print the front as JSON on stdout.")
@click.option("--no-report", is_flag=True, help="Do not write <run-dir>/report.html at the end.")
@input_errors
def run(config_file: Path, trials: int | None, timeout: float | None, run_dir: Path | None,
        storage: str | None, study_name: str | None, runtime: str | None, as_json: bool,
        no_report: bool) -> None:
    """Run (or resume) the study CONFIG_FILE describes, up to its trial budget, then write its
    HTML report to <run-dir>/report.html."""
    from edgetune.search.config import load_config
    from edgetune.search.run import Stopped
    from edgetune.search.run import run as run_study
    from edgetune.search.study import Location

    overrides: dict[str, object] = {"study": study_name} if study_name else {}
    if runtime is not None:  # the runtimes' default schemes: the config's are another's
        names = runtime.split(",")
        overrides |= {"target.runtime": names[0], "space.quantization.schemes": None,
                      **({"space.runtime": names} if len(names) > 1 else {})}
    config = load_config(config_file, overrides)
    if runtime is not None and study_name is None:
        config = config.model_copy(update={"study": f"{config.study}-{runtime.replace(',', '-')}"})
    location = Location.resolve(config.study, run_dir, storage or config.storage)
    console = Console(file=sys.stderr)  # this stream: sys.stderr is the log file while trials run
    try:
        study = run_study(config, location, config_file.parent, console, trials, timeout)
    except Stopped as stop:  # Ctrl-C: the trial is failed as interrupted; show what we have
        console.print(f"[yellow]stopped by {stop}[/yellow]: run the same command to resume")
        if stop.study is not None:
            print_study(stop.study, as_json)
        sys.exit(128 + stop.signum)
    print_study(study, as_json)
    if not no_report:
        _write_report(study, location, location.run_dir / "report.html")


@cli.command()
@study_options
@click.argument("config_file", required=False, type=click.Path(dir_okay=False, path_type=Path))
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path),
              help="The HTML file to write [default: <run-dir>/report.html].")
@input_errors
def report(run_dir: Path | None, storage: str | None, study_name: str | None,
           config_file: Path | None, out: Path | None) -> None:
    """Write one self-contained HTML page on a study: the Pareto front, its table with export
    commands, what each knob does, progress, failures. It opens offline, in any browser.

    Name the study by its CONFIG_FILE, or by --study (with --storage or --run-dir).
    """
    from edgetune.search.study import load_study

    location = _location(config_file, study_name, run_dir, storage)
    _write_report(load_study(location), location, out or location.run_dir / "report.html")


def _write_report(study: optuna.Study, location: Location, out: Path) -> None:
    from edgetune.reports.html import write_report

    try:
        path = write_report(study, location, out)
    except OSError as error:
        raise InputError(str(out), f"cannot write the report: {error.strerror}") from error
    Console(stderr=True).print(f"report written to [bold]{escape(str(path))}[/bold]")


@cli.command()
@existing_study
@input_errors
def status(run_dir: Path | None, storage: str | None, study_name: str | None,
           config_file: Path | None, as_json: bool) -> None:
    """Show the trials and the Pareto front of an existing study.

    Name the study by its CONFIG_FILE, or by --study (with --storage or --run-dir).
    """
    from edgetune.search.constraints import infeasible_trials
    from edgetune.search.failures import failures
    from edgetune.search.repeats import is_repeat
    from edgetune.search.study import load_study

    study = load_study(_location(config_file, study_name, run_dir, storage))
    counts: dict[str, int] = {}
    for trial in study.get_trials(deepcopy=False):
        # a repeat is PRUNED in Optuna, but neither built nor stopped: counted on its own
        state = "repeated" if is_repeat(trial) else trial.state.name.lower()
        counts[state] = counts.get(state, 0) + 1
    failed = failures(study)
    infeasible = len(infeasible_trials(study))
    if not as_json:
        console = Console(stderr=True)
        console.print(
            f"study [bold]{study.study_name}[/bold]: "
            + ", ".join(f"{n} {state}" for state, n in sorted(counts.items()))
            + (f"; {infeasible} complete but infeasible (kept off the front)" if infeasible else "")
        )
        for row in failed:
            retried = (f" (run again as trial {row.retried_as})"
                       if row.retried_as is not None else "")
            console.print(Text.assemble((f"trial {row.trial} failed", "red"),
                                        f" in {row.stage}: {row.type}: {row.error}{retried}"))
    print_study(study, as_json, extra={"trials": counts, "infeasible": infeasible,
                                       "objectives": study.metric_names,
                                       "failures": [row.as_dict() for row in failed]})


@cli.command()
@existing_study
@input_errors
def confirm(run_dir: Path | None, storage: str | None, study_name: str | None,
            config_file: Path | None, as_json: bool) -> None:
    """Measure the front and the trials near it again, together, with more rounds.

    Stores the confirmed figures on the trials, recomputes the front from them, flags trials
    confirmation moved off it, and computes the confirmed front's test score of the task metric
    (accuracy by default) and confusion matrices. Name the study by its CONFIG_FILE (its confirm
    section applies), or by --study (with --storage or --run-dir).
    """
    import contextlib

    from edgetune.objectives.isolation import measurement_cores
    from edgetune.objectives.task import load_task
    from edgetune.search.config import load_config
    from edgetune.search.confirm import confirm as confirm_front
    from edgetune.search.models import study_config
    from edgetune.search.study import load_study

    location = _location(config_file, study_name, run_dir, storage)
    study = load_study(location)
    given = load_config(config_file) if config_file is not None else None
    stored, config_dir = study_config(study, given, config_file)
    config = given or stored  # a given config's confirm and measure sections apply
    if config.measure.isolate:
        measurement_cores(config.measure.cores, config.target.threads)
    task = load_task(config.task, config_dir, config.target.image_size)
    console = Console(stderr=True)
    with contextlib.redirect_stdout(sys.stderr), console.status("measuring the front again"):
        confirm_front(study, location, task, config, config_dir)
    print_study(load_study(location), as_json)


@cli.command()
@click.argument("model", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--baseline", type=click.Path(dir_okay=False, path_type=Path),
              help="A model (any runtime's) to measure beside MODEL, interleaved; prints the "
                   "ratio.")
@click.option("--threads", type=click.IntRange(min=1), default=TargetConfig().threads,
              show_default=True, help="Intra-op threads: the target device's cores.")
@click.option("--batch-size", type=click.IntRange(min=1), default=TargetConfig().batch_size,
              show_default=True)
@click.option("--sequence-length", type=click.IntRange(min=1),
              default=TargetConfig().sequence_length, show_default=True)
@click.option("--rounds", type=click.IntRange(min=1), default=MeasureConfig().rounds,
              show_default=True, help="Rounds at least.")
@click.option("--max-rounds", type=click.IntRange(min=1),
              help="With --baseline, rounds at most: more are added while the ratio's 95% "
                   f"interval is wider than +-{MeasureConfig().precision:.0%} [default: "
                   f"{MeasureConfig().max_rounds}, or --rounds if more].")
@click.option("--runs", type=click.IntRange(min=1), default=MeasureConfig().runs,
              show_default=True, help="Runs of each model per round.")
@click.option("--warmup", type=click.IntRange(min=0), default=MeasureConfig().warmup,
              show_default=True)
@click.option("--cores", metavar="IDS",
              help="Measure in a fresh process pinned to these CPUs (e.g. 0,1).")
@click.option("--tokenizer", type=click.Path(path_type=Path),
              help="A tokenizer folder: with --text-file, time real texts.")
@click.option("--text-file", type=click.Path(dir_okay=False, path_type=Path),
              help="Texts, one per line, tokenized with --tokenizer.")
@click.option("--json", "as_json", is_flag=True, help="Print as JSON on stdout.")
@input_errors
def bench(model: Path, baseline: Path | None, threads: int, batch_size: int,
          sequence_length: int, rounds: int, max_rounds: int | None, runs: int, warmup: int,
          cores: str | None, tokenizer: Path | None, text_file: Path | None,
          as_json: bool) -> None:
    """Time MODEL (.onnx, .ort, .tflite or .pte, each in its runtime) with the protocol trials
    use: warm-up, then rounds of runs, interleaved with --baseline; the median of round medians,
    p90 and spread.

    Without --tokenizer and --text-file, inputs are made from the model's signature.
    """
    from edgetune.objectives import bench as benchmark
    from edgetune.objectives.isolation import measurement_cores

    if (tokenizer is None) != (text_file is None):
        raise InputError("--tokenizer" if tokenizer is None else "--text-file",
                         "real texts need both --tokenizer and --text-file")
    target = TargetConfig(threads=threads, batch_size=batch_size, sequence_length=sequence_length)
    if max_rounds is not None and max_rounds < rounds:
        raise InputError("--max-rounds", f"must be at least --rounds ({rounds}), not {max_rounds}")
    protocol = MeasureConfig(warmup=warmup, rounds=rounds,
                             max_rounds=max_rounds or max(rounds, MeasureConfig().max_rounds),
                             runs=runs, isolate=cores is not None, cores=_core_ids(cores))
    if protocol.isolate:
        measurement_cores(protocol.cores, threads)
    sessions = {model: benchmark.open_model(model, "MODEL", target)}
    if baseline is not None:
        sessions[baseline] = benchmark.open_model(baseline, "--baseline", target)
    if tokenizer is not None and text_file is not None:
        inputs, kind = benchmark.text_inputs(tokenizer, text_file, target, protocol.inputs), "text"
    else:
        inputs, kind = benchmark.synthetic_inputs(sessions, target, protocol.inputs), "synthetic"
    result = benchmark.bench(model, baseline, inputs, target, protocol, kind)
    print_bench(result, as_json)


@cli.command()
@click.option("--storage", metavar="URL",
              help="The study's Optuna storage URL, without a password (ps shows it) "
                   "[default: $EDGETUNE_STORAGE].")
@click.option("--storage-file", type=click.Path(dir_okay=False, path_type=Path),
              help="A file holding the storage URL (with its password, if any).")
@click.option("--study", "study_name", required=True, metavar="NAME", help="Optuna study name.")
@click.option("--device", required=True, metavar="NAME",
              help="This device's name: target.device of the study it drives, or another name "
                   "to record a front of its own.")
@click.option("--runtime", metavar="NAME[,NAME...]",
              help="The runtimes this agent measures in [default: every one installed here].")
@click.option("--threads", type=click.IntRange(min=1),
              help="Intra-op threads [default: the study's target.threads].")
@click.option("--cores", metavar="IDS", help="Pin the agent to these CPU ids, e.g. 0 or 2,3.")
@click.option("--artifacts", metavar="FOLDER|s3://...",
              help="The study's artifact store as this device reaches it [default: the "
                   "builder's].")
@click.option("--idle-exit", type=click.FloatRange(min=0, min_open=True), metavar="SECONDS",
              help="Exit after this long with nothing to measure [default: run until stopped].")
@click.option("--grace", type=click.FloatRange(min=1), default=60.0, show_default=True,
              metavar="SECONDS",
              help="How long this agent's claim on a trial holds without a heartbeat: after it, "
                   "another agent of the device measures the trial.")
@input_errors
def agent(storage: str | None, storage_file: Path | None, study_name: str, device: str,
          runtime: str | None, threads: int | None, cores: str | None, artifacts: str | None,
          idle_exit: float | None, grace: float) -> None:
    """Measure a study's candidates on this device: fetch each from the artifact store, time it
    beside the FP32 reference, score it on the validation inputs, write the figures back.

    Needs only the runtime, numpy, Optuna and a database driver (no torch): see the README,
    "Measure on your device"."""
    import os

    from edgetune.search.agent import Agent, installed_runtimes, storage_url

    url = storage_url(storage, storage_file)
    if (ids := _core_ids(cores)) is not None:
        try:
            os.sched_setaffinity(0, ids)
        except OSError as error:
            raise InputError("--cores", f"cannot pin to {cores}: {error.strerror}") from error
    runtimes = installed_runtimes(runtime.split(",") if runtime else None)
    worker = Agent(url, study_name, device, runtimes, threads, artifacts, grace,
                   log=lambda line: click.echo(line, err=True))
    try:
        measured = worker.serve(idle_exit)
    except KeyboardInterrupt:
        sys.exit(130)
    finally:
        worker.close()
    click.echo(f"agent {device!r}: measured {measured} trial(s)", err=True)


def _core_ids(cores: str | None) -> list[int] | None:
    if cores is None:
        return None
    try:
        return sorted({int(part) for part in cores.split(",") if part.strip()})
    except ValueError as error:
        raise InputError("--cores", f"expected CPU ids such as 0,1 (got {cores!r})") from error


@cli.command()
@click.argument("config_file", required=False, type=click.Path(dir_okay=False, path_type=Path))
@study_options
@click.option("--trial", "number", type=click.IntRange(min=0),
              help="The trial to export (edgetune status lists the front).")
@click.option("--pick", type=click.Choice(["fastest", "most-accurate"]),
              help="Choose the trial from the (confirmed) front instead.")
@click.option("--max-accuracy-drop", type=click.FloatRange(min=0), metavar="FRACTION",
              help="With --pick: at most this far below the FP32 reference's validation "
                   "score of the task metric, accuracy by default (0.01 = 1 point) "
                   "[default: search.constraints].")
@click.option("--max-latency-ms", type=click.FloatRange(min=0, min_open=True), metavar="MS",
              help="With --pick: at most this latency [default: search.constraints].")
@click.option("--device", metavar="NAME",
              help="With --pick: choose on the front this device's agent measured "
                   "(edgetune agent --device NAME) [default: the study's].")
@click.option("--out", required=True, type=click.Path(path_type=Path),
              help="The folder to write; it must not exist.")
@click.option("--force", is_flag=True, help="Replace --out if it holds an earlier export.")
@click.option("--format", "model_format",
              type=click.Choice(["onnx", "ort", "tflite", "pte", "coreml"]),
              help="The model's format [default: the trial's runtime's: onnx (with ort), "
                   "tflite or pte]; coreml converts the trial's torch model to a Core ML "
                   "package, checked but not run (Core ML runs on Apple platforms only).")
@click.option("--json", "as_json", is_flag=True, help="Print metrics.json on stdout.")
@input_errors
def export(config_file: Path | None, run_dir: Path | None, storage: str | None,
           study_name: str | None, number: int | None, pick: str | None,
           max_accuracy_drop: float | None, max_latency_ms: float | None, device: str | None,
           out: Path, force: bool, model_format: str | None, as_json: bool) -> None:
    """Write a trial's model as a folder to deploy: the model in its runtime's formats (ONNX
    and ORT, LiteRT or ExecuTorch) or as a Core ML package, tokenizer, labels, recipe, metrics
    re-measured on this machine and a README.

    Name the study by its CONFIG_FILE, or by --study (with --storage or --run-dir).
    """
    import contextlib

    from edgetune.search.config import load_config
    from edgetune.search.export import export as export_trial
    from edgetune.search.models import open_source
    from edgetune.search.pick import limits
    from edgetune.search.pick import pick as pick_trial

    if (number is None) == (pick is None):
        raise InputError("--trial", "give either --trial N or --pick fastest|most-accurate")
    if pick is None and (max_accuracy_drop is not None or max_latency_ms is not None
                         or device is not None):
        flag = ("--max-accuracy-drop" if max_accuracy_drop is not None else "--max-latency-ms"
                if max_latency_ms is not None else "--device")
        raise InputError(flag, "limits choose a trial: use them with --pick")
    location = _location(config_file, study_name, run_dir, storage)
    config = load_config(config_file) if config_file is not None else None
    source = open_source(location, config, config_file)
    console = Console(stderr=True)
    if pick is not None:
        choice = pick_trial(source.study, pick,  # type: ignore[arg-type]
                            limits(source.config.search.constraints, max_accuracy_drop,
                                   max_latency_ms), device)
        console.print(f"picked {choice.reason}", highlight=False)
        number = choice.trial
    assert number is not None
    if model_format == "coreml":
        from edgetune.search.export_coreml import export_package

        with console.status(f"exporting trial {number} to Core ML"), \
                contextlib.redirect_stdout(sys.stderr):
            metrics = export_package(source, number, out, force)
        console.print(f"exported trial {number} ({metrics['recipe']}) to {out} as a Core ML "
                      "package: checked as a spec, not run (Core ML runs on Apple platforms)",
                      highlight=False)
    else:
        with console.status(f"exporting trial {number}"), \
                contextlib.redirect_stdout(sys.stderr):
            metrics = export_trial(source, number, out, force, model_format)
        console.print(_export_summary(metrics, out), highlight=False)
    if as_json:
        click.echo(json.dumps(metrics, indent=2))


def _export_summary(metrics: dict[str, Any], out: Path) -> str:
    from edgetune.search.readme import unreliable_note

    here, trial, checks = metrics["remeasured"], metrics["trial_figures"], metrics["checks"]
    name = metrics["metric"]
    origin = ("from the artifact store" if metrics["model_source"] == "artifact"
              else "rebuilt from its recipe")
    spread = checks["trial_ratio_range"]
    rounds_of = ("confirmed" if checks.get("trial_ratio_range_from") == "confirmation"
                 else "trial's")
    within = (f", {rounds_of} rounds {spread[0]:.2f}-{spread[1]:.2f}" if spread else "")
    note = unreliable_note(metrics)
    return (
        f"exported trial {metrics['trial']} ({metrics['recipe']}, {origin}) to {out}\n"
        f"  validation {name} {here[f'validation_{name}']:.2%} (trial {trial[name]:.2%})"
        f", test {here[f'test_{name}']:.2%}\n"
        f"  {here['latency']['median_ms']:.2f} ms, {here['ratio']:.2f}x FP32 on this machine "
        f"(trial {trial['measurement'].get('ratio', float('nan')):.2f}x{within})"
        + (f"\n  {note}" if note else "")
    )


def _location(config_file: Path | None, study_name: str | None, run_dir: Path | None,
              storage: str | None):  # type: ignore[no-untyped-def]
    from edgetune.search.config import load_config
    from edgetune.search.study import Location

    if config_file is not None:
        config = load_config(config_file)
        return Location.resolve(study_name or config.study, run_dir, storage or config.storage)
    if study_name is None:
        if run_dir is None or storage is not None:
            raise InputError("--study", "name the study: a CONFIG_FILE, --study NAME, or --run-dir")
        study_name = _only_study(run_dir) or run_dir.name
    return Location.resolve(study_name, run_dir, storage)


def _only_study(run_dir: Path) -> str | None:
    """The one study a run folder's database holds: ``run --run-dir DIR`` keeps the config's
    study name, whatever the folder is called."""
    import optuna

    from edgetune.search.study import Location, make_storage

    if not (run_dir / "study.db").is_file():
        return None
    storage = make_storage(Location.resolve(run_dir.name, run_dir).storage)
    names = [s.study_name for s in optuna.get_all_study_summaries(storage)]
    return names[0] if len(names) == 1 else None
