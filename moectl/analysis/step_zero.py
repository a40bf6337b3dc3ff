"""The init-router control's model: a run's step-0 model, rebuilt from its init/ and verified.

The trainer records what it built the step-0 model from (moectl.model.initial: init/init.json and
the initial gates); this rebuilds the model through the same `build_initial`, reading an
`--init-from` model directory of either kind (moectl.interop.loading), and refuses a rebuild whose
SHA-256 is not the one recorded at step 0.
"""

from __future__ import annotations

from pathlib import Path

import torch

from moectl.errors import ModelError
from moectl.interop.loading import load_model
from moectl.model.artifact import LoadedModel, ModelMeta
from moectl.model.initial import (
    GATES_NAME,
    INIT_DIR,
    RETRAIN_HINT,
    build_initial,
    read_gates,
    read_init_record,
    state_sha256,
)
from moectl.model.routing import moe_layers


def load_initial_model(run_dir: Path, device: str | torch.device = "cpu") -> LoadedModel:
    """The run's model at step 0, rebuilt and verified; ModelError when it cannot be recovered."""
    record = read_init_record(run_dir)
    if record.init_from is not None and not Path(record.init_from).is_dir():
        raise ModelError(
            f"the step-0 model of {run_dir} was built from {record.init_from}, which no longer "
            "exists",
            hint="restore that model directory to evaluate the init-router control",
        )
    with torch.random.fork_rng(devices=[]):
        init_from = load_model(record.init_from) if record.init_from is not None else None
        model = build_initial(record, init_from)
    gates = read_gates(run_dir, record)
    for index, layer in moe_layers(model).items():
        name = f"{index}.gate.weight"
        if name not in gates or gates[name].shape != layer.gate.weight.shape:
            raise ModelError(
                f"{Path(run_dir) / INIT_DIR / GATES_NAME} holds no {name} of the model's shape",
                hint=RETRAIN_HINT,
            )
        layer.gate.weight.data.copy_(gates[name])
    if state_sha256(model) != record.sha256:
        causes = [
            f"{record.init_from} (the model it was built from) changed"
            if record.init_from
            else "the model code changed",
            "torch draws differently",
        ]
        if record.gates_sha256 is None:  # an older record: the gates file is not ruled out
            causes.insert(0, f"{INIT_DIR}/{GATES_NAME} was altered")
        raise ModelError(
            f"the rebuilt step-0 model of {run_dir} differs from the one recorded at training "
            f"time: {', or '.join(causes)}",
            hint="evaluate with the moectl/torch versions and init model the run was trained with",
        )
    meta = ModelMeta(
        hf_config=model.config.to_dict(),
        moe=record.moe,
        moe_layers=list(moe_layers(model)),
        tokenizer=record.tokenizer,
        step=0,
    )
    return LoadedModel(model=model.to(device).eval(), meta=meta)
