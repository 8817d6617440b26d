"""Score an exported LiteRT or ExecuTorch model without edgetune's runtime code (issue 21).

The model runs through the runtime's own Python API only (``ai_edge_litert``'s interpreter, or
``executorch.runtime``), fed by the export folder's tokenizer, as its README shows. edgetune is
used for one thing: the study's test split (its texts and labels, split by the study's seed),
read from the study's stored config. Printed: the test accuracy found here, the one the export
measured (``metrics.json``), and the trial's own where its confirmation stored one.

    python benchmarks/score_export.py EXPORT_FOLDER --run-dir RUN_DIR [--study NAME]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import optuna
from transformers import AutoTokenizer

from edgetune.objectives.data import load_dataset
from edgetune.objectives.task import TaskConfig


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("export", type=Path)
    parser.add_argument("--run-dir", type=Path, required=True)
    parser.add_argument("--study")
    args = parser.parse_args()
    metrics = json.loads((args.export / "metrics.json").read_text())
    study = optuna.load_study(study_name=args.study or metrics["study"],
                              storage=f"sqlite:///{args.run_dir / 'study.db'}")
    config = study.user_attrs["config"]
    task = TaskConfig.model_validate(config["task"])
    base = Path(study.user_attrs.get("config_dir", "."))
    dataset = load_dataset(task.data, base)
    test = dataset.splits["test"]
    labels = json.loads((args.export / "labels.json").read_text())
    tokenizer = AutoTokenizer.from_pretrained(args.export)
    run = _litert if (args.export / "model.tflite").exists() else _executorch
    predicted = run(args.export, tokenizer, test.texts, config["target"])
    assert dataset.label_names == labels, "the export's labels.json is not the study's label order"
    found = float(np.mean(np.asarray(predicted) == test.labels))
    trial = next(t for t in study.trials if t.number == metrics["trial"])
    confirmed = (trial.user_attrs.get("confirmed") or {}).get("test_accuracy")
    print(json.dumps({"study": study.study_name, "trial": trial.number,
                      "recipe": metrics["recipe"], "rows": len(test.texts),
                      "test_accuracy_here": found,
                      "test_accuracy_at_export": metrics["remeasured"]["test_accuracy"],
                      "test_accuracy_confirmed": confirmed}, indent=1))


def _litert(folder: Path, tokenizer: object, texts: list[str],
            target: dict[str, int]) -> list[int]:
    from ai_edge_litert.interpreter import Interpreter

    runner = Interpreter(model_path=str(folder / "model.tflite"),
                         num_threads=target["threads"]).get_signature_runner()
    details = runner.get_input_details()
    rows, length = (int(n) for n in next(iter(details.values()))["shape"][:2])
    predicted: list[int] = []
    for start in range(0, len(texts), rows):
        chunk = texts[start : start + rows]
        batch = tokenizer(chunk + [""] * (rows - len(chunk)), truncation=True,  # type: ignore[operator]
                          padding="max_length", max_length=length, return_tensors="np")
        inputs = {name: batch[name].astype(details[name]["dtype"]) for name in details}
        logits = next(iter(runner(**inputs).values()))[: len(chunk)]
        predicted += logits.argmax(axis=1).tolist()
    return predicted


def _executorch(folder: Path, tokenizer: object, texts: list[str],
                target: dict[str, int]) -> list[int]:
    import torch
    from executorch.runtime import Runtime

    program = Runtime.get().load_program(folder / "model.pte")
    described = json.loads(program.load_method("edgetune_inputs").execute([])[0])
    forward = program.load_method("forward")
    rows = target["batch_size"]
    predicted: list[int] = []
    for start in range(0, len(texts), rows):
        batch = tokenizer(texts[start : start + rows], truncation=True,  # type: ignore[operator]
                          max_length=target["sequence_length"], padding=True,
                          return_tensors="pt")
        logits = forward.execute([batch[name].to(torch.int64) for name in described["names"]])[0]
        predicted += logits.argmax(dim=1).tolist()
    return predicted


if __name__ == "__main__":
    main()
