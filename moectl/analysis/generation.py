"""Sampling from a model artifact, recording which expert each MoE layer chose per new token.

The loop runs one forward per new token over the (window-limited) context instead of using
`generate()`, because the router statistics of each forward are what `--show-experts` reports:
each new token's routing is read from the pass that feeds it back in (one final extra pass for
the last token).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from pydantic import BaseModel, Field

from moectl.errors import ModelError

if TYPE_CHECKING:
    import torch

    from moectl.model.io import LoadedModel


class GeneratedToken(BaseModel):
    """One sampled token and, for an MoE model, the first-choice expert of each MoE layer when
    the token is fed back in (as the token page shows routing: per input token)."""

    id: int
    text: str
    experts: dict[int, int] = Field(default_factory=dict)
    probs: dict[int, float] = Field(
        default_factory=dict, description="router probability of the chosen expert, per layer"
    )


class GenerationResult(BaseModel):
    prompt: str
    text: str = Field(description="the generated continuation only")
    tokens: list[GeneratedToken]
    moe_layers: list[int]
    stopped_at_eos: bool


def filter_logits(
    logits: torch.Tensor, temperature: float, top_k: int | None, top_p: float | None
) -> torch.Tensor:
    """Temperature-scaled logits with everything outside top-k / the top-p nucleus at -inf."""
    import torch

    logits = logits / temperature
    if top_k is not None and top_k < logits.shape[-1]:
        kth = torch.topk(logits, top_k).values[-1]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p is not None and top_p < 1.0:
        sorted_logits, order = torch.sort(logits, descending=True)
        cumulative = sorted_logits.softmax(-1).cumsum(-1)
        drop = cumulative - sorted_logits.softmax(-1) >= top_p  # keep the first token always
        logits = logits.clone()
        logits[order[drop]] = float("-inf")
    return logits


def generate(
    loaded: LoadedModel,
    prompt: str = "",
    *,
    max_new_tokens: int = 50,
    temperature: float = 0.0,
    top_k: int | None = None,
    top_p: float | None = None,
    seed: int = 0,
    stop_at_eos: bool = True,
) -> GenerationResult:
    """Greedy (temperature 0) or sampled continuation of `prompt` with the artifact's tokenizer."""
    import torch

    from moectl.model.routing import last_router_stats

    tokenizer = loaded.tokenizer
    if tokenizer is None:
        raise ModelError(
            "this model artifact has no tokenizer/ folder, so text cannot be encoded",
            hint="generate from a run's best/ model, which is saved with its tokenizer",
        )
    model = loaded.model.eval()
    device = next(model.parameters()).device
    eos_id = tokenizer.eos_token_id
    ids = tokenizer(prompt)["input_ids"] if prompt else []
    if not ids:
        if eos_id is None:
            raise ModelError(
                "an empty prompt needs a tokenizer with an EOS token", hint="pass a prompt"
            )
        ids = [eos_id]
    window = model.config.n_positions
    generator = torch.Generator(device="cpu").manual_seed(seed)
    tokens: list[GeneratedToken] = []
    stopped = False

    def forward() -> torch.Tensor:
        """Logits after the context; the context's last token (the newest generated one) gets
        the routing its own forward pass chose."""
        context = torch.tensor([ids[-window:]], dtype=torch.long, device=device)
        logits = model(input_ids=context).logits[0, -1].float().cpu()
        if tokens:
            last = context.shape[1] - 1
            for index, s in last_router_stats(model).items():
                tokens[-1].experts[index] = int(s.expert_index[last, 0])
                tokens[-1].probs[index] = float(s.probs[last, s.expert_index[last, 0]])
        return logits

    with torch.no_grad():
        for _ in range(max_new_tokens):
            logits = forward()
            if temperature <= 0:
                next_id = int(logits.argmax())
            else:
                probs = filter_logits(logits, temperature, top_k, top_p).softmax(-1)
                next_id = int(torch.multinomial(probs, 1, generator=generator))
            text = tokenizer.decode([next_id], clean_up_tokenization_spaces=False)
            tokens.append(GeneratedToken(id=next_id, text=text))
            ids.append(next_id)
            if stop_at_eos and next_id == eos_id:
                stopped = True
                break
        if tokens:
            forward()
    new_ids = [t.id for t in tokens if not (stopped and t.id == eos_id)]
    return GenerationResult(
        prompt=prompt,
        text=tokenizer.decode(new_ids, clean_up_tokenization_spaces=False),
        tokens=tokens,
        moe_layers=sorted(last_router_stats(model)),
        stopped_at_eos=stopped,
    )
