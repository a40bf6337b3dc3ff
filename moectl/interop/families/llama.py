"""The Llama family's export (`@exporter("llama")`): which transformers class a Llama-family
moectl model exports as, and its config and weights.

A Llama-family model in moectl is transformers' own Llama / Mistral / Qwen2 / Qwen3 CausalLM
with the MLPs of its MoE layers replaced by moectl's MoE layer (router `gate`, stacked SwiGLU
experts `gate_up` (E, D, 2F) and `down` (E, F, D), bias-free). Where a transformers MoE class
computes exactly what that layer computes in eval, the export is that class: no
trust_remote_code, and any tool that knows the class loads it. Otherwise it is the custom-code
model in `hf_code/modeling_moectl_llama_moe.py`, and the plan says why (docs/interop.md has the
table).

What makes a native class exact (transformers 5.24):
- routing: all three native routers take float32 logits of a bias-free linear gate, softmax,
  top-k of the probabilities and (Mixtral always, Qwen-MoE with norm_topk_prob) divide the
  chosen probabilities by their sum: moectl's top-k > 1 weights, and p / p = 1.0 exactly is
  moectl's top-1 weight. Routing noise is training-only. Fine-grained experts are plain experts
  of width F/g (E*g of them, top k*g). None has sigmoid scores, a selection bias or shared
  experts of weight 1 (Qwen2-MoE's shared expert is sigmoid-gated): those go to custom code.
- attention: Mixtral is Mistral's (no biases, optional sliding window on every layer), so it
  hosts Llama and Mistral when every layer is MoE. Qwen3-MoE is Qwen3's (q/k norms, no sliding
  window per layer type). Qwen2-MoE is Qwen2's with `qkv_bias` a setting, with dense layers
  (`mlp_only_layers`) and per-layer `layer_types`; its always-present sigmoid-gated shared
  expert is written with zero weights (width 1), so it adds exactly 0.0. It hosts Qwen2, and
  Llama / Mistral with dense layers.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import torch
from torch import Tensor

from moectl.config import MoEConfig
from moectl.errors import ModelError
from moectl.interop.exporters import exporter
from moectl.interop.plan import DENSE_REASON, ExportPlan
from moectl.model.arch import family_of
from moectl.model.balance import SCHEMES

CODE_FILES = ("configuration_moectl_llama_moe.py", "modeling_moectl_llama_moe.py")
# moectl's MoE layer (moectl.model.moe.MoEMLP with SwiGLU experts) -> transformers' MoE block.
GATE_UP, DOWN = "experts.gate_up", "experts.down"
NATIVE_GATE_UP, NATIVE_DOWN = "experts.gate_up_proj", "experts.down_proj"
# Config keys of the base model that describe the checkpoint rather than the architecture.
NOT_CARRIED = ("architectures", "model_type", "transformers_version", "auto_map", "dtype")
# A wrong mapping (orientation, order, a missing bias) moves logits by O(1); the same math in
# another summation order by ~1e-6. The export's self-check sits between the two.
SELF_CHECK_TOLERANCE = 1e-3


@dataclass(frozen=True)
class NativeMoE:
    """A transformers MoE class and how a moectl layout maps to its config."""

    model_type: str
    architecture: str
    config: Callable[[dict[str, Any], MoEConfig, list[int]], dict[str, Any]]
    zero_shared_expert: bool = False


def custom_architecture(model_type: str) -> str:
    """The class name of the custom-code export of a `model_type` base (configuration and
    modeling files in hf_code/)."""
    return {
        "llama": "LlamaMoectlMoEForCausalLM",
        "mistral": "MistralMoectlMoEForCausalLM",
        "qwen2": "Qwen2MoectlMoEForCausalLM",
        "qwen3": "Qwen3MoectlMoEForCausalLM",
    }[model_type]


def _routed(base: dict[str, Any], moe: MoEConfig) -> dict[str, Any]:
    """The routed-expert sizes every native class takes (fine-grained experts included)."""
    return {
        "num_experts_per_tok": moe.routed_top_k,
        "moe_intermediate_size": base["intermediate_size"] // moe.granularity,
        "router_aux_loss_coef": SCHEMES[moe.balance].aux_loss_coef(moe),
        "output_router_logits": False,
    }


def _dense_layers(base: dict[str, Any], moe_layers: list[int]) -> list[int]:
    return [i for i in range(base["num_hidden_layers"]) if i not in moe_layers]


def _mixtral(base: dict[str, Any], moe: MoEConfig, moe_layers: list[int]) -> dict[str, Any]:
    routed = _routed(base, moe)
    return {
        **base,
        **routed,
        "intermediate_size": routed["moe_intermediate_size"],
        "num_local_experts": moe.routed_experts,
        "sliding_window": base.get("sliding_window"),
        "router_jitter_noise": 0.0,
    }


def _qwen_moe(base: dict[str, Any], moe: MoEConfig, moe_layers: list[int]) -> dict[str, Any]:
    return {
        **base,
        **_routed(base, moe),
        "num_experts": moe.routed_experts,
        "norm_topk_prob": True,
        "decoder_sparse_step": 1,
        "mlp_only_layers": _dense_layers(base, moe_layers),
    }


def _qwen2_moe(base: dict[str, Any], moe: MoEConfig, moe_layers: list[int]) -> dict[str, Any]:
    layer_types = (
        base.get("layer_types")
        or ["sliding_attention" if base.get("sliding_window") else "full_attention"]
        * base["num_hidden_layers"]
    )
    sliding = "sliding_attention" in layer_types
    return {
        **_qwen_moe(base, moe, moe_layers),
        "shared_expert_intermediate_size": 1,
        "qkv_bias": base["model_type"] == "qwen2",
        "layer_types": layer_types,
        "use_sliding_window": sliding,
        "sliding_window": base.get("sliding_window") if sliding else None,
    }


MIXTRAL = NativeMoE("mixtral", "MixtralForCausalLM", _mixtral)
QWEN3_MOE = NativeMoE("qwen3_moe", "Qwen3MoeForCausalLM", _qwen_moe)
QWEN2_MOE = NativeMoE("qwen2_moe", "Qwen2MoeForCausalLM", _qwen2_moe, zero_shared_expert=True)
NATIVE = {target.architecture: target for target in (MIXTRAL, QWEN3_MOE, QWEN2_MOE)}
NATIVE_MODEL_TYPES = tuple(target.model_type for target in NATIVE.values())


def plan_export(base: dict[str, Any], moe: MoEConfig | None, moe_layers: list[int]) -> ExportPlan:
    """The class a Llama-family model exports as: the base class when dense, a native MoE class
    where one is exact, else moectl's custom code, with the reason."""
    family = base["model_type"]
    if moe is None or not moe_layers:
        architecture = (base.get("architectures") or [f"{family.title()}ForCausalLM"])[0]
        return ExportPlan(architecture, DENSE_REASON)
    custom = custom_architecture(family)
    blocker = _routing_blocker(moe)
    if blocker:
        return ExportPlan(custom, f"no transformers MoE class has {blocker}", CODE_FILES)
    if base.get("mlp_bias"):
        return ExportPlan(custom, "the base model's MLPs have biases; no MoE class has", CODE_FILES)
    every_layer = len(moe_layers) == base["num_hidden_layers"]
    if family == "qwen3":
        if any(kind != "full_attention" for kind in base.get("layer_types") or []):
            reason = "Qwen3-MoE cannot give only some layers a sliding window"
            return ExportPlan(custom, reason, CODE_FILES)
        return ExportPlan(
            QWEN3_MOE.architecture,
            "Qwen3-MoE routes as moectl does (softmax, top-k, norm_topk_prob) with "
            "mlp_only_layers for the dense layers",
        )
    if base.get("attention_bias"):
        reason = "the base has attention biases, Mixtral and Qwen2-MoE no output bias"
        return ExportPlan(custom, reason, CODE_FILES)
    if family in ("llama", "mistral") and every_layer:
        return ExportPlan(
            MIXTRAL.architecture,
            "every layer is MoE and Mixtral routes as moectl does (softmax, top-k, renormalized)",
        )
    reason = "Qwen2-MoE routes as moectl does (softmax, top-k, norm_topk_prob)"
    if family != "qwen2":
        reason += " and hosts the dense layers (mlp_only_layers) that Mixtral cannot"
    return ExportPlan(
        QWEN2_MOE.architecture,
        reason + "; its sigmoid-gated shared expert is written with zero weights (adds 0.0)",
    )


