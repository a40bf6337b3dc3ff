"""A GPT-2 whose MLPs in `config.moe_layers` are routed mixtures of experts (exported by moectl).

Self-contained: torch and transformers only, loaded with
`AutoModelForCausalLM.from_pretrained(dir, trust_remote_code=True)`. Everything except the MoE
MLPs is transformers' own GPT-2, so attention, the KV cache and `generate()` behave exactly as
for a dense GPT-2.

Routing is moectl's (its DESIGN.md section 2), evaluated without noise: a linear gate without
bias gives float32 logits, scores (softmax, or sigmoid per expert as DeepSeek-V3), top-k over
the scores plus the selection bias of balance "bias" (DeepSeek-V3's aux-loss-free balancing;
the bias only picks, it never weighs); top-1 weighs its expert by exactly 1.0, top-k > 1
renormalizes the chosen scores to sum to 1. Shared experts (n_shared_experts) process every
token with weight 1. Expert weights are stacked along a leading expert dimension in GPT-2's
Conv1D orientation (input dim first): `fc_weight` (E, D, H), `fc_bias` (E, H), `proj_weight`
(E, H, D), `proj_bias` (E, D).
"""

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from transformers import GPT2LMHeadModel
from transformers import initialization as init
from transformers.activations import ACT2FN
from transformers.modeling_outputs import CausalLMOutputWithCrossAttentions

from .configuration_moectl_gpt2_moe import MoectlGPT2MoEConfig


@dataclass
class MoectlCausalLMOutput(CausalLMOutputWithCrossAttentions):
    """GPT-2's causal-LM output plus, when asked for, the router logits of every MoE layer
    (a tuple in layer order, each (batch * seq, n_experts) float32) and their mean Switch
    load-balancing loss."""

    aux_loss: torch.Tensor | None = None
    router_logits: tuple[torch.Tensor, ...] | None = None


def router_scores(logits: torch.Tensor, scoring_func: str) -> torch.Tensor:
    """Softmax over experts, or one sigmoid per expert (DeepSeek-V3)."""
    return logits.softmax(dim=-1) if scoring_func == "softmax" else logits.sigmoid()


