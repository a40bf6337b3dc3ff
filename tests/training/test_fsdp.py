"""`train.parallel: fsdp` (FSDP2) beside DDP: two gloo ranks on the CPU, launched as test_ddp does.

torch 2.13 runs `fully_shard` on a CPU DeviceMesh over gloo (all-gather, reduce-scatter, the
fused AdamW on DTensors, clip_grad_norm_ over DTensor gradients), so these tests need no GPU.
The two modes add gradients in a different order (DDP all-reduces once per step, FSDP
reduce-scatters each micro-batch), so they agree within float tolerance, not bit for bit.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
import torch
from conftest import refused, untouched
from helpers.launch import LAUNCH_TIMEOUT, finish, fresh, replayable, rows, torchrun
from safetensors.torch import load_file

from moectl.config import TrainConfig
from moectl.errors import ConfigError
from moectl.training.sharding import check_parallel

# MoE with the bias balance (per-expert buffers moved after each step by the all-reduced
# counts, saved in the state dict) and two micro-batches per step, checkpoints at 2 and 4.
# 9 eval blocks in batches of 4: rank 0 scores 5 (two forwards), rank 1 scores 4 (one), so
# under FSDP rank 1 must run a filler forward for rank 0's second all-gathers.
RUN = [
    "moe.enabled=true", "moe.last_n=1", "moe.n_experts=4", "moe.balance=bias",
    "moe.bias_update_rate=0.05", "train.grad_accum=2", "train.max_steps=4", "train.log_every=1",
    "train.router_log_every=1", "train.eval_every=2", "train.eval_max_blocks=9",
    "train.save_every=2", "train.keep_last=2",
]  # fmt: skip
FINAL = "checkpoints/step-4"
LIMIT = 3 * LAUNCH_TIMEOUT + 60


@pytest.fixture(scope="module")
def two_rank_runs(tiny_corpus, tmp_path_factory) -> dict[str, Path]:
    """The same 4-step run launched on two ranks, once with DDP and once with FSDP."""
    root = tmp_path_factory.mktemp("parallel")
    runs = {mode: root / mode for mode in ("ddp", "fsdp")}
    for mode, path in runs.items():
        launch = torchrun(*fresh(tiny_corpus, path, [*RUN, f"train.parallel={mode}"]))
        code, output = finish(launch)
        assert code == 0, output[-4000:]
    return runs


def assert_close(got: Any, want: Any, where: str = "") -> None:
    """Equal structure and strings, numbers within float tolerance (summation order differs)."""
    if isinstance(want, dict):
        assert isinstance(got, dict) and got.keys() == want.keys(), where
        for key in want:
            assert_close(got[key], want[key], f"{where}.{key}")
    elif isinstance(want, list):
        assert isinstance(got, list) and len(got) == len(want), where
        for i, (a, b) in enumerate(zip(got, want, strict=True)):
            assert_close(a, b, f"{where}[{i}]")
    elif isinstance(want, float) and not isinstance(want, bool):
        assert got == pytest.approx(want, rel=1e-4, abs=1e-6), where
    else:
        assert got == want, where


def assert_same_weights(got: Path, want: Path) -> None:
    """Two model artifacts with the same keys, ties and values."""
    weights, expected = (load_file(str(p / "model.safetensors")) for p in (got, want))
    assert weights.keys() == expected.keys()
    for key in expected:
        torch.testing.assert_close(weights[key], expected[key], rtol=1e-4, atol=1e-6)
    tied = [json.loads((p / "model.json").read_text())["tied"] for p in (got, want)]
    assert tied[0] == tied[1] == {"lm_head.weight": "transformer.wte.weight"}


def assert_same_checkpoint(got: Path, want: Path) -> None:
    """Same weights and the same optimizer state in the same layout (torch's own numbering)."""
    assert_same_weights(got, want)
    states = [torch.load(p / "trainer_state.pt", weights_only=True) for p in (got, want)]
    optimizers = [state["optimizer"] for state in states]
    assert optimizers[0]["param_groups"] == optimizers[1]["param_groups"]
    assert optimizers[0]["state"].keys() == optimizers[1]["state"].keys()
    for number, moments in optimizers[1]["state"].items():
        for name, value in moments.items():
            torch.testing.assert_close(
                optimizers[0]["state"][number][name], value, rtol=1e-4, atol=1e-7
            )


def train_rows(run: Path) -> list[dict]:
    return [row for row in replayable(run) if row["kind"] == "train"]


@pytest.mark.slow
@pytest.mark.timeout(LIMIT)
def test_fsdp_on_two_ranks_matches_ddp_on_two_ranks(two_rank_runs):
    ddp, fsdp = two_rank_runs["ddp"], two_rank_runs["fsdp"]
    assert [row["step"] for row in train_rows(fsdp)] == [1, 2, 3, 4]
    assert_close(replayable(fsdp), replayable(ddp))
    routing = rows(fsdp, "routing.jsonl")
    assert [row["step"] for row in routing] == [0, 1, 2, 3, 4]
    assert any(abs(v) > 0 for v in routing[-1]["layers"]["1"]["balance"].values())
    assert_close(routing, rows(ddp, "routing.jsonl"))
    assert_same_checkpoint(fsdp / FINAL, ddp / FINAL)
    assert_same_weights(fsdp / "best", ddp / "best")
    for name in ("init.json", "gates.safetensors"):
        assert (fsdp / "init" / name).read_bytes() == (ddp / "init" / name).read_bytes()


@pytest.mark.slow
@pytest.mark.timeout(LIMIT)
def test_an_fsdp_run_resumes_on_one_process(two_rank_runs, tmp_path):
    from moectl.rundir.reading import corpus_dir, read_run_config
    from moectl.training.trainer import train_run

    run = tmp_path / "fsdp-then-one"
    shutil.copytree(two_rank_runs["fsdp"], run)
    saved = read_run_config(run)
    config = saved.model_copy(update={"train": saved.train.model_copy(update={"parallel": "ddp"})})
    corpus = corpus_dir(run)
    result = train_run(config, corpus, run, resume=run / "checkpoints" / "step-2")
    assert result.steps == 4 and result.world_size == 1
    assert_close(replayable(run), replayable(two_rank_runs["fsdp"]))
    assert_same_checkpoint(run / FINAL, two_rank_runs["fsdp"] / FINAL)
    amendment = json.loads((run / "run.json").read_text())["amendments"][-1]
    assert (amendment["key"], amendment["old"], amendment["new"]) == (
        "train.parallel",
        "fsdp",
        "ddp",
    )
    assert amendment["step"] == 2


@pytest.mark.slow
@pytest.mark.timeout(LIMIT)
def test_a_ddp_run_resumes_under_fsdp(two_rank_runs, tmp_path):
    run = tmp_path / "ddp-then-fsdp"
    shutil.copytree(two_rank_runs["ddp"], run)
    step_2 = run / "checkpoints" / "step-2"
    launch = torchrun("--run-dir", run, "--resume", step_2, "--set", "train.parallel=fsdp")
    code, output = finish(launch)
    assert code == 0, output[-4000:]
    assert_close(replayable(run), replayable(two_rank_runs["ddp"]))
    assert_close(rows(run, "routing.jsonl"), rows(two_rank_runs["ddp"], "routing.jsonl"))
    assert_same_checkpoint(run / FINAL, two_rank_runs["ddp"] / FINAL)


def test_fsdp_without_a_distributed_launch_exits_2_and_writes_nothing(cli, tiny_corpus, tmp_path):
    run = tmp_path / "run"
    with untouched(tmp_path, tiny_corpus):
        result = cli(
            "train", "--preset", "tiny", "--set", "train.parallel=fsdp",
            "--data", tiny_corpus, "--run-dir", run,
        )  # fmt: skip
    refused(result, "train.parallel=fsdp", "distributed launch")
    assert "torch.distributed.run" in result.output


def test_fsdp_refuses_torch_compile_and_ddp_accepts_one_process():
    with pytest.raises(ConfigError) as refusal:
        check_parallel(TrainConfig(parallel="fsdp", compile=True), world_size=2)
    assert refusal.value.message == "train.compile is not supported with train.parallel=fsdp"
    check_parallel(TrainConfig(parallel="fsdp"), world_size=2)
    check_parallel(TrainConfig(parallel="ddp", compile=True), world_size=1)
