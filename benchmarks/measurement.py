"""How steady is a trial's latency ratio? One candidate vs the FP32 reference in separate processes.

Issue 4's benchmark: the default task's fine-tuned model, exported FP32 (the reference) and
fusion + dynamic INT8 (the candidate), measured with the trial protocol (``objectives.latency``)
in ``--processes`` separate processes, first on a quiet machine, then with a CPU-heavy process
(NumPy matrix products on every core, like a training job) running beside them. For each case it
prints each process's ratio and the spread of the ratios, (max - min) / median: the figure a
study's ranking depends on. The absolute milliseconds are printed beside it to show what the
ratio protects against.

``--protocols 5x30,15-60x10`` compares protocols, each process measuring every protocol in turn:
``RxN`` is R rounds of N runs, ``R-MxN`` the sequential protocol trials use (at least R rounds,
at most M, until the ratio's interval is within ``measure.precision``). Each protocol's ratio is
estimated several ways from the same rounds (``ESTIMATORS``, and ``paired``:
``objectives.latency.ratio``, what trials store). The output keeps every process's round figures,
so ``--analyse`` can summarise them again.

    flock /tmp/edgetune-heavy.lock python benchmarks/measurement.py [--processes 5]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
HEAVY_LOAD = (
    "import numpy as np\n"
    "a = np.random.default_rng(0).random((1024, 1024), dtype=np.float32)\n"
    "while True:\n"
    "    a = (a @ a) / 1024\n"
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, default=ROOT / "examples" / "bbc-news.yaml")
    parser.add_argument("--processes", type=int, default=5)
    parser.add_argument("--cases", default="quiet,heavy", help="quiet, heavy or both")
    parser.add_argument("--protocols", default="",
                        help="protocols to compare, e.g. 5x30,15-60x10 [default: the config's]")
    parser.add_argument("--analyse", type=Path, metavar="RESULTS.json",
                        help="summarise the measurements a previous run printed, again")
    parser.add_argument("--child", nargs=4, metavar=("CANDIDATE", "REFERENCE", "INPUTS", "RxN"),
                        help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.analyse:
        saved = json.loads(args.analyse.read_text())
        print(json.dumps({case: summarise(result) for case, result in saved.items()}, indent=2))
        return
    if args.child:
        *paths, protocol = args.child
        print(json.dumps(measure_once(args.config, *map(Path, paths), protocol)))
        return
    with tempfile.TemporaryDirectory() as folder:
        candidate, reference, inputs = prepare(args.config, Path(folder))
        results = {case: run_case(case, args, candidate, reference, inputs)
                   for case in args.cases.split(",")}
    print(json.dumps(results, indent=2))


def prepare(config_file: Path, folder: Path) -> tuple[Path, Path, Path]:
    """The fine-tuned base's FP32 export, its fusion + dynamic INT8 build, and real inputs."""
    from edgetune.objectives.build import Candidate, Workbench
    from edgetune.objectives.cache import Cache, default_cache_dir
    from edgetune.objectives.candidate import build
    from edgetune.objectives.finetune import fine_tuned_base
    from edgetune.objectives.latency import latency_inputs
    from edgetune.objectives.task import load_task
    from edgetune.search.config import load_config
    from edgetune.spaces.graph import GraphRecipe
    from edgetune.spaces.quantization import DynamicQuantization
    from edgetune.spaces.recipe import Recipe

    config = load_config(config_file)
    task = load_task(config.task, config_file.parent)
    cache = Cache(default_cache_dir())
    bench = Workbench(task=task, base=fine_tuned_base(task, config.finetune, cache), cache=cache,
                      target=config.target, measure=config.measure,
                      batch_size=config.finetune.batch_size, seed=config.finetune.seed)
    recipe = Recipe(quantization=DynamicQuantization(scheme="dynamic", per_channel=False),
                    graph=GraphRecipe(fusion=True))
    candidate = build(recipe, bench, Candidate(path=folder / "candidate" / "model.onnx")).path
    batches = latency_inputs(task.encoded("validation"), config.target, config.measure.inputs)
    inputs = folder / "inputs.npz"
    np.savez(inputs, **{f"{i}/{name}": value for i, batch in enumerate(batches)
                        for name, value in batch.items()})
    return candidate, bench.reference(), inputs


def measure_once(config_file: Path, candidate: Path, reference: Path,
                 inputs_file: Path, protocol: str) -> dict[str, object]:
    """One process's measurement, exactly as a trial takes it."""
    from edgetune.objectives.latency import measure
    from edgetune.search.config import load_config

    config = load_config(config_file)
    rounds_part, runs = protocol.split("x")
    rounds, _, most = rounds_part.partition("-")
    stored = np.load(inputs_file)
    batches: dict[int, dict[str, np.ndarray]] = {}
    for key in stored.files:
        index, name = key.split("/")
        batches.setdefault(int(index), {})[name] = stored[key]
    settings = config.measure.model_copy(update={
        "rounds": int(rounds), "max_rounds": int(most or rounds), "runs": int(runs)})
    start = time.perf_counter()
    latencies = measure({"candidate": candidate, "reference": reference},
                        [batches[i] for i in sorted(batches)], config.target, settings,
                        reference="reference" if most else None)
    return {"seconds": time.perf_counter() - start,
            **{name: latency.as_dict() for name, latency in latencies.items()}}


