"""Configuration of a GPT-2 whose MLPs in `moe_layers` are routed mixtures of experts.

Exported by moectl next to the weights; this file depends on transformers only, so the model
loads with `AutoConfig.from_pretrained(dir, trust_remote_code=True)` where moectl is absent.
The field names follow transformers' own MoE models (Mixtral, OLMoE).
"""

from transformers import GPT2Config


class MoectlGPT2MoEConfig(GPT2Config):
    """GPT2Config plus the MoE layout.

    moe_layers: transformer layer indices whose MLP is a mixture of experts.
    num_local_experts: experts per MoE layer. num_experts_per_tok: top-k routing.
    output_router_logits: return each MoE layer's router logits (T, E) by default.
    router_aux_loss_coef: weight of the load-balancing loss added to the LM loss when labels
        and router logits are both requested (moectl exports its run's lb_coef, 0 for a
        scheme that adds no loss).
    scoring_func: router scores, "softmax" over experts or "sigmoid" per expert (DeepSeek-V3).
    balance: moectl's balancing scheme; "bias" adds a per-expert selection bias (a buffer).
    n_shared_experts: always-on experts beside the routed ones, each of the full MLP width.
    moe_intermediate_size: hidden width of a routed expert (None: the full MLP width;
        fine-grained experts are narrower).
    """

    model_type = "moectl_gpt2_moe"

    moe_layers: list[int] | None = None
    num_local_experts: int = 8
    num_experts_per_tok: int = 1
    output_router_logits: bool = False
    router_aux_loss_coef: float = 0.0
    scoring_func: str = "softmax"
    balance: str = "switch"
    n_shared_experts: int = 0
    moe_intermediate_size: int | None = None
