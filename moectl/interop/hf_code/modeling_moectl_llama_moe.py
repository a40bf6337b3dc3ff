"""Llama-family decoders (Llama, Mistral, Qwen2, Qwen3) whose MLPs in `config.moe_layers` are
routed mixtures of SwiGLU experts, exported by moectl where no transformers MoE class computes
its routing exactly (sigmoid scores, the "bias" balance's selection bias, shared experts with
weight 1, or a layout the native classes cannot express).

Self-contained: torch and transformers only, loaded with
`AutoModelForCausalLM.from_pretrained(dir, trust_remote_code=True)`. Each class is the family's
own transformers CausalLM with the MLPs of the MoE layers swapped, so attention, norms, rotary,
the KV cache and `generate()` behave exactly as for the dense base model, and the state dict
keys are the base model's plus the MoE layers'.

Routing is moectl's (its DESIGN.md section 2), evaluated without noise: a linear gate without
bias gives float32 logits; scores are a softmax over experts or one sigmoid per expert
(DeepSeek-V3); top-k over the scores plus the selection bias of balance "bias" (the bias only
picks, it never weighs); top-1 weighs its expert by exactly 1.0, top-k > 1 renormalizes the
chosen scores to sum to 1. Shared experts process every token with weight 1. Expert weights are
stacked along a leading expert dimension, input dim first: `gate_up` (E, D, 2F) holds the gate
projection in its first F columns and the up projection in the last F, `down` (E, F, D).
"""

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from transformers import LlamaForCausalLM, MistralForCausalLM, Qwen2ForCausalLM, Qwen3ForCausalLM
from transformers import initialization as init
from transformers.activations import ACT2FN
from transformers.modeling_outputs import CausalLMOutputWithPast

from .configuration_moectl_llama_moe import (
    LlamaMoectlMoEConfig,
    MistralMoectlMoEConfig,
    Qwen2MoectlMoEConfig,
    Qwen3MoectlMoEConfig,
)


@dataclass
class MoectlMoECausalLMOutput(CausalLMOutputWithPast):
    """The base model's causal-LM output plus, when asked for, the router logits of every MoE
    layer (a tuple in layer order, each (batch * seq, n_experts) float32) and their mean Switch
    load-balancing loss."""

    aux_loss: torch.Tensor | None = None
    router_logits: tuple[torch.Tensor, ...] | None = None


def router_scores(logits: torch.Tensor, scoring_func: str) -> torch.Tensor:
    """Softmax over experts, or one sigmoid per expert (DeepSeek-V3)."""
    return logits.softmax(dim=-1) if scoring_func == "softmax" else logits.sigmoid()


class MoectlRouter(nn.Module):
    """Linear gate without bias; returns (logits, expert index (T, k), weights (T, k))."""

    def __init__(self, config) -> None:
        super().__init__()
        self.top_k = config.num_experts_per_tok
        self.scoring_func = config.scoring_func
        self.weight = nn.Parameter(torch.empty(config.num_local_experts, config.hidden_size))

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

    def __init__(self, config) -> None:
        super().__init__()
        self.register_buffer("bias", torch.zeros(config.num_local_experts))