def _routing_blocker(moe: MoEConfig) -> str | None:
    """What of moectl's routing no native class reproduces, or None."""
    if moe.score != "softmax":
        return "sigmoid router scores"
    if SCHEMES[moe.balance].selects_with_bias:
        return f"a selection bias (balance: {moe.balance})"
    if moe.shared_experts:
        return "shared experts of weight 1 (Qwen2-MoE's shared expert is sigmoid-gated)"
    return None


def native_config(
    target: NativeMoE, base: dict[str, Any], moe: MoEConfig, moe_layers: list[int]
) -> Any:
    """The transformers config of `target` for a base config dict and moectl's MoE layout."""
    from transformers import AutoConfig

    carried = {k: v for k, v in base.items() if k not in NOT_CARRIED}
    fields = target.config({**carried, "model_type": base["model_type"]}, moe, moe_layers)
    fields = {k: v for k, v in fields.items() if k != "model_type"}
    return AutoConfig.for_model(target.model_type, **fields, architectures=[target.architecture])


def native_state_dict(
    state: dict[str, Tensor], target: NativeMoE, moe_layers: list[int], blocks_path: str
) -> dict[str, Tensor]:
    """moectl's state dict in `target`'s in-memory layout: experts (E, D, 2F) / (E, F, D) become
    (E, 2F, D) / (E, D, F) (transformers stores them output dim first), the gate keeps its name,
    and Qwen2-MoE gets its zeroed shared expert (block i's keys start `{blocks_path}.{i}.`)."""
    out = _transpose_experts(state, {GATE_UP: NATIVE_GATE_UP, DOWN: NATIVE_DOWN})
    if target.zero_shared_expert:
        for layer in moe_layers:
            prefix = f"{blocks_path}.{layer}.mlp."
            gate = out[prefix + "gate.weight"]
            width = gate.shape[1]
            zeros = {"gate_proj": (1, width), "up_proj": (1, width), "down_proj": (width, 1)}
            for name, shape in zeros.items():
                out[f"{prefix}shared_expert.{name}.weight"] = gate.new_zeros(shape)
            out[prefix + "shared_expert_gate.weight"] = gate.new_zeros(1, width)
    return out


