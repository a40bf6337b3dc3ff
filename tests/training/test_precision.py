"""`train.precision`: auto is bf16 only where bf16 is fast (CUDA, a CPU with AMX tiles), the
run records what it resolved to, and a resume keeps it on any machine. bf16 autocast against
fp32 on the same batch: logits and gradients within a stated tolerance.

The probe (`device.fast_cpu_bf16`) is forced on and off here, so both paths run on every CPU
(bf16 autocast works without bf16 hardware, only slower)."""

from __future__ import annotations

import json
import os
import signal

import pytest
import torch

from moectl import device as device_module
from moectl.config import resolve_run_config
from moectl.device import resolve_precision
from moectl.training.trainer import train_run

MOE = ["moe.enabled=true", "moe.last_n=1", "moe.n_experts=4", "train.max_steps=8"]
CPU = torch.device("cpu")


def _probe(monkeypatch: pytest.MonkeyPatch, fast: bool) -> None:
    monkeypatch.setattr(device_module, "fast_cpu_bf16", lambda: fast)


def _precision(run_dir) -> str:
    return json.loads((run_dir / "run.json").read_text())["precision"]


def _losses(run_dir) -> list[tuple[int, float]]:
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [(r["step"], r["loss"]) for r in rows if r.get("kind") == "train"]


def test_auto_is_bf16_only_where_bf16_is_fast(monkeypatch: pytest.MonkeyPatch):
    _probe(monkeypatch, True)
    assert resolve_precision(CPU, "auto") == "bf16"
    assert resolve_precision(CPU, "fp32") == "fp32"
    _probe(monkeypatch, False)
    assert resolve_precision(CPU, "auto") == "fp32"
    assert resolve_precision(CPU, "bf16") == "bf16"
    assert resolve_precision(torch.device("cuda"), "auto") == "bf16"
    assert resolve_precision(torch.device("mps"), "auto") == "fp32"


def test_a_run_records_its_precision_and_a_resume_keeps_it(
    tiny_corpus, tmp_path, monkeypatch: pytest.MonkeyPatch
):
    """Without fast bf16 auto trains exactly as fp32 does; with it, in bf16, recorded. A run
    begun in fp32 and resumed on a machine whose probe says bf16 stays fp32, to the same losses
    as the uninterrupted run."""
    auto = resolve_run_config("tiny", overrides=[*MOE, "train.save_every=4", "train.log_every=2"])
    fp32 = auto.model_copy(deep=True)
    fp32.train.precision = "fp32"
    _probe(monkeypatch, False)
    train_run(fp32, tiny_corpus, tmp_path / "fp32")
    train_run(auto, tiny_corpus, tmp_path / "auto-off")
    assert _precision(tmp_path / "fp32") == _precision(tmp_path / "auto-off") == "fp32"
    assert _losses(tmp_path / "auto-off") == _losses(tmp_path / "fp32")

    _probe(monkeypatch, True)
    train_run(auto, tiny_corpus, tmp_path / "auto-on")
    assert _precision(tmp_path / "auto-on") == "bf16"
    on, off = _losses(tmp_path / "auto-on"), _losses(tmp_path / "fp32")
    assert on != off  # it did train in bf16
    assert [s for s, _ in on] == [s for s, _ in off]
    assert all(abs(a - b) < 0.05 * b for (_, a), (_, b) in zip(on, off, strict=True))

    _probe(monkeypatch, False)

    def interrupt_at_5(event):
        if event.stage == "train" and event.completed == 5:
            os.kill(os.getpid(), signal.SIGINT)

    cut = train_run(auto, tiny_corpus, tmp_path / "cut", callback=interrupt_at_5)
    assert cut.stop_reason == "interrupted"
    _probe(monkeypatch, True)  # resumed on a machine with bf16 tiles
    train_run(auto, tiny_corpus, tmp_path / "cut", resume=True)
    assert _precision(tmp_path / "cut") == "fp32"
    assert _losses(tmp_path / "cut") == _losses(tmp_path / "fp32")


@pytest.mark.parametrize(
    "moe", [[], ["moe.enabled=true", "moe.last_n=1", "moe.n_experts=4", "moe.top_k=4"]]
)
def test_bf16_logits_and_gradients_are_fp32_within_tolerance(moe: list[str]):
    """The model's forward and backward under bf16 autocast against fp32 on the same batch and
    router noise: logits within 2% relative (L2), every parameter's gradient within 5% relative
    and cosine above 0.999 (bf16 keeps 8 bits of mantissa: about 0.3% and 0.6% here; the
    routers compute in fp32); a gradient that is 0 in exact arithmetic (the gate's, when the
    upcycled experts are identical copies) within 1% of the largest gradient's norm. The MoE
    routes every token to all its experts (top-k = E), so no near-tie between two experts can
    flip a choice between the precisions and move a whole token's gradient to another expert."""
    from moectl.model.factory import build_model
    from moectl.model.surgery import apply_moe

    config = resolve_run_config("tiny", overrides=moe)
    torch.manual_seed(0)
    model = build_model(config.model, 96, 16, 0)
    apply_moe(model, config.moe, seed=0)
    ids = torch.randint(0, 96, (4, 16), generator=torch.Generator().manual_seed(1))

    def run(autocast: bool) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        model.zero_grad(set_to_none=True)
        torch.manual_seed(2)  # the same router noise in both
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
            logits = model(input_ids=ids).logits.float()
        loss = torch.nn.functional.cross_entropy(logits.flatten(0, 1), ids.flatten())
        loss.backward()
        named = model.named_parameters()
        return logits.detach(), {n: p.grad.clone() for n, p in named if p.grad is not None}

    ref_logits, ref_grads = run(False)
    logits, grads = run(True)
    assert not torch.equal(logits, ref_logits)
    assert (logits - ref_logits).norm() / ref_logits.norm() < 0.02
    assert grads.keys() == ref_grads.keys()
    largest = max(ref.norm() for ref in ref_grads.values())
    for name, ref in ref_grads.items():
        error = (grads[name] - ref).norm()
        if ref.norm() < 0.01 * largest:  # ~0 exactly: the gate's, over identical upcycled experts
            assert error < 0.01 * largest, (name, float(error), float(largest))
            continue
        cosine = torch.nn.functional.cosine_similarity(grads[name].flatten(), ref.flatten(), dim=0)
        assert error / ref.norm() < 0.05 and cosine > 0.999, (name, float(error / ref.norm()))