class MoectlSwiGLUExperts(nn.Module):
    """E SwiGLU MLPs (down(act(gate x) * up x), no biases) as stacked parameters."""

    def __init__(self, config, experts: int, inner: int) -> None:
        super().__init__()
        self.num_experts = experts
        self.gate_up = nn.Parameter(torch.empty(experts, config.hidden_size, 2 * inner))
        self.down = nn.Parameter(torch.empty(experts, inner, config.hidden_size))
        self.act = ACT2FN[config.hidden_act]

    def forward(self, x: torch.Tensor, index: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        """sum_k weights[t, k] * expert[index[t, k]](x[t]) for every token t of x (T, D)."""
        out = torch.zeros_like(x)
        for expert in index.unique().tolist():
            token, slot = torch.where(index == expert)
            gate, up = (x[token] @ self.gate_up[expert]).chunk(2, dim=-1)
            y = (self.act(gate) * up) @ self.down[expert]
            out.index_add_(0, token, y * weights[token, slot, None].to(y.dtype))
        return out


class MoectlSparseMoeBlock(nn.Module):
    """Drops in for the family's MLP; keeps its last router logits for `output_router_logits`."""

    def __init__(self, config) -> None:
        super().__init__()
        routed_inner = config.moe_intermediate_size or config.intermediate_size
        self.gate = MoectlRouter(config)
        self.experts = MoectlSwiGLUExperts(config, config.num_local_experts, routed_inner)
        shared, inner = config.n_shared_experts, config.intermediate_size
        self.shared = MoectlSwiGLUExperts(config, shared, inner) if shared else None
        self.balance = MoectlSelectionBias(config) if config.balance == "bias" else None
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
        return out.reshape(shape)


def load_balancing_loss(logits: torch.Tensor, top_k: int, scoring_func: str) -> torch.Tensor:
    """Switch LB loss n_experts * sum_i f_i * P_i of one layer (1.0 at perfect balance)."""
    probs = router_scores(logits, scoring_func)
    if scoring_func != "softmax":
        probs = probs / probs.sum(dim=-1, keepdim=True)
    index = probs.topk(top_k, dim=-1).indices
    n_experts = logits.shape[-1]
    fractions = torch.bincount(index.reshape(-1), minlength=n_experts).to(probs) / index.numel()
    return n_experts * (fractions * probs.mean(dim=0)).sum()


class MoectlMoEMixin:
    """What every family's class adds to its transformers CausalLM: the MoE MLPs, their init,
    and `router_logits` / `aux_loss` in the output."""

    def _swap_moe_mlps(self) -> None:
        for layer in self.config.moe_layers or []:
            self.model.layers[layer].mlp = MoectlSparseMoeBlock(self.config)

    def _init_weights(self, module: nn.Module) -> None:
        super()._init_weights(module)
        std = self.config.initializer_range
        if isinstance(module, MoectlRouter):
            init.normal_(module.weight, mean=0.0, std=std)
        elif isinstance(module, MoectlSwiGLUExperts):
            init.normal_(module.gate_up, mean=0.0, std=std)
            init.normal_(module.down, mean=0.0, std=std)
        elif isinstance(module, MoectlSelectionBias):
            init.zeros_(module.bias)

    def moe_blocks(self) -> list[MoectlSparseMoeBlock]:
        """The MoE MLPs in layer order."""
        return [self.model.layers[layer].mlp for layer in self.config.moe_layers or []]

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
        """The base CausalLM's forward (pass the other arguments, e.g. the cache, by keyword),
        plus `router_logits` and `aux_loss` when `output_router_logits` (or the config) asks."""
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
        return MoectlMoECausalLMOutput(
            **{**outputs, "loss": loss}, aux_loss=aux_loss, router_logits=router_logits
        )


class LlamaMoectlMoEForCausalLM(MoectlMoEMixin, LlamaForCausalLM):
    """transformers' LlamaForCausalLM with the MLPs of `config.moe_layers` made routed experts."""

    config_class = LlamaMoectlMoEConfig

    def __init__(self, config: LlamaMoectlMoEConfig) -> None:
        super().__init__(config)
        self._swap_moe_mlps()
        self.post_init()


class MistralMoectlMoEForCausalLM(MoectlMoEMixin, MistralForCausalLM):
    """transformers' MistralForCausalLM with the MLPs of `config.moe_layers` made routed experts."""

    config_class = MistralMoectlMoEConfig

    def __init__(self, config: MistralMoectlMoEConfig) -> None:
        super().__init__(config)
        self._swap_moe_mlps()
        self.post_init()


class Qwen2MoectlMoEForCausalLM(MoectlMoEMixin, Qwen2ForCausalLM):
    """transformers' Qwen2ForCausalLM with the MLPs of `config.moe_layers` made routed experts."""

    config_class = Qwen2MoectlMoEConfig

    def __init__(self, config: Qwen2MoectlMoEConfig) -> None:
        super().__init__(config)
        self._swap_moe_mlps()
        self.post_init()


class Qwen3MoectlMoEForCausalLM(MoectlMoEMixin, Qwen3ForCausalLM):
    """transformers' Qwen3ForCausalLM with the MLPs of `config.moe_layers` made routed experts."""

    config_class = Qwen3MoectlMoEConfig

    def __init__(self, config: Qwen3MoectlMoEConfig) -> None:
        super().__init__(config)
        self._swap_moe_mlps()
        self.post_init()