def run_case(case: str, args: argparse.Namespace, candidate: Path, reference: Path,
             inputs: Path) -> dict[str, object]:
    from edgetune.cpu import cpu_model
    from edgetune.search.config import load_config

    default = load_config(args.config).measure
    protocols = args.protocols.split(",") if args.protocols else [
        f"{default.rounds}-{default.max_rounds}x{default.runs}"]
    load = None
    if case == "heavy":
        load = subprocess.Popen([sys.executable, "-c", HEAVY_LOAD],
                                env={**os.environ, "OMP_NUM_THREADS": str(os.cpu_count())})
        time.sleep(2)
    loadavg = os.getloadavg()[0]
    measurements: dict[str, list[dict]] = {protocol: [] for protocol in protocols}
    try:
        for _ in range(args.processes):
            for protocol in protocols:  # in turn, so slow changes of load reach every protocol
                out = subprocess.run(
                    [sys.executable, __file__, "--config", str(args.config), "--child",
                     str(candidate), str(reference), str(inputs), protocol],
                    capture_output=True, text=True, check=True,
                ).stdout
                measurements[protocol].append(json.loads(out.strip().splitlines()[-1]))
    finally:
        if load is not None:
            load.terminate()
            load.wait()
    return summarise({"case": case, "load_average_at_start": round(loadavg, 2),
                      "machine": f"{cpu_model()} ×{os.cpu_count()}",
                      "measurements": measurements})


def summarise(result: dict) -> dict:
    """Each protocol's ratios over the processes, by each estimator, and their spreads."""
    from edgetune.objectives.latency import Latency, ratio

    for protocol, measured in result["measurements"].items():
        figures = [{name: Latency(**value) for name, value in r.items() if name != "seconds"}
                   for r in measured]
        estimates = {name: [estimate(f["candidate"], f["reference"]) for f in figures]
                     for name, estimate in ESTIMATORS.items()}
        estimates["paired"] = [ratio(f["candidate"], f["reference"]).value for f in figures]
        reference_ms = [f["reference"].median_ms for f in figures]
        result[protocol] = {
            **{f"{name}_ratios": [round(r, 4) for r in values]
               for name, values in estimates.items()},
            **{f"{name}_ratio_spread": round(spread(values), 4)
               for name, values in estimates.items()},
            "rounds": [len(f["reference"].round_medians_ms) for f in figures],
            # what the protocol cost each process (warm-up included); absent in older results
            "seconds": [round(r["seconds"], 1) for r in measured if "seconds" in r],
            "reference_ms": [round(ms, 2) for ms in reference_ms],
            "reference_ms_spread": round(spread(reference_ms), 4),
        }
        spreads = ", ".join(f"{name} {spread(values):.1%}" for name, values in estimates.items())
        print(f"{result['case']} {protocol}: ratio spread {spreads}; reference ms spread "
              f"{spread(reference_ms):.1%}", file=sys.stderr)
    return result


def _median_over_median(candidate, reference) -> float:  # type: ignore[no-untyped-def]
    """The walking skeleton's estimator: one model's median of round medians over the other's."""
    return candidate.median_ms / reference.median_ms


def _paired_means(candidate, reference) -> float:  # type: ignore[no-untyped-def]
    """The median over rounds of the ratio of the rounds' mean run times."""
    return float(np.median(np.divide(candidate.round_means_ms, reference.round_means_ms)))


def _best_rounds(candidate, reference) -> float:  # type: ignore[no-untyped-def]
    """Each model's fastest round median, as timeit takes the best of its repeats."""
    return min(candidate.round_medians_ms) / min(reference.round_medians_ms)


def _quiet_half(candidate, reference) -> float:  # type: ignore[no-untyped-def]
    """The median of per-round ratios over the rounds in which the reference ran fastest."""
    fast = np.asarray(reference.round_medians_ms) <= np.median(reference.round_medians_ms)
    return float(np.median(np.divide(candidate.round_medians_ms, reference.round_medians_ms)[fast]))


ESTIMATORS = {"median": _median_over_median, "paired_means": _paired_means,
              "best_rounds": _best_rounds, "quiet_half": _quiet_half}


def spread(values: list[float]) -> float:
    """(max - min) / median, as for a latency's round medians."""
    return (max(values) - min(values)) / float(np.median(values))


if __name__ == "__main__":
    main()
