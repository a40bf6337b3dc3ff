"""Every balancing scheme in a real training run: exact resume, its state in the routing log,
and `global` across DDP ranks and gradient accumulation (the full-batch loss)."""

from __future__ import annotations

import pytest
import torch
from helpers.launch import LAUNCH_TIMEOUT, finish, fresh, torchrun
from helpers.training import DDP, FULL, SPLIT, _rows

from moectl.config import resolve_run_config
from moectl.model.balance import SCHEMES
from moectl.training.trainer import train_run

BASE = [
    "moe.enabled=true",
    "moe.last_n=1",
    "moe.n_experts=4",
    "moe.top_k=2",
    "train.grad_accum=2",
    "train.max_steps=6",
    "train.save_every=3",
    "train.log_every=1",
    "train.router_log_every=3",
    "train.eval_every=6",
]
# What a scheme trains with beside moe.balance=<its name> (every registered scheme runs).
ALONGSIDE = {
    "global": ["train.batch_mixing=domain"],
    # bias, with every router and expert option beside it
    "bias": [
        "moe.bias_update_rate=0.01",
        "moe.score=sigmoid",
        "moe.shared_experts=1",
        "moe.granularity=2",
    ],
}


def _losses(run_dir):
    keys = ("step", "loss", "lm_loss", "lb_loss", "z_loss", "grad_norm")
    return [tuple(r[k] for k in keys) for r in _rows(run_dir, kind="train")]


@pytest.mark.parametrize("scheme", list(SCHEMES))
def test_every_scheme_resumes_bitwise_and_logs_its_state(tiny_corpus, tmp_path, scheme):
    overrides = [*BASE, f"moe.balance={scheme}", *ALONGSIDE.get(scheme, [])]
    config = resolve_run_config("tiny", overrides=overrides)
    run = tmp_path / "run"
    train_run(config, tiny_corpus, run)
    full = (_losses(run), _rows(run, "routing.jsonl"))
    train_run(config, tiny_corpus, run, resume=run / "checkpoints" / "step-3")
    assert (_losses(run), _rows(run, "routing.jsonl")) == full
    last = full[1][-1]["layers"]["1"]
    lb = [row[3] for row in full[0]]
    if scheme == "bias":
        # Moved 0.01 per step by sign(mean - load): 6 steps leave it within +-0.06, not all 0.
        low, high = last["balance"]["bias_min"], last["balance"]["bias_max"]
        assert -0.06 - 1e-6 <= low < high <= 0.06 + 1e-6
        assert round(high / 0.01, 4) == round(high / 0.01)
        assert len(last["fractions"]) == 8  # 4 experts, each split in 2
    elif scheme == "global":
        shares = [last["balance"][f"f_{i}"] for i in range(4)]
        assert sum(shares) == pytest.approx(1.0) and max(shares) < 1
    else:
        assert last.get("balance", {}) == {}
    if scheme in ("bias", "none"):
        assert set(lb) == {0.0}
    else:
        assert all(value > 0.9 for value in lb)


def test_switch_without_its_loss_trains_the_model_none_trains(tiny_corpus, tmp_path):
    """`switch` at moe.lb_coef=0 adds 0 x its loss: the same gradients, steps and weights as
    `none`, bitwise (docs/study.md reads issue 8's lb-0 arms as the `none` rows)."""
    from safetensors.torch import load_file

    weights, losses = {}, {}
    for scheme in ("switch", "none"):
        run = tmp_path / scheme
        overrides = [*BASE, f"moe.balance={scheme}", "moe.lb_coef=0"]
        train_run(resolve_run_config("tiny", overrides=overrides), tiny_corpus, run)
        losses[scheme] = [(step, loss, lm, z, norm) for step, loss, lm, _, z, norm in _losses(run)]
        weights[scheme] = load_file(run / "best" / "model.safetensors")
    assert losses["switch"] == losses["none"] and len(losses["none"]) == 6
    assert weights["switch"].keys() == weights["none"].keys()
    assert all(torch.equal(weights["switch"][k], weights["none"][k]) for k in weights["none"])


@pytest.mark.slow
@pytest.mark.timeout(LAUNCH_TIMEOUT + 120)
def test_global_over_two_ranks_and_accumulation_equals_the_full_batch(tiny_corpus, tmp_path):
    full = train_run(
        resolve_run_config("tiny", overrides=[*DDP, *FULL]), tiny_corpus, tmp_path / "full"
    )
    assert full.steps == 3
    code, output = finish(torchrun(*fresh(tiny_corpus, tmp_path / "split", [*DDP, *SPLIT])))
    assert code == 0, output[-4000:]
    want, got = _rows(tmp_path / "full", kind="train"), _rows(tmp_path / "split", kind="train")
    assert [r["step"] for r in got] == [1, 2, 3]
    for key in ("lb_loss", "loss", "lm_loss", "z_loss"):
        assert [r[key] for r in got] == pytest.approx([r[key] for r in want], rel=1e-5)
    # Without the global f_i, the same split gives another balancing loss.
    local = [*DDP, "moe.balance=switch", "train.batch_size=4", "train.grad_accum=2"]
    train_run(resolve_run_config("tiny", overrides=local), tiny_corpus, tmp_path / "local")
    first = _rows(tmp_path / "local", kind="train")[0]["lb_loss"]
    assert first != pytest.approx(want[0]["lb_loss"], rel=1e-4)


@pytest.mark.parametrize(
    ("setting", "message"),
    [
        ("moe.granularity=3", "3 does not divide the MLP hidden width 128"),
        ("moe.balance=lossless", "moe.balance"),
        ("moe.score=relu", "moe.score"),
        ("moe.shared_experts=-1", "moe.shared_experts"),
    ],
)
def test_impossible_settings_exit_2_and_write_nothing(cli, tiny_corpus, tmp_path, setting, message):
    run = tmp_path / "run"
    sets = ["moe.enabled=true", "moe.last_n=1", setting]
    command = ["train", "--preset", "tiny", "--data", tiny_corpus, "--run-dir", run]
    result = cli(*command, *[arg for value in sets for arg in ("--set", value)])
    assert result.exit_code == 2, result.output
    assert message in " ".join(result.output.split()) and "Traceback" not in result.output
    assert not run.exists()
