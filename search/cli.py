"""The ``edgetune`` command line: ``run`` a study, show its ``status``, write its ``report``,
``confirm`` its front, ``bench`` any ONNX file.

Bad input (a wrong config, a missing file, an unknown study) prints one line naming the field or
file and what was expected, and exits with code 2, as click does for usage errors.
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click
from rich.console import Console
from rich.markup import escape

from edgetune import __version__
from edgetune.errors import InputError
from edgetune.objectives.latency import MeasureConfig
from edgetune.objectives.runtime import TargetConfig
from edgetune.search.tables import print_bench, print_study

if TYPE_CHECKING:
    import optuna

    from edgetune.search.config import StudyConfig
    from edgetune.search.study import Location

USAGE_ERROR = 2


def main() -> None:
    cli(prog_name="edgetune")


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="edgetune")
def cli() -> None:
    """Search compression recipes for a fine-tuned model; keep the Pareto front of latency
    (ONNX Runtime) vs accuracy; report it and export the trial you choose."""


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
    """--run-dir, --storage and --study: where a study lives (DESIGN §5)."""
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
@click.option("--json", "as_json", is_flag=True, help="Print the front as JSON on stdout.")
@click.option("--no-report", is_flag=True, help="Do not write <run-dir>/report.html at the end.")
@input_errors
def run(config_file: Path, trials: int | None, timeout: float | None, run_dir: Path | None,
        storage: str | None, study_name: str | None, as_json: bool, no_report: bool) -> None:
    """Run (or resume) the study CONFIG_FILE describes, up to its trial budget, then write its
    HTML report to <run-dir>/report.html."""
    from edgetune.search.config import load_config
    from edgetune.search.run import run as run_study
    from edgetune.search.study import Location

    overrides = {"study": study_name} if study_name else {}
    config = load_config(config_file, overrides)
    location = Location.resolve(config.study, run_dir, storage or config.storage)
    console = Console(stderr=True)
    study = run_study(config, location, config_file.parent, console, trials, timeout)
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
    from edgetune.search.study import load_study

    study = load_study(_location(config_file, study_name, run_dir, storage))
    counts: dict[str, int] = {}
    for trial in study.get_trials(deepcopy=False):
        counts[trial.state.name.lower()] = counts.get(trial.state.name.lower(), 0) + 1
    if not as_json:
        Console(stderr=True).print(
            f"study [bold]{study.study_name}[/bold]: "
            + ", ".join(f"{n} {state}" for state, n in sorted(counts.items()))
        )
    print_study(study, as_json, extra={"trials": counts})


@cli.command()
@existing_study
@input_errors
def confirm(run_dir: Path | None, storage: str | None, study_name: str | None,
            config_file: Path | None, as_json: bool) -> None:
    """Measure the front and the trials near it again, together, with more rounds.

    Stores the confirmed figures on the trials, recomputes the front from them, flags trials
    confirmation moved off it, and computes the confirmed front's test accuracy. Name the study
    by its CONFIG_FILE (its confirm section applies), or by --study (with --storage or --run-dir).
    """
    import contextlib

    from edgetune.objectives.isolation import measurement_cores
    from edgetune.objectives.task import load_task
    from edgetune.search.confirm import confirm as confirm_front
    from edgetune.search.study import load_study

    location = _location(config_file, study_name, run_dir, storage)
    study = load_study(location)
    config, config_dir = _study_config(study, config_file)
    if config.measure.isolate:
        measurement_cores(config.measure.cores, config.target.threads)
    task = load_task(config.task, config_dir)
    console = Console(stderr=True)
    with contextlib.redirect_stdout(sys.stderr), console.status("measuring the front again"):
        confirm_front(study, location, task, config)
    print_study(load_study(location), as_json)


@cli.command()
@click.argument("model", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--baseline", type=click.Path(dir_okay=False, path_type=Path),
              help="An ONNX model to measure beside MODEL, interleaved; prints the ratio.")
@click.option("--threads", type=click.IntRange(min=1), default=TargetConfig().threads,
              show_default=True, help="Intra-op threads: the target device's cores.")
@click.option("--batch-size", type=click.IntRange(min=1), default=TargetConfig().batch_size,
              show_default=True)
@click.option("--sequence-length", type=click.IntRange(min=1),
              default=TargetConfig().sequence_length, show_default=True)
@click.option("--rounds", type=click.IntRange(min=1), default=MeasureConfig().rounds,
              show_default=True)
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
          sequence_length: int, rounds: int, runs: int, warmup: int, cores: str | None,
          tokenizer: Path | None, text_file: Path | None, as_json: bool) -> None:
    """Time MODEL (an ONNX file) with the protocol trials use: warm-up, then rounds of runs,
    interleaved with --baseline; the median of round medians, p90 and spread.

    Without --tokenizer and --text-file, inputs are made from the model's signature.
    """
    from edgetune.objectives import bench as benchmark
    from edgetune.objectives.isolation import measurement_cores

    if (tokenizer is None) != (text_file is None):
        raise InputError("--tokenizer" if tokenizer is None else "--text-file",
                         "real texts need both --tokenizer and --text-file")
    target = TargetConfig(threads=threads, batch_size=batch_size, sequence_length=sequence_length)
    protocol = MeasureConfig(warmup=warmup, rounds=rounds, runs=runs,
                             isolate=cores is not None, cores=_core_ids(cores))
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


def _core_ids(cores: str | None) -> list[int] | None:
    if cores is None:
        return None
    try:
        return sorted({int(part) for part in cores.split(",") if part.strip()})
    except ValueError as error:
        raise InputError("--cores", f"expected CPU ids such as 0,1 (got {cores!r})") from error


def _study_config(study: optuna.Study, config_file: Path | None) -> tuple[StudyConfig, Path]:
    """The study's config and the folder its relative paths start from: CONFIG_FILE's own when
    given (it must be this study's), else the config stored in the study."""
    from pydantic import ValidationError

    from edgetune.search.config import StudyConfig, load_config
    from edgetune.search.study import CONFIG_DIR

    if config_file is not None:
        config = load_config(config_file)
        if config.fingerprint() != study.user_attrs.get("config_fingerprint"):
            raise InputError(str(config_file), f"not the config of study {study.study_name!r} "
                             "(a study's config is fixed)")
        return config, config_file.parent
    try:
        config = StudyConfig.model_validate(study.user_attrs.get("config"))
    except ValidationError as error:
        raise InputError("--study", f"study {study.study_name!r} holds no usable config: name "
                         "its CONFIG_FILE") from error
    return config, Path(study.user_attrs.get(CONFIG_DIR, "."))


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
        study_name = run_dir.name
    return Location.resolve(study_name, run_dir, storage)
