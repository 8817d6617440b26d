"""Shared fixtures: tiny BERT, RoBERTa and DistilBERT models built from configs, a small dataset
made here, and a tiny fine-tuned base to compress.

Nothing is downloaded: the tokenizer's vocabulary is the dataset's own words.
"""

from __future__ import annotations

import os
import random
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from edgetune.objectives.build import Workbench
    from edgetune.objectives.task import Task

TOPICS = {
    "sport": "match goal team player score league cup win coach season",
    "tech": "software chip phone computer internet data network code robot app",
    "politics": "minister vote election party policy government law debate tax senate",
}
FILLER = "the a of and to in on for with said today new year people".split()
# A label a user's data could carry: reports must show it as text, never run it.
HOSTILE_LABEL = "<script>alert(1)</script>"


def make_texts(rows_per_label: int, seed: int = 0,
               labels: dict[str, str] | None = None) -> list[tuple[str, str]]:
    """Texts drawn from each topic's words; ``labels`` renames topics in the label column."""
    rng = random.Random(seed)
    rows = []
    for topic, words in TOPICS.items():
        vocab = words.split()
        for _ in range(rows_per_label):
            text = [rng.choice(vocab if rng.random() < 0.4 else FILLER) for _ in range(24)]
            rows.append((" ".join(text), (labels or {}).get(topic, topic)))
    rng.shuffle(rows)
    return rows


@pytest.fixture(autouse=True, scope="session")
def _one_torch_thread() -> None:
    """Tiny models train ~15x faster on one thread: two spin-wait on a shared, busy machine."""
    import torch

    torch.set_num_threads(1)


@pytest.fixture(autouse=True, scope="session")
def _isolated_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Every test session gets its own edgetune cache, never the user's.

    Session-scoped, so that module-scoped fixtures (a finished run, say) see it too.
    """
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("EDGETUNE_CACHE_DIR", str(tmp_path_factory.getbasetemp() / "cache"))
        yield


def build_tiny_model(folder: Path, family: str = "bert", layers: int = 2) -> Path:
    """A ``family`` classifier (hidden 32, 4 heads, FFN 64) with the dataset's own vocabulary.

    ``family`` is ``bert``, ``roberta`` or ``distilbert``: the three namings structured pruning
    supports. The model is built from a config with seeded random weights; nothing downloads.
    """
    import torch
    from transformers import (
        BertConfig,
        BertForSequenceClassification,
        BertTokenizer,
        DistilBertConfig,
        DistilBertForSequenceClassification,
        RobertaConfig,
        RobertaForSequenceClassification,
    )

    words = sorted({w for text in TOPICS.values() for w in text.split()} | set(FILLER))
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.txt").write_text(
        "\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *words]) + "\n"
    )
    # DistilBERT takes no token_type_ids: its tokenizer must not produce them.
    names = {"model_input_names": ["input_ids", "attention_mask"]} if family == "distilbert" else {}
    BertTokenizer(vocab=str(folder / "vocab.txt"), **names).save_pretrained(folder)
    torch.manual_seed(0)
    vocab = len(words) + 5
    if family == "bert":
        model = BertForSequenceClassification(BertConfig(
            vocab_size=vocab, hidden_size=32, num_hidden_layers=layers, num_attention_heads=4,
            intermediate_size=64, max_position_embeddings=64))
    elif family == "roberta":  # positions start after the padding index, hence 2 more
        model = RobertaForSequenceClassification(RobertaConfig(
            vocab_size=vocab, hidden_size=32, num_hidden_layers=layers, num_attention_heads=4,
            intermediate_size=64, max_position_embeddings=66, pad_token_id=0, type_vocab_size=1))
    else:
        model = DistilBertForSequenceClassification(DistilBertConfig(
            vocab_size=vocab, dim=32, n_layers=layers, n_heads=4, hidden_dim=64,
            max_position_embeddings=64, pad_token_id=0))
    model.save_pretrained(folder)
    return folder


def tiny_family_task(folder: Path, family: str, layers: int, data: Path) -> tuple[Path, Task]:
    """An untrained ``family`` tiny model of ``layers`` layers in ``folder``, with a task on
    ``data``."""
    from edgetune.objectives.data import DataConfig
    from edgetune.objectives.task import TaskConfig, load_task

    model = build_tiny_model(folder, family, layers)
    return model, load_task(TaskConfig(model=str(model), data=DataConfig(path=str(data)),
                                       max_length=32))


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 2-layer BERT (hidden 32, 4 heads) checkpoint folder with its own small vocabulary."""
    return build_tiny_model(tmp_path_factory.mktemp("tiny-bert"))


