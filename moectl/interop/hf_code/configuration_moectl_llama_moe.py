"""Configurations of Llama-family decoders whose MLPs in `moe_layers` are routed mixtures of
SwiGLU experts (moectl's own routing, where no transformers MoE class computes it exactly).

Exported by moectl next to the weights; this file depends on transformers only, so the model
loads with `AutoConfig.from_pretrained(dir, trust_remote_code=True)` where moectl is absent.
There is one class per base family (Llama, Mistral, Qwen2, Qwen3), each the family's own config
plus the MoE layout below; the field names follow transformers' own MoE models.

moe_layers: decoder layer indices whose MLP is a mixture of experts.
num_local_experts: routed experts per MoE layer. num_experts_per_tok: top-k routing.
moe_intermediate_size: SwiGLU width of a routed expert (fine-grained experts are narrower than
    the dense MLP's `intermediate_size`).
n_shared_experts: always-on experts beside the routed ones, each of width `intermediate_size`.
scoring_func: router scores, "softmax" over experts or "sigmoid" per expert (DeepSeek-V3).
balance: moectl's balancing scheme; "bias" adds a per-expert selection bias (a buffer).
output_router_logits: return each MoE layer's router logits (T, E) by default.
router_aux_loss_coef: weight of the load-balancing loss added to the LM loss when labels and
    router logits are both requested (0 for a scheme that adds no loss).
"""

from transformers import LlamaConfig, MistralConfig, Qwen2Config, Qwen3Config

MOE_DEFAULTS = {
    "moe_layers": None,
    "num_local_experts": 8,
    "num_experts_per_tok": 1,
    "moe_intermediate_size": None,
    "n_shared_experts": 0,
    "scoring_func": "softmax",
    "balance": "switch",
    "output_router_logits": False,
    "router_aux_loss_coef": 0.0,
}
MOE_TYPES = {
    "moe_layers": list[int] | None,
    "num_local_experts": int,
    "num_experts_per_tok": int,
    "moe_intermediate_size": int | None,
    "n_shared_experts": int,
    "scoring_func": str,
    "balance": str,
    "output_router_logits": bool,
    "router_aux_loss_coef": float,
}


def _moe_config(base: type, family: str) -> type:
    """`base` (a family's config class) plus the MoE fields, as model_type moectl_<family>_moe."""
    namespace = {
        "__module__": __name__,
        "__doc__": f"{base.__name__} plus moectl's MoE layout (see this module's docstring).",
        "__annotations__": dict(MOE_TYPES),
        "model_type": f"moectl_{family}_moe",
        **MOE_DEFAULTS,
    }
    name = base.__name__.replace("Config", "MoectlMoEConfig")
    return type(name, (base,), namespace)


LlamaMoectlMoEConfig = _moe_config(LlamaConfig, "llama")
MistralMoectlMoEConfig = _moe_config(MistralConfig, "mistral")
Qwen2MoectlMoEConfig = _moe_config(Qwen2Config, "qwen2")
Qwen3MoectlMoEConfig = _moe_config(Qwen3Config, "qwen3")
