"""Two gloo processes with DDP reach the same losses as one process with the same global batch."""

from __future__ import annotations

import json
import os
import socket

import pytest
import torch.multiprocessing as mp

from moectl.config import resolve_run_config

OVERRIDES = [
    "moe.enabled=true",
    "moe.last_n=1",
    "moe.n_experts=4",
    "moe.lb_coef=0",
    "moe.noise_std=0",
    "train.max_steps=4",
    "train.log_every=1",
    "train.eval_every=4",
]


def _worker(
    rank: int, world_size: int, port: int, corpus: str, run_dir: str, overrides=None
) -> None:
    """One rank of a gloo job training the tiny preset with `overrides` (default OVERRIDES).

    The process group is joined here with a timeout, so a rank that dies cannot leave the other
    waiting for the default half hour; the trainer then finds the group initialized.
    """
    import datetime

    import torch
    import torch.distributed as dist

    os.environ.update(
        RANK=str(rank),
        LOCAL_RANK=str(rank),
        WORLD_SIZE=str(world_size),
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
    )
    torch.set_num_threads(1)
    from moectl.training.trainer import train_run

    dist.init_process_group("gloo", timeout=datetime.timedelta(seconds=120))
    try:
        config = resolve_run_config("tiny", overrides=overrides or OVERRIDES)
        train_run(config, corpus, run_dir)
    finally:
        dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _rows(run_dir, kind):
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    return [r for r in map(json.loads, lines) if r["kind"] == kind]


@pytest.mark.slow
def test_two_gloo_ranks_match_one_process(tiny_corpus, tmp_path):
    from moectl.training.trainer import train_run

    single = train_run(
        resolve_run_config("tiny", overrides=OVERRIDES), tiny_corpus, tmp_path / "one"
    )
    mp.spawn(
        _worker,
        args=(2, _free_port(), str(tiny_corpus), str(tmp_path / "two")),
        nprocs=2,
        join=True,
    )
    one, two = _rows(tmp_path / "one", "train"), _rows(tmp_path / "two", "train")
    assert [r["step"] for r in two] == [1, 2, 3, 4]
    assert [r["tokens"] for r in two] == [r["tokens"] for r in one]
    for a, b in zip(one, two, strict=True):
        assert b["loss"] == pytest.approx(a["loss"], rel=1e-4, abs=1e-5)
        for domain, value in a["domain_loss"].items():
            assert b["domain_loss"][domain] == pytest.approx(value, rel=1e-4, abs=1e-5)
    eval_one, eval_two = _rows(tmp_path / "one", "eval"), _rows(tmp_path / "two", "eval")
    assert eval_two[-1]["loss"] == pytest.approx(eval_one[-1]["loss"], rel=1e-4)
    assert single.world_size == 1
    routing = [json.loads(x) for x in (tmp_path / "two" / "routing.jsonl").read_text().splitlines()]
    assert routing[-1]["step"] == 4
    assert (tmp_path / "two" / "checkpoints" / "step-4" / "trainer_state.pt").is_file()
