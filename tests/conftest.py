"""Test-wide settings: never touch the network, keep torch to one thread per test process."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("MPLBACKEND", "Agg")

import pytest
from typer.testing import CliRunner


@pytest.fixture(scope="session", autouse=True)
def _torch_threads() -> None:
    try:
        import torch
    except ImportError:
        return
    torch.set_num_threads(1)


@pytest.fixture
def cli():
    """Run the moectl CLI in-process: cli("inspect", "x") -> click Result (exit_code, output)."""
    from moectl.cli.app import app

    runner = CliRunner()

    def invoke(*args: str):
        return runner.invoke(app, [str(a) for a in args])

    return invoke


def write_domain_texts(root, n_texts: int = 40) -> dict[str, list[str]]:
    """Small, clearly different code / math / prose documents, one file each, seeded."""
    import random

    rng = random.Random(0)
    words = [
        "the",
        "river",
        "valley",
        "town",
        "market",
        "people",
        "summer",
        "winter",
        "old",
        "bridge",
        "road",
        "light",
    ]
    names = [
        "alpha",
        "beta",
        "gamma",
        "delta",
        "items",
        "total",
        "value",
        "count",
        "index",
        "result",
        "node",
        "graph",
    ]
    files: dict[str, list[str]] = {}
    for domain in ("code", "math", "prose"):
        folder = root / domain
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(n_texts):
            if domain == "code":
                a, b = rng.sample(names, 2)
                line = f"def {a}_{i}({b}):\n    return [{b} * {rng.randint(1, 9)} for {a} in x]\n"
                text = line * 3
            elif domain == "math":
                x, y = rng.randint(1, 99), rng.randint(1, 99)
                text = " ".join(f"Q: {x + k} + {y} = ? A: {x + k + y}." for k in range(6))
            else:
                text = " ".join(rng.choice(words) for _ in range(60)) + "."
            (folder / f"{i}.txt").write_text(text, encoding="utf-8")
        files[domain] = [str(folder)]
    return files


@pytest.fixture(scope="session")
def tiny_corpus(tmp_path_factory):
    """A prepared three-domain corpus (bpe:300, blocks of 16) shared by training tests."""
    from moectl.config import DataConfig
    from moectl.data.prepare import prepare_corpus

    root = tmp_path_factory.mktemp("tiny-corpus")
    files = write_domain_texts(root / "texts")
    config = DataConfig(
        source="files", domains=list(files), files=files, tokenizer="bpe:300", block_size=16
    )
    return prepare_corpus(config, root / "corpus").path
