"""A training step outside log steps never reads a device value on the host (issue 9, 19).

An 8-step run whose logs, evals and checkpoints all fall on the last step is watched from the end
of step 2 to the end of step 7: five whole steps (batch copy, forward, backward, routing
bookkeeping, clipping, AdamW, progress report). On the CPU every op that reads a tensor's value
on the host (`.item()`, `bool()`, `.tolist()`, `.numpy()`, `nonzero`, ...) is recorded, and the
MoE layer runs torch's grouped_mm kernel, so this checks on every machine that the step would
queue on a GPU without waiting; the per-expert loop, which reads its offsets, is the control that
fails it. On CUDA, torch's sync debug mode counts the synchronizations themselves.
"""

from __future__ import annotations

import traceback
import warnings

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from moectl.config import resolve_run_config
from moectl.model.dispatch import grouped_mm_supported
from moectl.training.trainer import train_run

aten = torch.ops.aten
# Ops whose result size or value comes from reading a tensor on the host (a sync on CUDA).
HOST_READ_OPS = {
    aten._local_scalar_dense,  # .item(), bool(), float(), int()
    aten.nonzero,
    aten.masked_select,
    aten._unique2,
    aten.unique_consecutive,
    aten.repeat_interleave,
    aten.equal,
}


def _caller() -> str:
    """file:line of the innermost frame outside torch and this file: where the read was made."""
    for frame in reversed(traceback.extract_stack()):
        if "/torch/" not in frame.filename and frame.filename != __file__:
            return f"{frame.filename}:{frame.lineno}"
    return "?"


class HostReads(TorchDispatchMode):
    """Records each host read of a tensor value while active: dispatched ops and the Python-level
    `.tolist()` / `.numpy()`, which on the CPU read memory without dispatching an op."""

    def __init__(self) -> None:
        super().__init__()
        self.reads: list[str] = []
        self._patched = {name: getattr(torch.Tensor, name) for name in ("tolist", "numpy")}

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func.overloadpacket in HOST_READ_OPS:
            self.reads.append(f"{func} in {_caller()}")
        return func(*args, **(kwargs or {}))

    def __enter__(self):
        for name, method in self._patched.items():
            setattr(torch.Tensor, name, self._recording(name, method))
        return super().__enter__()

    def __exit__(self, *exc):
        for name, method in self._patched.items():
            setattr(torch.Tensor, name, method)
        return super().__exit__(*exc)

    def _recording(self, name, method):
        def read(tensor, *args, **kwargs):
            self.reads.append(f"Tensor.{name} in {_caller()}")
            return method(tensor, *args, **kwargs)

        return read


class SyncWarnings:
    """torch's CUDA sync debug mode while active; `reads` are its synchronization warnings."""

    def __init__(self) -> None:
        self.caught = warnings.catch_warnings(record=True)
        self.reads: list[str] = []

    def __enter__(self):
        self.warned = self.caught.__enter__()
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        return self

    def __exit__(self, *exc):
        torch.cuda.set_sync_debug_mode("default")
        self.caught.__exit__(*exc)
        self.reads = [str(w.message) for w in self.warned if "synchroniz" in str(w.message)]


def watched_run(corpus, run_dir, device: str, moe: str) -> list[str]:
    """Train 8 steps with every periodic task on step 8 and return what steps 3-7 read on the
    host (CPU: recorded reads; CUDA: sync warnings)."""
    routing = [] if moe == "dense" else ["moe.enabled=true", "moe.last_n=1", "moe.n_experts=4"]
    top_k = [] if moe == "dense" else [f"moe.top_k={moe[-1]}", "moe.noise_std=0.1"]
    cadence = ["log_every", "router_log_every", "eval_every", "save_every"]
    overrides = [*routing, *top_k, f"train.device={device}", "train.max_steps=8"]
    overrides += [f"train.{name}=8" for name in cadence]
    config = resolve_run_config("tiny", overrides=overrides)
    watcher = HostReads() if device == "cpu" else SyncWarnings()

    def watch(event) -> None:
        if event.stage == "train" and event.completed == 2:
            watcher.__enter__()
        if event.stage == "train" and event.completed == 7:
            watcher.__exit__(None, None, None)

    result = train_run(config, corpus, run_dir, callback=watch)
    assert result.steps == 8
    return watcher.reads


def moectl_reads(reads: list[str]) -> list[str]:
    """The reads made outside transformers' causal-mask preparation, which checks for packed
    sequences with one host read per forward when no attention mask is given
    (masking_utils.find_packed_sequence_indices; a sync on CUDA too, not moectl's code)."""
    return [read for read in reads if "transformers/masking_utils.py" not in read]


@pytest.mark.parametrize("moe", ["dense", "top-1", "top-2"])
def test_no_host_reads_in_cpu_training_steps_outside_log_steps(tiny_corpus, tmp_path, moe):
    reads = watched_run(tiny_corpus, tmp_path / "run", "cpu", moe)
    assert moectl_reads(reads) == []
    assert len(reads) == 5  # transformers' one read a forward: drop the filter when it goes


def test_the_per_expert_loop_is_caught_reading_its_offsets(tiny_corpus, tmp_path, monkeypatch):
    """The control: the fallback loop reads the group offsets on the host in each of its calls
    (fc and proj, forward and backward: 4 a step), and the watcher sees every read."""
    monkeypatch.setattr("moectl.model.dispatch.grouped_mm_supported", lambda x, weight: False)
    reads = moectl_reads(watched_run(tiny_corpus, tmp_path / "run", "cpu", "top-1"))
    assert len(reads) == 4 * 5
    assert all(read.startswith("Tensor.tolist in") and "expert_ops.py" in read for read in reads)


def _grouped_mm_on_this_gpu() -> bool:
    x = torch.empty(8, 32, device="cuda", dtype=torch.bfloat16)
    return grouped_mm_supported(x, torch.empty(4, 32, 128, device="cuda", dtype=torch.bfloat16))


@pytest.mark.skipif(
    not torch.cuda.is_available(),
    reason="needs CUDA: counts real host-device syncs (batch copies, optimizer, the kernels)",
)
@pytest.mark.parametrize("moe", ["dense", "top-1", "top-2"])
def test_no_host_syncs_in_cuda_training_steps_outside_log_steps(tiny_corpus, tmp_path, moe):
    if moe != "dense" and not _grouped_mm_on_this_gpu():
        pytest.skip("no grouped_mm kernel on this GPU: the fallback expert loop syncs")
    assert watched_run(tiny_corpus, tmp_path / "run", "cuda", moe) == []
