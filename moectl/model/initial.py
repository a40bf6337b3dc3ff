"""The record of a run's step-0 model (init/) and the one function that builds that model.

A pretrained model's hidden states already separate the domains, so even an untrained random gate
routes them to different experts. Whether *training* made experts specialize can only be judged
against the same model at step 0: experts as upcycled (or freshly drawn), gates as initialized.

Saving that model whole would double a run's disk use (about 1 GB more for GPT-2 small with four
MoE layers), so the run directory keeps only `init/init.json` (everything the model was built
from: model and MoE config, seed, sizes, the `--init-from` artifact) and `init/gates.safetensors`
(the initial gates, a few KB). `build_initial` is the function the trainer builds the model
with; moectl.analysis.step_zero rebuilds it through that same function and checks a SHA-256 of
the whole rebuilt state against the one recorded at step 0, so a changed `--init-from` artifact
or an RNG that draws differently is an error, never a silently different control.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import torch
from pydantic import BaseModel, Field, ValidationError
from safetensors.torch import load, save_file
from torch import nn

from moectl.config import ModelConfig, MoEConfig
from moectl.errors import ModelError, MoectlError
from moectl.fs import atomic_directory, read_bytes, read_text
from moectl.model.artifact import LoadedModel
from moectl.model.factory import build_model
from moectl.model.routing import moe_layers
from moectl.model.surgery import apply_moe

INIT_DIR = "init"
RECORD_NAME = "init.json"
GATES_NAME = "gates.safetensors"
INIT_FORMAT = 1
RETRAIN_HINT = "train the run again with this moectl to get the init-router control"


class InitRecord(BaseModel):
    """What a run's step-0 model was built from (init/init.json)."""

    format_version: int = INIT_FORMAT
    init_from: str | None = None
    model: ModelConfig
    moe: MoEConfig
    seed: int
    vocab_size: int
    n_positions: int
    eos_id: int | None = None
    tokenizer: dict[str, Any]
    sha256: str = ""
    gates_sha256: str | None = Field(
        None, description="SHA-256 of gates.safetensors as written (absent in older records)"
    )


def build_initial(record: InitRecord, loaded: LoadedModel | None = None) -> nn.Module:
    """The step-0 model: scratch or `--init-from` (`loaded`, the model read from
    record.init_from), then the MoE surgery, all seeded by the record.

    The trainer calls this too, so the rebuild runs the very code that built the trained model.
    A scratch GPT-2 draws from the global torch RNG, which is seeded here with the run's seed
    (callers that must keep their RNG state wrap the call in `torch.random.fork_rng`).
    """
    if record.init_from is None:
        torch.manual_seed(record.seed)
        model = build_model(record.model, record.vocab_size, record.n_positions, record.eos_id)
    else:
        if loaded is None:
            raise ValueError("build_initial needs the --init-from model the record names")
        model = loaded.model
    if not moe_layers(model):
        apply_moe(model, record.moe, seed=record.seed)
    return model


def state_sha256(model: nn.Module) -> str:
    """SHA-256 over every tensor of the state dict (name, dtype, shape and bytes), in key order."""
    digest = hashlib.sha256()
    for key, value in sorted(model.state_dict().items()):
        tensor = value.detach().to("cpu").contiguous().reshape(-1)
        digest.update(f"{key}|{tensor.dtype}|{tuple(tensor.shape)}".encode())
        digest.update(tensor.view(torch.uint8).numpy().tobytes() if tensor.numel() else b"")
    return digest.hexdigest()


def _gates(model: nn.Module) -> dict[str, torch.Tensor]:
    return {
        f"{index}.gate.weight": layer.gate.weight.detach().to("cpu").contiguous()
        for index, layer in moe_layers(model).items()
    }


def write_init_record(run_dir: Path, model: nn.Module, record: InitRecord) -> Path:
    """Write init/ for a fresh MoE run (atomically; the record gains the model's digest)."""
    target = Path(run_dir) / INIT_DIR
    with atomic_directory(target) as tmp:
        save_file(_gates(model), str(tmp / GATES_NAME))
        gates = hashlib.sha256((tmp / GATES_NAME).read_bytes()).hexdigest()
        record = record.model_copy(update={"sha256": state_sha256(model), "gates_sha256": gates})
        (tmp / RECORD_NAME).write_text(record.model_dump_json(indent=2), encoding="utf-8")
    return target


def read_init_record(run_dir: Path) -> InitRecord:
    """The run's InitRecord; ModelError saying why when there is none to read."""
    path = Path(run_dir) / INIT_DIR / RECORD_NAME
    if not path.is_file():
        raise ModelError(
            f"run {run_dir} has no {INIT_DIR}/{RECORD_NAME} (dense, or trained before moectl "
            "recorded the step-0 model)",
            hint=RETRAIN_HINT,
        )
    try:
        return InitRecord.model_validate_json(read_text(path))
    except (MoectlError, ValidationError) as exc:
        why = exc.message if isinstance(exc, MoectlError) else exc.errors()[0]["msg"]
        raise ModelError(f"{path} is unreadable ({why})", hint=RETRAIN_HINT) from None


def read_gates(run_dir: Path, record: InitRecord) -> dict[str, torch.Tensor]:
    """The step-0 gates, checked against the digest the record holds; a ModelError naming
    gates.safetensors when it is missing, damaged or not the file written at step 0."""
    path = Path(run_dir) / INIT_DIR / GATES_NAME
    try:
        data = read_bytes(path)
    except MoectlError as exc:
        raise ModelError(f"{path} is unreadable ({exc.message})", hint=RETRAIN_HINT) from None
    try:
        gates = load(data)
    except Exception as exc:  # safetensors raises its own error types for a torn header
        raise ModelError(f"{path} is unreadable ({exc})", hint=RETRAIN_HINT) from None
    if record.gates_sha256 is not None and hashlib.sha256(data).hexdigest() != record.gates_sha256:
        raise ModelError(
            f"{path} differs from the one written at step 0 (its SHA-256 does not match "
            f"{RECORD_NAME})",
            hint="restore the file from a copy of the run, or train the run again",
        )
    return gates
