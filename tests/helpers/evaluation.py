"""A tiny trained study (dense and MoE runs on a small corpus, a session fixture) and `make_run`,
which trains one such run.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from moectl.config import DataConfig, ModelConfig, MoEConfig
from moectl.data.prepare import prepare_corpus
from moectl.data.store import load_corpus
from moectl.model.artifact import ModelMeta
from moectl.model.factory import build_model
from moectl.model.io import save_model
from moectl.model.surgery import apply_moe

DOMAINS = ("code", "math", "prose")


def _write_texts(root: Path) -> None:
    for i in range(30):
        texts = {
            "code": f"def f{i}(x):\n    '''Add {i}.'''\n    return x + {i}  # sum\n\n"
            f"class C{i}:\n    pass\n",
            "math": f"Question: what is {i} times 3 plus 7? Answer: {i} * 3 + 7 = {3 * i + 7}.",
            "prose": f"The river number {i} winds past old hills, and the villagers tell stories.",
        }
        for domain, text in texts.items():
            folder = root / domain
            folder.mkdir(parents=True, exist_ok=True)
            (folder / f"{i:02d}.txt").write_text(text * 2, encoding="utf-8")


def make_run(
    root: Path, name: str, corpus_path: Path, moe: MoEConfig | None, seed: int = 0
) -> Path:
    """A run directory holding an untrained tiny model (drawn with `seed`) in best/, as
    `moectl train` lays it out."""
    corpus = load_corpus(corpus_path)
    torch.manual_seed(seed)
    model = build_model(
        ModelConfig(n_layer=2, n_embd=32, n_head=2),
        corpus.manifest.tokenizer.vocab_size,
        corpus.block_size,
        eos_token_id=corpus.manifest.tokenizer.eos_id,
    )
    if moe is not None:
        apply_moe(model, moe, seed=1)
    run = root / name
    run.mkdir(parents=True)
    (run / "config.yaml").write_text(f"name: {name}\n", encoding="utf-8")
    (run / "run.json").write_text(json.dumps({"data_dir": str(corpus_path)}), encoding="utf-8")
    meta = ModelMeta(step=5, tokenizer=corpus.manifest.tokenizer.model_dump())
    save_model(model, run / "best", meta, tokenizer=corpus.tokenizer())
    return run


@pytest.fixture(scope="session")
def tiny_study(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A tiny three-domain corpus plus dense, top-1 and top-2 MoE runs (4 experts, 2 layers)."""
    root = tmp_path_factory.mktemp("study")
    _write_texts(root / "texts")
    config = DataConfig(
        source="files",
        domains=list(DOMAINS),
        files={d: [str(root / "texts" / d / "*.txt")] for d in DOMAINS},
        tokenizer="bpe:300",
        block_size=32,
        eval_fraction=0.1,
        eval_max_fraction=0.2,
    )
    prepare_corpus(config, root / "mix")
    moe = MoEConfig(enabled=True, last_n=2, n_experts=4, top_k=1)
    return {
        "corpus": root / "mix",
        "dense": make_run(root, "dense", root / "mix", None),
        "moe": make_run(root, "moe", root / "mix", moe),
        "top2": make_run(root, "top2", root / "mix", moe.model_copy(update={"top_k": 2})),
    }
