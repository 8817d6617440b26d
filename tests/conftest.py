"""Shared fixtures: a tiny BERT built from a config and a small dataset made here.

Nothing is downloaded: the tokenizer's vocabulary is the dataset's own words.
"""

from __future__ import annotations

import random
from pathlib import Path

import pytest

TOPICS = {
    "sport": "match goal team player score league cup win coach season",
    "tech": "software chip phone computer internet data network code robot app",
    "politics": "minister vote election party policy government law debate tax senate",
}
FILLER = "the a of and to in on for with said today new year people".split()


def make_texts(rows_per_label: int, seed: int = 0) -> list[tuple[str, str]]:
    rng = random.Random(seed)
    rows = []
    for label, words in TOPICS.items():
        vocab = words.split()
        for _ in range(rows_per_label):
            text = [rng.choice(vocab if rng.random() < 0.4 else FILLER) for _ in range(24)]
            rows.append((" ".join(text), label))
    rng.shuffle(rows)
    return rows


@pytest.fixture(autouse=True, scope="session")
def _isolated_cache(tmp_path_factory: pytest.TempPathFactory):
    """Every test session gets its own edgetune cache, never the user's.

    Session-scoped, so it is in place before module-scoped fixtures run studies.
    """
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("EDGETUNE_CACHE_DIR", str(tmp_path_factory.getbasetemp() / "cache"))
        yield


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 2-layer BERT (hidden 32, 4 heads) checkpoint folder with its own small vocabulary."""
    import torch
    from transformers import BertConfig, BertForSequenceClassification, BertTokenizer

    folder = tmp_path_factory.mktemp("tiny-bert")
    words = sorted({w for text in TOPICS.values() for w in text.split()} | set(FILLER))
    (folder / "vocab.txt").write_text(
        "\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *words]) + "\n"
    )
    BertTokenizer(vocab=str(folder / "vocab.txt")).save_pretrained(folder)
    torch.manual_seed(0)
    config = BertConfig(vocab_size=len(words) + 5, hidden_size=32, num_hidden_layers=2,
                        num_attention_heads=4, intermediate_size=64, max_position_embeddings=64)
    BertForSequenceClassification(config).save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def tiny_csv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """300 labelled texts (3 topics) as CSV with ``text`` and ``label`` columns."""
    import csv

    path = tmp_path_factory.mktemp("data") / "texts.csv"
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["text", "label"])
        writer.writerows(make_texts(100))
    return path
