"""DDP through torchrun's own launcher (`torch.distributed.run`), two gloo ranks on the CPU.

`--standalone` lets the launcher's rendezvous bind a free port itself (no pick-then-bind race),
`join_timeout` bounds the rendezvous, and every launch runs in its own session under a
wall-clock limit, so a hang fails in a minute with the launcher's output instead of waiting out
gloo's 30-minute default.
"""

from __future__ import annotations

import signal
import time

import pytest
from helpers.launch import LAUNCH_TIMEOUT, finish, fresh, replayable, rows, torchrun
from safetensors.torch import load_file

from moectl.config import resolve_run_config

MOE = ["moe.enabled=true", "moe.last_n=1", "moe.n_experts=4", "train.log_every=1"]
NO_AUX = [*MOE, "moe.lb_coef=0", "moe.noise_std=0", "train.max_steps=4", "train.eval_every=4"]
# LB loss and router noise on (noise annealed over the whole run, so every step draws it).
WITH_AUX = [*MOE, "moe.lb_coef=0.01", "moe.noise_std=0.5", "moe.anneal_fraction=1.0",
            "train.max_steps=16", "train.eval_every=8", "train.save_every=1000"]  # fmt: skip


@pytest.mark.slow
@pytest.mark.timeout(2 * LAUNCH_TIMEOUT + 60)
def test_two_gloo_ranks_match_one_process(tiny_corpus, tmp_path):
    from moectl.training.trainer import train_run

    single = train_run(resolve_run_config("tiny", overrides=NO_AUX), tiny_corpus, tmp_path / "one")
    code, output = finish(torchrun(*fresh(tiny_corpus, tmp_path / "two", NO_AUX)))
    assert code == 0, output[-4000:]
    one = [r for r in rows(tmp_path / "one") if r["kind"] == "train"]
    two = [r for r in rows(tmp_path / "two") if r["kind"] == "train"]
    assert [r["step"] for r in two] == [1, 2, 3, 4]
    assert [r["tokens"] for r in two] == [r["tokens"] for r in one]
    for a, b in zip(one, two, strict=True):
        assert b["loss"] == pytest.approx(a["loss"], rel=1e-4, abs=1e-5)
        for domain, value in a["domain_loss"].items():
            assert b["domain_loss"][domain] == pytest.approx(value, rel=1e-4, abs=1e-5)
    eval_one = [r for r in rows(tmp_path / "one") if r["kind"] == "eval"]
    eval_two = [r for r in rows(tmp_path / "two") if r["kind"] == "eval"]
    assert eval_two[-1]["loss"] == pytest.approx(eval_one[-1]["loss"], rel=1e-4)
    assert single.world_size == 1
    assert rows(tmp_path / "two", "routing.jsonl")[-1]["step"] == 4
    assert (tmp_path / "two" / "checkpoints" / "step-4" / "trainer_state.pt").is_file()


@pytest.mark.slow
@pytest.mark.timeout(3 * LAUNCH_TIMEOUT + 60)
def test_sigterm_to_torchrun_then_resume_equals_an_uninterrupted_ddp_run_bitwise(
    tiny_corpus, tmp_path
):
    """SIGTERM goes to the launcher, as a scheduler sends it; the launcher passes it to both
    ranks, which agree on one step, checkpoint it and exit; a second launch resumes. Losses,
    routing rows and the final weights equal those of one uninterrupted launch, bit for bit."""
    code, output = finish(torchrun(*fresh(tiny_corpus, tmp_path / "full", WITH_AUX)))
    assert code == 0, output[-4000:]

    cut = tmp_path / "cut"
    process = torchrun(*fresh(tiny_corpus, cut, WITH_AUX))
    deadline = time.monotonic() + LAUNCH_TIMEOUT
    while not any(r.get("step", 0) >= 3 for r in rows(cut)) and time.monotonic() < deadline:
        assert process.poll() is None, process.communicate()[0][-4000:]
        time.sleep(0.05)
    process.send_signal(signal.SIGTERM)
    code, output = finish(process)
    assert code != 0, output[-4000:]
    saved = [int(p.name.split("-")[1]) for p in (cut / "checkpoints").iterdir()]
    assert len(saved) == 1 and 3 <= saved[0] < 16, (saved, output[-4000:])

    code, output = finish(torchrun("--run-dir", cut, "--resume"))
    assert code == 0, output[-4000:]
    assert replayable(cut) == replayable(tmp_path / "full")
    assert rows(cut, "routing.jsonl") == rows(tmp_path / "full", "routing.jsonl")
    assert any(r["kind"] == "train" and r["lb_loss"] > 0 for r in rows(cut))
    final = "checkpoints/step-16/model.safetensors"
    weights, expected = load_file(str(cut / final)), load_file(str(tmp_path / "full" / final))
    assert weights.keys() == expected.keys()
    assert all((weights[k] == expected[k]).all() for k in expected)
