"""What the export tests share: a tiny MoE artifact, the prompt and token counts, and the loader
that runs an export in a process that cannot import moectl.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import torch

from helpers.models import small_tokenizer, tiny
from moectl.config import MoEConfig
from moectl.model.artifact import ModelMeta
from moectl.model.io import save_model
from moectl.model.routing import moe_layers

IDS = [[5, 9, 12, 3, 7, 30, 2, 8], [1, 4, 4, 17, 22, 6, 11, 40]]


NEW_TOKENS = 6


# The start of every script that must run without moectl: importing it fails.
BLOCK_MOECTL = textwrap.dedent(
    """
    import json, sys

    class BlockMoectl:
        def find_spec(self, name, path=None, target=None):
            if name == "moectl" or name.startswith("moectl."):
                raise ImportError("moectl is blocked in this process")
            return None

    sys.meta_path.insert(0, BlockMoectl())
    try:
        import moectl  # noqa: F401
    except ImportError:
        pass
    else:
        raise SystemExit("moectl is importable")
    """
)


LOADER = BLOCK_MOECTL + textwrap.dedent(
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path, ids = sys.argv[1], json.loads(sys.argv[2])
    model = AutoModelForCausalLM.from_pretrained(path, trust_remote_code=True).eval()
    tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=True)
    ids = torch.tensor(ids)
    lengths = []

    def record_length(module, args, kwargs):
        lengths.append((args[0] if args else kwargs["input_ids"]).shape[1])

    model.transformer.register_forward_pre_hook(record_length, with_kwargs=True)
    with torch.no_grad():
        out = model(ids, output_router_logits=True)
        lengths.clear()
        generated = model.generate(ids[:1], max_new_tokens=int(sys.argv[3]), do_sample=False)
        cached = lengths[1:]
        # A left-padded batch: the second row, cut by two tokens, must continue as it does alone.
        short = ids[1:, :-2]
        padded = torch.cat([torch.zeros_like(ids[:1, :2]), short], dim=1)
        batch = torch.cat([ids[:1], padded])
        mask = torch.ones_like(batch)
        mask[1, :2] = 0
        options = {"max_new_tokens": 3, "do_sample": False, "output_logits": True,
                   "return_dict_in_generate": True}
        both = model.generate(batch, attention_mask=mask, **options)
        alone = model.generate(short, **options)
        steps = zip(both.logits, alone.logits)
        padded_diff = max(float((b[1] - a[0]).abs().max()) for b, a in steps)
        plain = model(ids, labels=ids).loss
        with_aux = model(ids, labels=ids, output_router_logits=True).loss
    router = getattr(out, "router_logits", None)
    print(json.dumps({
        "class": type(model).__name__,
        "logits": out.logits.tolist(),
        "generated": generated[0].tolist(),
        "cached_lengths": cached,
        "padded_diff": padded_diff,
        "router_shapes": [list(r.shape) for r in router] if router is not None else None,
        "aux_loss": float(out.aux_loss) if router is not None else None,
        "aux_in_loss": float(with_aux - plain),
        "aux_coef": getattr(model.config, "router_aux_loss_coef", None),
        "eos": tokenizer.eos_token_id,
    }))
    """
)


def run_without_moectl(path: Path, tmp_path: Path, loader: str = LOADER) -> dict:
    """The JSON that `loader` prints for `path`, run where moectl cannot be imported."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["HF_MODULES_CACHE"] = str(tmp_path / "hf-modules")
    done = subprocess.run(
        [sys.executable, "-c", loader, str(path), json.dumps(IDS), str(NEW_TOKENS)],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=env,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def artifact(tmp_path: Path, moe: MoEConfig | None, *, with_tokenizer: bool = True) -> Path:
    """A tiny artifact whose experts differ enough that routing matters."""
    model = tiny(moe)
    for layer in moe_layers(model).values():
        if moe.balance == "bias":  # a bias that changes choices, so the export must carry it
            layer.balance.bias.copy_(torch.linspace(0.3, -0.3, moe.routed_experts))
    path = tmp_path / "artifact"
    tokenizer = small_tokenizer() if with_tokenizer else None
    save_model(model, path, ModelMeta(moe=moe), tokenizer=tokenizer)
    return path


MOE = {
    "dense": None,
    "top1": MoEConfig(enabled=True, layers=[1], n_experts=4, top_k=1, perturbation_std=0.5),
    "top2": MoEConfig(enabled=True, layers=[0, 1], n_experts=4, top_k=2, perturbation_std=0.5),
    # bias with the router and expert options that change inference (the other schemes
    # export as switch does: test_every_scheme_exports_its_logits_and_generates).
    "bias": MoEConfig(
        enabled=True,
        layers=[0, 1],
        n_experts=2,
        top_k=1,
        perturbation_std=0.5,
        balance="bias",
        score="sigmoid",
        shared_experts=1,
        granularity=2,
    ),
}
