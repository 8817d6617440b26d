"""Does one runtime's thread pool slow the model timed after it? (issue 21's cross-runtime front)

The interleaved protocol runs each model's runs back to back, then the next model's. ONNX
Runtime's sessions stop their workers' spinning after a run (``session.force_spinning_stop``);
XNNPACK's thread pools in LiteRT and ExecuTorch may spin on: the next model then shares the cores
with them. This times ONNX Runtime FP32 and one other runtime's model three ways and compares
the ratio: interleaved as trials do, interleaved with a pause between models (``--pause-ms``),
and each model alone in a process of its own.

    python benchmarks/interference.py REFERENCE.onnx OTHER.(tflite|pte) [--rounds 20]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from edgetune.objectives.runtimes import runtime_of
from edgetune.objectives.target import TargetConfig

TARGET = TargetConfig(threads=2, batch_size=1, sequence_length=128)
RUNS = 10


def batches(count: int = 4) -> list[dict[str, np.ndarray]]:
    rng = np.random.default_rng(0)
    shape = (TARGET.batch_size, TARGET.sequence_length)
    return [{"input_ids": rng.integers(1000, 20000, shape), "attention_mask": np.ones(shape,
             dtype=np.int64), "token_type_ids": np.zeros(shape, dtype=np.int64)}
            for _ in range(count)]


def timed_rounds(models: list[Path], rounds: int, pause_ms: float) -> dict[str, list[float]]:
    """Per-round medians of each model, interleaved, with ``pause_ms`` between models."""
    sessions = {}
    for model in models:
        session = runtime_of(model).open(model, TARGET)
        bound = [session.bind(batch) for batch in batches()]
        for item in bound * 3:
            session.run(item)
        sessions[model.name] = (session, bound)
    medians: dict[str, list[float]] = {name: [] for name in sessions}
    for index in range(rounds):
        order = list(sessions) if index % 2 == 0 else list(reversed(sessions))
        for name in order:
            time.sleep(pause_ms / 1000)
            session, bound = sessions[name]
            samples = []
            for run in range(RUNS):
                start = time.perf_counter()
                session.run(bound[run % len(bound)])
                samples.append((time.perf_counter() - start) * 1000)
            medians[name].append(float(np.median(samples)))
    return medians


def ratio(medians: dict[str, list[float]], other: str, reference: str) -> float:
    return float(np.median(np.array(medians[other]) / np.array(medians[reference])))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("reference", type=Path)
    parser.add_argument("other", type=Path)
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--pause-ms", type=float, default=50.0)
    parser.add_argument("--alone", type=Path, help=argparse.SUPPRESS)  # the child process
    args = parser.parse_args()
    if args.alone is not None:
        print(json.dumps(timed_rounds([args.alone], args.rounds, 0.0)))
        return
    rows = {}
    for name, pause in (("interleaved", 0.0), (f"interleaved, {args.pause_ms:g} ms pause",
                                               args.pause_ms)):
        medians = timed_rounds([args.reference, args.other], args.rounds, pause)
        rows[name] = (ratio(medians, args.other.name, args.reference.name),
                      np.median(medians[args.reference.name]), np.median(medians[args.other.name]))
    alone = {}
    for model in (args.reference, args.other):
        out = subprocess.run([sys.executable, __file__, str(args.reference), str(args.other),
                              "--rounds", str(args.rounds), "--alone", str(model)],
                             capture_output=True, text=True, check=True).stdout
        alone.update(json.loads(out.strip().splitlines()[-1]))
    reference_ms = np.median(alone[args.reference.name])
    other_ms = np.median(alone[args.other.name])
    rows["each alone in its own process"] = (other_ms / reference_ms, reference_ms, other_ms)
    print(f"| timing | {args.other.name} / {args.reference.name} | {args.reference.name} ms "
          f"| {args.other.name} ms |")
    print("|---|---|---|---|")
    for name, (value, reference_ms, other_ms) in rows.items():
        print(f"| {name} | {value:.3f} | {reference_ms:.2f} | {other_ms:.2f} |")


if __name__ == "__main__":
    main()