def write_csv(path: Path, rows: list[tuple[str, str]]) -> Path:
    import csv

    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["text", "label"])
        writer.writerows(rows)
    return path


LABELS = sorted(TOPICS)
INPUT_NAMES = ["input_ids", "token_type_ids", "attention_mask"]


@pytest.fixture(scope="session")
def tiny_onnx(tiny_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny BERT with a 3-topic head, exported to ONNX: fast to run."""
    import torch

    from edgetune.objectives.checkpoint import load_classifier
    from edgetune.objectives.export import export_onnx

    torch.manual_seed(0)
    model = load_classifier(tiny_model, LABELS)
    return export_onnx(model, INPUT_NAMES, tmp_path_factory.mktemp("onnx") / "tiny.onnx")


@pytest.fixture(scope="session")
def slow_onnx(tiny_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A BERT on the tiny vocabulary, wide and deep enough to run many times slower than tiny."""
    import torch
    from transformers import BertConfig, BertForSequenceClassification

    from edgetune.objectives.checkpoint import load_classifier
    from edgetune.objectives.export import export_onnx

    torch.manual_seed(0)
    tiny = BertConfig.from_pretrained(tiny_model)
    config = BertConfig(vocab_size=tiny.vocab_size, hidden_size=256, num_hidden_layers=4,
                        num_attention_heads=4, intermediate_size=1024, max_position_embeddings=64,
                        num_labels=len(LABELS))
    folder = tmp_path_factory.mktemp("slow-bert")
    BertForSequenceClassification(config).save_pretrained(folder)
    return export_onnx(load_classifier(folder), INPUT_NAMES, folder / "slow.onnx")


@pytest.fixture(scope="session")
def tiny_csv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """300 labelled texts (3 topics) as CSV with ``text`` and ``label`` columns."""
    return write_csv(tmp_path_factory.mktemp("data") / "texts.csv", make_texts(100))


@pytest.fixture(scope="session")
def hostile_csv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Like ``tiny_csv``, but the politics texts are labelled ``HOSTILE_LABEL``."""
    return write_csv(tmp_path_factory.mktemp("hostile-data") / "texts.csv",
                     make_texts(100, labels={"politics": HOSTILE_LABEL}))


@dataclass(frozen=True)
class HostileRun:
    folder: Path  # study.yaml, and the run folder run/
    stderr_without_report: str  # of the first run, with --no-report
    report_after_first_run: bool
    stderr: str  # of the second run, which resumed the study and wrote the report


@pytest.fixture(scope="session")
def hostile_run(tmp_path_factory: pytest.TempPathFactory, tiny_model: Path,
                hostile_csv: Path) -> HostileRun:
    """A real tiny study run by ``edgetune run`` on data with ``HOSTILE_LABEL``.

    It runs twice: 4 trials with ``--no-report``, then resumed to 5 trials (FP32, the three
    baselines, a sampled recipe) writing the report.
    """
    from click.testing import CliRunner

    from edgetune.search.cli import cli

    from helpers import tiny_config, write_config

    folder = tmp_path_factory.mktemp("hostile-run")
    config = write_config(folder, tiny_config(
        tiny_model, hostile_csv,
        space={"quantization": {"schemes": ["none", "dynamic", "static"]}}))
    outputs = []
    for trials, extra in (("4", ["--no-report"]), ("5", [])):
        result = CliRunner().invoke(cli, ["run", str(config), "--trials", trials, "--run-dir",
                                          str(folder / "run"), *extra], catch_exceptions=False)
        assert result.exit_code == 0, result.output
        outputs.append(result.stderr)
        if extra:
            report_after_first_run = (folder / "run" / "report.html").exists()
    return HostileRun(folder, outputs[0], report_after_first_run, outputs[1])


@pytest.fixture(scope="session")
def tiny_bench(tmp_path_factory: pytest.TempPathFactory, tiny_csv: Path) -> Workbench:
    """A Workbench on a 4-layer tiny BERT fine-tuned on the tiny task: what compression starts from.

    Four layers, so that layers can be dropped with some left to choose from.
    """
    from edgetune.objectives.build import Workbench
    from edgetune.objectives.cache import Cache
    from edgetune.objectives.data import DataConfig
    from edgetune.objectives.finetune import FinetuneConfig, fine_tuned_base
    from edgetune.objectives.latency import MeasureConfig
    from edgetune.objectives.target import TargetConfig
    from edgetune.objectives.task import TaskConfig, load_task

    model = build_tiny_model(tmp_path_factory.mktemp("tiny-bert-4"), layers=4)
    task = load_task(TaskConfig(model=str(model), data=DataConfig(path=str(tiny_csv)),
                                max_length=32))
    cache = Cache(tmp_path_factory.mktemp("bench-cache"))
    settings = FinetuneConfig(steps=60, batch_size=16, learning_rate=3e-3)
    return Workbench(
        task=task, base=fine_tuned_base(task, settings, cache), cache=cache,
        target=TargetConfig(threads=1, sequence_length=32),
        measure=MeasureConfig(warmup=1, rounds=2, max_rounds=2, runs=3, inputs=2),
        batch_size=16, seed=0,
    )


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """A PostgreSQL server for scale-out tests: ``$EDGETUNE_TEST_POSTGRES`` when set, else a
    throwaway server started here on loopback (Debian's ``postgresql`` binaries) and removed
    after the session."""
    if os.environ.get("EDGETUNE_TEST_POSTGRES"):
        yield os.environ["EDGETUNE_TEST_POSTGRES"]
        return
    from postgres import ServerUnavailable, ThrowawayServer

    try:
        server = ThrowawayServer.start()
    except ServerUnavailable as reason:
        pytest.skip(f"no PostgreSQL server could be started: {reason}")
    try:
        yield server.url
    finally:
        server.stop()


@pytest.fixture(scope="session")
def study_bench(tmp_path_factory: pytest.TempPathFactory, tiny_model: Path, tiny_csv: Path):
    """The Workbench a tiny study builds its candidates with: the 2-layer tiny BERT fine-tuned
    with the tiny config's settings (cached for the whole session)."""
    from edgetune.objectives.build import Workbench
    from edgetune.objectives.cache import Cache
    from edgetune.objectives.finetune import fine_tuned_base
    from edgetune.objectives.task import load_task
    from edgetune.search.config import StudyConfig

    from helpers import tiny_config

    config = StudyConfig.model_validate(tiny_config(tiny_model, tiny_csv))
    task = load_task(config.task)
    cache = Cache(tmp_path_factory.getbasetemp() / "cache")  # the cache _isolated_cache names
    base = fine_tuned_base(task, config.finetune, cache)
    return Workbench(task=task, base=base, cache=cache, target=config.target,
                     measure=config.measure, batch_size=config.finetune.batch_size,
                     seed=config.finetune.seed)


@pytest.fixture(scope="session")
def tiny_build(tmp_path_factory: pytest.TempPathFactory, study_bench):
    """Build a recipe on the tiny task once per session and return its ONNX file."""
    from edgetune.objectives.build import Candidate
    from edgetune.objectives.candidate import build

    folder = tmp_path_factory.mktemp("candidates")
    built: dict[str, Path] = {}

    def build_once(recipe) -> Path:  # type: ignore[no-untyped-def]
        key = recipe.model_dump_json()
        if key not in built:
            candidate = Candidate(path=folder / f"{len(built)}" / "model.onnx")
            built[key] = build(recipe, study_bench, candidate).path
        return built[key]

    return build_once
