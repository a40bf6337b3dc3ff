"""The trainer's steps on their own, on a tiny MoE model: set-up (`open_session`), one update
(`train_step`), a train row (`log_train`) and a checkpoint (`save_checkpoint`) that a new
session restores to the same numbers, bit for bit."""

from __future__ import annotations

import json

import torch

from moectl.config import resolve_run_config
from moectl.data.store import load_corpus
from moectl.training.distributed import DistContext
from moectl.training.log_rows import log_train
from moectl.training.saving import save_checkpoint
from moectl.training.session import Session, open_session
from moectl.training.update import train_step

MOE = ["moe.enabled=true", "moe.last_n=1", "moe.n_experts=4", "train.max_steps=12"]


def opened(tiny_corpus, run_dir, checkpoint=None) -> Session:
    corpus = load_corpus(tiny_corpus)
    config = resolve_run_config("tiny", overrides=MOE)
    config = config.model_copy(update={"data": corpus.manifest.config})
    session = Session(config, corpus, run_dir, torch.device("cpu"), DistContext(), None)
    open_session(session, checkpoint, None, tiny_corpus, [])
    return session


def weights(session: Session) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in session.core.state_dict().items()}


def jsonl(path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_one_update_steps_the_model_and_fills_the_window(tiny_corpus, tmp_path):
    session = opened(tiny_corpus, tmp_path / "run")
    before = weights(session)
    tokens = train_step(session)
    cfg = session.train_cfg
    assert tokens == cfg.batch_size * cfg.grad_accum * session.corpus.block_size == session.tokens
    assert session.step == 1 and session.window.steps == 1
    loss, lm_loss, lb_loss, _ = session.window.sums.tolist()
    assert 0 < lm_loss < loss and lb_loss > 0  # the total carries the balancing term
    changed = [k for k, v in weights(session).items() if not torch.equal(v, before[k])]
    assert any("router" in k or "gate" in k for k in changed) and len(changed) > len(before) // 2
    # The first update's forwards log the init router: a step-0 row that is no collapse check.
    session.close()
    (row,) = jsonl(tmp_path / "run" / "routing.jsonl")
    assert row["step"] == 0 and row["collapse"] is None
    assert abs(sum(row["layers"]["1"]["fractions"]) - 1) < 1e-6


def test_log_train_writes_the_window_mean_and_resets_it(tiny_corpus, tmp_path):
    session = opened(tiny_corpus, tmp_path / "run")
    train_step(session)
    train_step(session)
    mean = (session.window.sums / 2).tolist()
    log_train(session)
    session.close()
    (row,) = jsonl(tmp_path / "run" / "metrics.jsonl")
    assert row["kind"] == "train" and row["step"] == 2
    assert [row["loss"], row["lm_loss"], row["lb_loss"], row["z_loss"]] == mean
    assert session.last_train_loss == row["loss"] and session.window.steps == 0


def test_a_checkpoint_restores_a_new_session_that_steps_on_bitwise(tiny_corpus, tmp_path):
    run = tmp_path / "run"
    first = opened(tiny_corpus, run)
    train_step(first)
    train_step(first)
    save_checkpoint(first)
    checkpoint = run / "checkpoints" / "step-2"
    assert sorted(p.name for p in checkpoint.iterdir()) == [
        "model.json",
        "model.safetensors",
        "trainer_state.pt",
    ]
    assert first.last_checkpoint == checkpoint and first.saved_step == 2
    train_step(first)
    first.close()

    second = opened(tiny_corpus, run, checkpoint)
    assert second.step == 2 and second.resumed_from == checkpoint
    assert second.tokens == 2 * first.tokens // 3
    train_step(second)
    second.close()
    assert torch.equal(second.window.sums, first.window.sums)
    after_first, after_second = weights(first), weights(second)
    assert all(torch.equal(after_second[k], v) for k, v in after_first.items())
