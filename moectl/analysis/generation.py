"""Text from a model with transformers' `generate()`, plus which expert each MoE layer chose.

`generate()` runs the model with its KV cache and all of transformers' decoding options; forward
hooks on the MoE layers record the routing of every forward it makes. Routing is reported per
input token, as the token page shows it: a generated token's experts are those of the forward
that feeds it back in (the prefill's last position belongs to the prompt). The last generated
token is never fed back by `generate()`, so one extra forward over the sequence supplies its
routing.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, Field

from moectl.errors import ModelError

if TYPE_CHECKING:
    import torch

    from moectl.model.artifact import LoadedModel

# Options that would make generate() return or track several sequences: the trace follows one.
_SINGLE_SEQUENCE = ("num_beams", "num_return_sequences", "num_beam_groups")


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
    prompt_tokens_dropped: int = Field(
        0, description="leading prompt tokens cut so prompt + new tokens fit the model's window"
    )
    prompt_seen: str = Field(
        "", description="the prompt text the model continued: its last tokens when some were cut"
    )
    warnings: list[str] = Field(default_factory=list)


DEFAULT_NEW_TOKENS = 50


def greedy_config(eos_id: int | None, max_new_tokens: int = DEFAULT_NEW_TOKENS) -> Any:
    """The GenerationConfig `generate` uses by default (greedy, stopping and padding at EOS),
    which an export writes as its generation_config.json so that transformers' generate()
    and pipeline() give `moectl generate`'s text; BOS is EOS, as GPT-2's tokenizer has it."""
    config = _generation_config(max_new_tokens, 0.0, None, None, eos_id, eos_id, None)
    config.bos_token_id = eos_id
    return config


def generate(
    loaded: LoadedModel,
    prompt: str = "",
    *,
    max_new_tokens: int = DEFAULT_NEW_TOKENS,
    temperature: float = 0.0,
    top_k: int | None = None,
    top_p: float | None = None,
    seed: int = 0,
    stop_at_eos: bool = True,
    options: dict[str, Any] | None = None,
) -> GenerationResult:
    """Greedy (temperature 0) or sampled continuation of `prompt` with the artifact's tokenizer.

    `options` are further `GenerationConfig` fields (e.g. repetition_penalty, min_p); sampling
    is seeded by `seed` without touching the global RNG.
    """
    import torch

    from moectl.model.routing import moe_layers

    tokenizer = _tokenizer(loaded)
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
    from moectl.model.arch import model_sizes

    window = model_sizes(model).positions
    if max_new_tokens >= window:
        raise ModelError(
            f"the model sees at most {window} positions, so it cannot add {max_new_tokens} tokens",
            hint=f"ask for fewer new tokens (--max-new-tokens {window // 2})",
        )
    dropped = max(0, len(ids) + max_new_tokens - window)
    warnings = []
    if dropped:
        warnings.append(
            f"the prompt is {len(ids)} tokens and the model sees {window} positions, so with "
            f"{max_new_tokens} new tokens it continues the prompt's last {len(ids) - dropped} "
            f"tokens (the first {dropped} are dropped)"
        )
    ids = ids[dropped:]
    config = _generation_config(
        max_new_tokens, temperature, top_k, top_p, eos_id if stop_at_eos else None, eos_id, options
    )
    layers = moe_layers(model)
    trace: list[dict[int, tuple[int, float]]] = []
    hooks = [
        layer.register_forward_hook(lambda module, args, out: _record(trace, module))
        for layer in layers.values()
    ]
    try:
        with torch.no_grad(), torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            inputs = torch.tensor([ids], dtype=torch.long, device=device)
            mask = torch.ones_like(inputs)
            output = model.generate(inputs, attention_mask=mask, generation_config=config)
    except (ValueError, TypeError) as exc:
        if not options:
            raise
        given = " ".join(f"{key}={value}" for key, value in options.items())
        raise ModelError(
            f"transformers refused the generation option(s) {given}: {exc}",
            hint="give each option a value of its GenerationConfig type, e.g. "
            "repetition_penalty=1.3",
        ) from None
    finally:
        for hook in hooks:
            hook.remove()
    new_ids = output[0, len(ids) :].tolist()
    per_token = _routing_per_token(trace, len(layers))
    if layers and len(per_token) < len(new_ids):
        per_token.append(_last_token_routing(model, output[0]))
    tokens = []
    for index, token in enumerate(new_ids):
        routing = per_token[index] if index < len(per_token) else {}
        tokens.append(
            GeneratedToken(
                id=token,
                text=_decode(tokenizer, [token]),
                experts={layer: choice[0] for layer, choice in routing.items()},
                probs={layer: choice[1] for layer, choice in routing.items()},
            )
        )
    stopped = stop_at_eos and bool(new_ids) and new_ids[-1] == eos_id
    text_ids = new_ids[:-1] if stopped else new_ids
    return GenerationResult(
        prompt=prompt,
        text=_decode(tokenizer, text_ids),
        tokens=tokens,
        moe_layers=list(layers),
        stopped_at_eos=stopped,
        prompt_tokens_dropped=dropped,
        prompt_seen=_decode(tokenizer, ids) if dropped else prompt,
        warnings=warnings,
    )


def _decode(tokenizer: Any, ids: list[int]) -> str:
    return tokenizer.decode(ids, clean_up_tokenization_spaces=False)


def _tokenizer(loaded: LoadedModel) -> Any:
    if loaded.tokenizer is None:
        raise ModelError(
            "this model has no tokenizer, so text cannot be encoded",
            hint="generate from a run's best/ model, which is saved with its tokenizer, or "
            "export the model with --tokenizer",
        )
    return loaded.tokenizer


def _generation_config(
    max_new_tokens: int,
    temperature: float,
    top_k: int | None,
    top_p: float | None,
    eos_id: int | None,
    pad_id: int | None,
    options: dict[str, Any] | None,
) -> Any:
    """The GenerationConfig: greedy unless temperature > 0, plus validated extra options."""
    from transformers import GenerationConfig

    options = typed_generation_options(options or {})
    several = [key for key in _SINGLE_SEQUENCE if options.get(key) not in (None, 1)]
    if several:
        raise ModelError(
            f"{', '.join(several)} other than 1 would decode several sequences",
            hint="the expert trace follows one sequence; leave these at 1",
        )
    sampling: dict[str, Any] = {}
    if temperature > 0:
        sampling = {"do_sample": True, "temperature": temperature, "top_k": top_k or 0}
        if top_p is not None:
            sampling["top_p"] = top_p
    return GenerationConfig(
        max_new_tokens=max_new_tokens,
        eos_token_id=eos_id,
        pad_token_id=pad_id,
        **{"do_sample": False, **sampling, **options},
    )


def typed_generation_options(options: dict[str, Any]) -> dict[str, Any]:
    """`options` with a float field's integer as a float (transformers refuses
    repetition_penalty=2); a ModelError for an option GenerationConfig lacks, or a value of the
    wrong type for one of its int, float or bool fields (e.g. num_beams=abc)."""
    from transformers import GenerationConfig

    unknown = [key for key in options if not hasattr(GenerationConfig(), key)]
    if unknown:
        raise ModelError(
            f"unknown generation option(s) {', '.join(unknown)}",
            hint="use GenerationConfig field names, e.g. repetition_penalty=1.2 or min_p=0.05",
        )
    declared = _declared_types(GenerationConfig.__doc__ or "")
    typed = dict(options)
    for key, value in options.items():
        kind = declared.get(key)
        if kind is None or value is None:
            continue
        if not _is_of(value, kind):
            words, placeholder = _TYPE_WORDS[kind]
            raise ModelError(
                f"generation option {key} takes {words} ({kind}), not {value!r}",
                hint=f"write --gen {key}={placeholder}",
            )
        if kind == "float":
            typed[key] = float(value)
    return typed


# How a type is named to users: in words, and as the CLI's placeholder.
_TYPE_WORDS = {
    "int": ("an integer", "INTEGER"),
    "float": ("a number", "NUMBER"),
    "bool": ("true or false", "true|false"),
}


def _declared_types(doc: str) -> dict[str, str]:
    """The numeric and on/off fields' types as GenerationConfig's docstring declares them
    (`num_beams (`int`, ...)`): its __init__ takes **kwargs and has no annotations. (Text
    fields are left to transformers: stop_strings, documented as `str`, also takes a list.)
    The options that would decode several sequences are integers, documented or not."""
    declared = dict(re.findall(r"^\s+(\w+) \(`(int|float|bool)`", doc, re.MULTILINE))
    return {**{key: "int" for key in _SINGLE_SEQUENCE}, **declared}


def _is_of(value: Any, kind: str) -> bool:
    """YAML's parse of a --gen value fits the declared type; an integer is a number, a bool is
    neither."""
    if isinstance(value, bool):
        return kind == "bool"
    return isinstance(value, {"int": int, "float": (int, float)}.get(kind, ()))


def _record(trace: list[dict[int, tuple[int, float]]], module: Any) -> None:
    """Append the first-choice expert and its router prob at the forward's last position."""
    stats = module.last_stats
    if not trace or module.layer_index in trace[-1]:
        trace.append({})
    expert = int(stats.expert_index[-1, 0])
    trace[-1][module.layer_index] = (expert, float(stats.probs[-1, expert]))


def _routing_per_token(
    trace: list[dict[int, tuple[int, float]]], n_layers: int
) -> list[dict[int, tuple[int, float]]]:
    """Routing per generated token: forwards after the prefill, each feeding one token back."""
    complete = [step for step in trace if len(step) == n_layers]
    return complete[1:]


def _last_token_routing(model: Any, sequence: torch.Tensor) -> dict[int, tuple[int, float]]:
    """Routing of the sequence's last token from one cache-free forward over the sequence."""
    import torch

    from moectl.model.routing import last_router_stats

    with torch.no_grad():
        model(input_ids=sequence[None, :])
    routing = {}
    for layer, stats in last_router_stats(model).items():
        expert = int(stats.expert_index[-1, 0])
        routing[layer] = (expert, float(stats.probs[-1, expert]))
    return routing