class MoectlRouter(nn.Module):
    """Linear gate without bias; returns (logits, expert index (T, k), weights (T, k))."""

    def __init__(self, config: MoectlGPT2MoEConfig) -> None:
        super().__init__()
        self.top_k = config.num_experts_per_tok
        self.scoring_func = config.scoring_func
        self.weight = nn.Parameter(torch.empty(config.num_local_experts, config.n_embd))

    def forward(
        self, x: torch.Tensor, selection_bias: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        logits = F.linear(x.float(), self.weight.float())
        scores = router_scores(logits, self.scoring_func)
        choice = scores if selection_bias is None else scores + selection_bias
        index = choice.topk(self.top_k, dim=-1).indices
        top_scores = scores.gather(1, index)
        if self.top_k == 1:
            weights = torch.ones_like(top_scores)
        else:
            weights = top_scores / top_scores.sum(dim=-1, keepdim=True)
        return logits, index, weights


class MoectlSelectionBias(nn.Module):
    """Balance "bias": the per-expert bias added to the scores for the top-k choice only."""

    def __init__(self, config: MoectlGPT2MoEConfig) -> None:
        super().__init__()
        self.register_buffer("bias", torch.zeros(config.num_local_experts))


class MoectlExperts(nn.Module):
    """E GPT-2 MLPs (fc -> activation -> proj) as stacked parameters."""

    def __init__(self, config: MoectlGPT2MoEConfig, experts: int, inner: int) -> None:
        super().__init__()
        width = config.n_embd
        self.num_experts = experts
        self.fc_weight = nn.Parameter(torch.empty(experts, width, inner))
        self.fc_bias = nn.Parameter(torch.empty(experts, inner))
        self.proj_weight = nn.Parameter(torch.empty(experts, inner, width))
        self.proj_bias = nn.Parameter(torch.empty(experts, width))
        self.act = ACT2FN[config.activation_function]

    def forward(self, x: torch.Tensor, index: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        """sum_k weights[t, k] * expert[index[t, k]](x[t]) for every token t of x (T, D)."""
        out = torch.zeros_like(x)
        for expert in index.unique().tolist():
            token, slot = torch.where(index == expert)
            h = torch.addmm(self.fc_bias[expert], x[token], self.fc_weight[expert])
            y = torch.addmm(self.proj_bias[expert], self.act(h), self.proj_weight[expert])
            out.index_add_(0, token, y * weights[token, slot, None].to(y.dtype))
        return out


class MoectlSparseMoeBlock(nn.Module):
    """Drops in for GPT2MLP; keeps its last router logits for `output_router_logits`."""

    def __init__(self, config: MoectlGPT2MoEConfig) -> None:
        super().__init__()
        inner = config.n_inner if config.n_inner is not None else 4 * config.n_embd
        routed_inner = config.moe_intermediate_size or inner
        self.gate = MoectlRouter(config)
        self.experts = MoectlExperts(config, config.num_local_experts, routed_inner)
        shared = config.n_shared_experts
        self.shared = MoectlExperts(config, shared, inner) if shared else None
        self.balance = MoectlSelectionBias(config) if config.balance == "bias" else None
        self.dropout = nn.Dropout(config.resid_pdrop)
        self.router_logits: torch.Tensor | None = None

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        shape = hidden_states.shape
        x = hidden_states.reshape(-1, shape[-1])
        bias = self.balance.bias if self.balance is not None else None
        logits, index, weights = self.gate(x, bias)
        self.router_logits = logits
        out = self.experts(x, index, weights)
        if self.shared is not None:
            every = torch.arange(self.shared.num_experts, device=x.device).expand(x.shape[0], -1)
            out = out + self.shared(x, every, torch.ones(every.shape, device=x.device))
        return self.dropout(out.reshape(shape))


def load_balancing_loss(logits: torch.Tensor, top_k: int, scoring_func: str) -> torch.Tensor:
    """Switch LB loss n_experts * sum_i f_i * P_i of one layer (1.0 at perfect balance)."""
    probs = router_scores(logits, scoring_func)
    if scoring_func != "softmax":
        probs = probs / probs.sum(dim=-1, keepdim=True)
    index = probs.topk(top_k, dim=-1).indices
    n_experts = logits.shape[-1]
    fractions = torch.bincount(index.reshape(-1), minlength=n_experts).to(probs) / index.numel()
    return n_experts * (fractions * probs.mean(dim=0)).sum()


class MoectlGPT2MoEForCausalLM(GPT2LMHeadModel):
    """transformers' GPT2LMHeadModel with the MLPs of `config.moe_layers` made routed experts."""

    config_class = MoectlGPT2MoEConfig

    def __init__(self, config: MoectlGPT2MoEConfig) -> None:
        super().__init__(config)
        for layer in config.moe_layers or []:
            self.transformer.h[layer].mlp = MoectlSparseMoeBlock(config)
        self.post_init()

    def _init_weights(self, module: nn.Module) -> None:
        super()._init_weights(module)
        std = self.config.initializer_range
        if isinstance(module, MoectlRouter):
            init.normal_(module.weight, mean=0.0, std=std)
        elif isinstance(module, MoectlExperts):
            init.normal_(module.fc_weight, mean=0.0, std=std)
            init.normal_(module.proj_weight, mean=0.0, std=std)
            init.zeros_(module.fc_bias)
            init.zeros_(module.proj_bias)

    def moe_blocks(self) -> list[MoectlSparseMoeBlock]:
        """The MoE MLPs in layer order."""
        return [self.transformer.h[layer].mlp for layer in self.config.moe_layers or []]

    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        labels: torch.LongTensor | None = None,
        logits_to_keep: int | torch.Tensor = 0,
        output_router_logits: bool | None = None,
        **kwargs,
    ):
        """GPT2LMHeadModel.forward (pass the other arguments, e.g. the cache, by keyword), plus
        `router_logits` and `aux_loss` when `output_router_logits` (or the config) asks.

        The parameters generate() looks for (attention_mask, position_ids, logits_to_keep) are
        named here so that padded batches and the cache work as for GPT-2.
        """
        if output_router_logits is None:
            output_router_logits = self.config.output_router_logits
        for block in self.moe_blocks():
            block.router_logits = None
        outputs = super().forward(
            input_ids=input_ids,
            attention_mask=attention_mask,
            position_ids=position_ids,
            labels=labels,
            logits_to_keep=logits_to_keep,
            **kwargs,
        )
        if not output_router_logits:
            return outputs
        router_logits = tuple(block.router_logits for block in self.moe_blocks())
        top_k = self.config.num_experts_per_tok
        scoring = self.config.scoring_func
        aux_loss = torch.stack([load_balancing_loss(r, top_k, scoring) for r in router_logits])
        aux_loss = aux_loss.mean()
        if isinstance(outputs, tuple):  # return_dict=False
            return (*outputs, aux_loss, router_logits)
        loss = outputs.loss
        if loss is not None and self.config.router_aux_loss_coef:
            loss = loss + self.config.router_aux_loss_coef * aux_loss.to(loss.device)
        return MoectlCausalLMOutput(
            **{**outputs, "loss": loss}, aux_loss=aux_loss, router_logits=router_logits
        )
