"""How steady is a trial's latency ratio? One candidate vs the FP32 reference in separate processes.

Issue 4's benchmark: the default task's fine-tuned model, exported FP32 (the reference) and
fusion + dynamic INT8 (the candidate), measured with the trial protocol (``objectives.latency``)
in ``--processes`` separate processes, first on a quiet machine, then with a CPU-heavy process
(NumPy matrix products on every core, like a training job) running beside them. For each case it
prints each process's ratio and the spread of the ratios, (max - min) / median: the figure a
study's ranking depends on. The absolute milliseconds are printed beside it to show what the
ratio protects against.

    flock /tmp/edgetune-heavy.lock python benchmarks/measurement.py [--processes 5]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
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
    parser.add_argument("--child", nargs=3, metavar=("CANDIDATE", "REFERENCE", "INPUTS"),
                        help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(measure_once(args.config, *map(Path, args.child))))
        return
    with tempfile.TemporaryDirectory() as folder:
        candidate, reference, inputs = prepare(args.config, Path(folder))
        results = {case: run_case(case, args, candidate, reference, inputs)
                   for case in args.cases.split(",")}
    print(json.dumps(results, indent=2))


def prepare(config_file: Path, folder: Path) -> tuple[Path, Path, Path]:
    """The fine-tuned base's FP32 export, its fusion + dynamic INT8 build, and real inputs."""
    from edgetune.objectives.cache import Cache, default_cache_dir
    from edgetune.objectives.candidate import Candidate, Workbench, build
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
                 inputs_file: Path) -> dict[str, object]:
    """One process's measurement, exactly as a trial takes it."""
    from edgetune.objectives.latency import measure
    from edgetune.search.config import load_config

    config = load_config(config_file)
    stored = np.load(inputs_file)
    batches: dict[int, dict[str, np.ndarray]] = {}
    for key in stored.files:
        index, name = key.split("/")
        batches.setdefault(int(index), {})[name] = stored[key]
    latencies = measure({"candidate": candidate, "reference": reference},
                        [batches[i] for i in sorted(batches)], config.target, config.measure)
    return {name: latency.as_dict() for name, latency in latencies.items()}


def run_case(case: str, args: argparse.Namespace, candidate: Path, reference: Path,
             inputs: Path) -> dict[str, object]:
    load = None
    if case == "heavy":
        load = subprocess.Popen([sys.executable, "-c", HEAVY_LOAD],
                                env={**os.environ, "OMP_NUM_THREADS": str(os.cpu_count())})
        time.sleep(2)
    loadavg = os.getloadavg()[0]
    try:
        runs = []
        for _ in range(args.processes):
            out = subprocess.run(
                [sys.executable, __file__, "--config", str(args.config), "--child",
                 str(candidate), str(reference), str(inputs)],
                capture_output=True, text=True, check=True,
            ).stdout
            runs.append(json.loads(out.strip().splitlines()[-1]))
    finally:
        if load is not None:
            load.terminate()
            load.wait()
    ratios = [r["candidate"]["median_ms"] / r["reference"]["median_ms"] for r in runs]
    reference_ms = [r["reference"]["median_ms"] for r in runs]
    summary = {
        "case": case,
        "load_average_at_start": round(loadavg, 2),
        "ratios": [round(r, 4) for r in ratios],
        "ratio_median": round(float(np.median(ratios)), 4),
        "ratio_spread": round(spread(ratios), 4),
        "reference_ms": [round(ms, 2) for ms in reference_ms],
        "reference_ms_spread": round(spread(reference_ms), 4),
        "candidate_ms": [round(r["candidate"]["median_ms"], 2) for r in runs],
        "machine": f"{platform.processor() or platform.machine()} ×{os.cpu_count()}",
    }
    print(f"{case}: ratios {summary['ratios']} spread {summary['ratio_spread']:.1%}; "
          f"reference ms {summary['reference_ms']} spread {summary['reference_ms_spread']:.1%}",
          file=sys.stderr)
    return summary


def spread(values: list[float]) -> float:
    """(max - min) / median, as for a latency's round medians."""
    return (max(values) - min(values)) / float(np.median(values))


if __name__ == "__main__":
    main()
