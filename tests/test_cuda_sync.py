"""On CUDA, a training step outside log steps never waits for the GPU (issue 9).

torch's sync debug mode warns at every host-device synchronization; it is switched on from the
end of step 2 to the end of step 7 of an 8-step run whose logs, evals and checkpoints all fall
on the last step, so it watches five whole steps (batch copy, forward, backward, routing
bookkeeping, clipping, AdamW, progress report). Skipped without CUDA, and where torch's grouped
GEMM kernel does not exist (before SM90): there the expert loop reads its offsets on the host.
"""

from __future__ import annotations

import warnings

import pytest
import torch

from moectl.config import resolve_run_config
from moectl.model.dispatch import grouped_mm_supported
from moectl.training.trainer import train_run


def _grouped_mm_on_this_gpu() -> bool:
    x = torch.empty(8, 32, device="cuda", dtype=torch.bfloat16)
    return grouped_mm_supported(x, torch.empty(4, 32, 128, device="cuda", dtype=torch.bfloat16))


pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


@pytest.mark.parametrize("moe", ["dense", "top-1", "top-2"])
def test_no_host_syncs_in_training_steps_outside_log_steps(tiny_corpus, tmp_path, moe):
    if moe != "dense" and not _grouped_mm_on_this_gpu():
        pytest.skip("no grouped_mm kernel on this GPU (needs SM90+): the expert loop syncs")
    routing = [] if moe == "dense" else ["moe.enabled=true", "moe.last_n=1", "moe.n_experts=4"]
    top_k = [] if moe == "dense" else [f"moe.top_k={moe[-1]}", "moe.noise_std=0.1"]
    cadence = ["log_every", "router_log_every", "eval_every", "save_every"]
    overrides = [*routing, *top_k, "train.device=cuda", "train.max_steps=8"]
    overrides += [f"train.{name}=8" for name in cadence]
    config = resolve_run_config("tiny", overrides=overrides)

    def watch(event) -> None:
        if event.stage == "train" and event.completed == 2:
            torch.cuda.set_sync_debug_mode("warn")
        if event.stage == "train" and event.completed == 7:
            torch.cuda.set_sync_debug_mode("default")

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            result = train_run(config, tiny_corpus, tmp_path / "run", callback=watch)
        finally:
            torch.cuda.set_sync_debug_mode("default")
    assert result.steps == 8
    syncs = [str(w.message) for w in caught if "synchroniz" in str(w.message)]
    assert syncs == []
