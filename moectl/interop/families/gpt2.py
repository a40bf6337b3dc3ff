"""GPT-2's export (`@exporter("gpt2")`): a dense GPT-2 is itself; an MoE GPT-2 becomes the
custom-code class in hf_code/ (no transformers MoE class is built on GPT-2), loaded with the
same state dict: the exported layout is moectl's own.
"""

from __future__ import annotations

from typing import Any

from moectl.config import MoEConfig
from moectl.interop.exporters import exporter
from moectl.interop.plan import DENSE_REASON, ExportPlan
from moectl.model.arch import family_of
from moectl.model.balance import SCHEMES

MOE_MODEL_TYPE = "moectl_gpt2_moe"
MOE_CLASS = "MoectlGPT2MoEForCausalLM"
CODE_FILES = ("configuration_moectl_gpt2_moe.py", "modeling_moectl_gpt2_moe.py")
AUTO_MAP = {
    "AutoConfig": "configuration_moectl_gpt2_moe.MoectlGPT2MoEConfig",
    "AutoModelForCausalLM": f"modeling_moectl_gpt2_moe.{MOE_CLASS}",
}


@exporter("gpt2")
def gpt2_hf_model(
    model: Any, moe: MoEConfig | None, moe_layers: list[int]
) -> tuple[Any, ExportPlan]:
    """GPT-2 itself, or the custom-code MoE GPT-2 with the same state dict (a routed expert is
    the dense MLP's width over the granularity)."""
    from moectl.interop.hf_code.configuration_moectl_gpt2_moe import MoectlGPT2MoEConfig
    from moectl.interop.hf_code.modeling_moectl_gpt2_moe import MoectlGPT2MoEForCausalLM

    if moe is None:
        return model, ExportPlan(type(model).__name__, DENSE_REASON)
    inner = family_of(model).sizes(model.config).intermediate
    config = MoectlGPT2MoEConfig.from_dict(
        {
            **model.config.to_dict(),
            "moe_layers": moe_layers,
            "num_local_experts": moe.routed_experts,
            "num_experts_per_tok": moe.routed_top_k,
            "router_aux_loss_coef": SCHEMES[moe.balance].aux_loss_coef(moe),
            "scoring_func": moe.score,
            "balance": moe.balance,
            "n_shared_experts": moe.shared_experts,
            "moe_intermediate_size": inner // moe.granularity,
            "auto_map": dict(AUTO_MAP),
            "architectures": [MOE_CLASS],
        }
    )
    exported = MoectlGPT2MoEForCausalLM(config)
    exported.load_state_dict(model.state_dict(), strict=True)
    reason = "no transformers MoE class is built on GPT-2"
    return exported.eval(), ExportPlan(MOE_CLASS, reason, CODE_FILES)
