"""The init-router control: a run's step-0 model is recovered exactly, or refused with a reason."""

from __future__ import annotations

import pytest
import torch

from moectl.analysis.step_zero import load_initial_model
from moectl.config import resolve_run_config
from moectl.errors import ModelError
from moectl.interop.loading import load_model
from moectl.model.initial import INIT_DIR, read_init_record, state_sha256
from moectl.model.routing import moe_layers
from moectl.model.surgery import apply_moe
from moectl.training.trainer import train_run

MOE = ["moe.enabled=true", "moe.last_n=1", "moe.n_experts=4", "train.max_steps=4"]


def test_upcycled_run_recovers_its_step0_model_bit_for_bit(tiny_corpus, tmp_path):
    dense = resolve_run_config("tiny", overrides=["train.max_steps=4"])
    train_run(dense, tiny_corpus, tmp_path / "dense")
    config = resolve_run_config("tiny", overrides=[*MOE, "train.seed=3"])
    train_run(config, tiny_corpus, tmp_path / "moe", init_from=tmp_path / "dense" / "best")

    record = read_init_record(tmp_path / "moe")
    assert record.init_from == str((tmp_path / "dense" / "best").resolve())
    assert (tmp_path / "moe" / INIT_DIR / "gates.safetensors").stat().st_size < 10_000
    initial = load_initial_model(tmp_path / "moe")
    assert initial.meta.step == 0 and initial.meta.moe_layers == [1]

    expected = load_model(tmp_path / "dense" / "best").model
    apply_moe(expected, config.moe, seed=3)
    assert state_sha256(initial.model) == state_sha256(expected) == record.sha256
    trained = load_model(tmp_path / "moe" / "best").model
    gate = moe_layers(trained)[1].gate.weight
    assert not torch.equal(gate, moe_layers(initial.model)[1].gate.weight)


def test_scratch_run_recovers_its_step0_model_and_keeps_the_callers_rng(tiny_corpus, tmp_path):
    config = resolve_run_config("tiny", overrides=[*MOE, "moe.init=scratch"])
    result = train_run(config, tiny_corpus, tmp_path / "moe")
    assert result.steps == 4
    torch.manual_seed(123)
    expected_draw = torch.rand(3)
    torch.manual_seed(123)
    initial = load_initial_model(tmp_path / "moe")
    assert torch.equal(torch.rand(3), expected_draw)
    assert state_sha256(initial.model) == read_init_record(tmp_path / "moe").sha256


def test_missing_or_changed_sources_are_refused_with_the_reason(tiny_corpus, tmp_path):
    dense = resolve_run_config("tiny", overrides=["train.max_steps=2"])
    train_run(dense, tiny_corpus, tmp_path / "dense")
    with pytest.raises(ModelError, match=r"has no init/init\.json"):
        read_init_record(tmp_path / "dense")

    config = resolve_run_config("tiny", overrides=MOE)
    source = tmp_path / "dense" / "best"
    train_run(config, tiny_corpus, tmp_path / "moe", init_from=source)
    weights = source / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF
    weights.write_bytes(bytes(data))
    with pytest.raises(ModelError, match="differs from the one recorded"):
        load_initial_model(tmp_path / "moe")
    moved = tmp_path / "elsewhere"
    source.rename(moved)
    with pytest.raises(ModelError, match="no longer exists"):
        load_initial_model(tmp_path / "moe")