def moectl_state_dict(state: dict[str, Tensor]) -> dict[str, Tensor]:
    """The inverse of native_state_dict: a native MoE model's state dict in moectl's layout
    (experts transposed back; Qwen2-MoE's zeroed shared expert dropped)."""
    for key, value in state.items():
        if ".mlp.shared_expert" in key and value.any():
            raise ModelError(
                f"{key} is not zero: this Qwen2-MoE's shared expert does work that moectl's "
                "layer has no place for",
                hint="load it with transformers; moectl reads back only its own exports",
            )
    kept = {key: value for key, value in state.items() if ".mlp.shared_expert" not in key}
    return _transpose_experts(kept, {NATIVE_GATE_UP: GATE_UP, NATIVE_DOWN: DOWN})


def _transpose_experts(state: dict[str, Tensor], renames: dict[str, str]) -> dict[str, Tensor]:
    """`state` with each stacked expert tensor whose key ends in a `renames` key renamed to its
    value and its last two dims swapped (moectl's (in, out) <-> transformers' (out, in))."""
    out: dict[str, Tensor] = {}
    for key, value in state.items():
        suffix = next((end for end in renames if key.endswith(end)), None)
        if suffix is None:
            out[key] = value
        else:
            out[key.removesuffix(suffix) + renames[suffix]] = value.transpose(1, 2).contiguous()
    return out


def logits_difference(model: torch.nn.Module, exported: torch.nn.Module, vocab: int) -> float:
    """Largest |logit| difference of two models on a fixed probe batch (2 x 16 token ids)."""
    generator = torch.Generator().manual_seed(0)
    ids = torch.randint(0, vocab, (2, 16), generator=generator)
    device = next(model.parameters()).device
    with torch.no_grad():
        ours = model(ids.to(device)).logits.float().cpu()
        theirs = exported(ids.to(next(exported.parameters()).device)).logits.float().cpu()
    return float((ours - theirs).abs().max())


@exporter("llama")
def llama_hf_model(
    model: Any, moe: MoEConfig | None, moe_layers: list[int]
) -> tuple[Any, ExportPlan]:
    """The transformers model to save for a Llama-family moectl model, and its plan.

    Dense: the model itself. A native class: built from its config and loaded with the mapped
    weights, then checked against moectl's own logits on a probe batch; should a base setting
    this module does not know make them differ, the export falls back to custom code and says
    so. Custom code: the family's class in hf_code/, whose state dict is moectl's own.
    """
    base = {**model.config.to_dict(), "architectures": [type(model).__name__]}
    plan = plan_export(base, moe, moe_layers)
    if moe is None or not moe_layers:
        return model, plan
    plan = replace(plan, base_config=base)
    dtype = next(model.parameters()).dtype
    if plan.native:
        from transformers import AutoModelForCausalLM

        target = NATIVE[plan.architecture]
        config = native_config(target, base, moe, moe_layers)
        exported = AutoModelForCausalLM.from_config(config, dtype=dtype).eval()
        blocks_path = family_of(model).blocks_path
        state = native_state_dict(model.state_dict(), target, moe_layers, blocks_path)
        exported.load_state_dict(state)
        difference = logits_difference(model, exported, base["vocab_size"])
        if difference <= SELF_CHECK_TOLERANCE:
            return exported, replace(plan, logits_difference=difference)
        plan = ExportPlan(
            custom_architecture(base["model_type"]),
            f"{plan.architecture} differed from moectl's logits by {difference:.2g} on a probe "
            "batch (a base-model setting it does not reproduce)",
            CODE_FILES,
            base_config=base,
        )
    from moectl.interop.hf_code import modeling_moectl_llama_moe as code

    cls = getattr(code, plan.architecture)
    carried = {k: v for k, v in base.items() if k not in NOT_CARRIED}
    config = cls.config_class(
        **carried,
        moe_layers=list(moe_layers),
        num_local_experts=moe.routed_experts,
        num_experts_per_tok=moe.routed_top_k,
        moe_intermediate_size=base["intermediate_size"] // moe.granularity,
        n_shared_experts=moe.shared_experts,
        scoring_func=moe.score,
        balance=moe.balance,
        router_aux_loss_coef=SCHEMES[moe.balance].aux_loss_coef(moe),
        architectures=[plan.architecture],
        auto_map={
            "AutoConfig": f"configuration_moectl_llama_moe.{cls.config_class.__name__}",
            "AutoModelForCausalLM": f"modeling_moectl_llama_moe.{plan.architecture}",
        },
    )
    exported = cls(config).to(dtype).eval()
    exported.load_state_dict(model.state_dict(), strict=True)
    return exported, plan
