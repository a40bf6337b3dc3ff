"""`moectl generate` and the generation core on the tiny study's untrained models."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from moectl.analysis.generation import generate
from moectl.errors import ModelError
from moectl.interop.loading import load_model
from moectl.model.routing import last_router_stats


def test_greedy_is_deterministic_and_records_experts(tiny_study) -> None:
    loaded = load_model(tiny_study["moe"] / "best")
    first = generate(loaded, "def f(x):", max_new_tokens=6, stop_at_eos=False)
    again = generate(loaded, "def f(x):", max_new_tokens=6, stop_at_eos=False)
    assert [t.id for t in first.tokens] == [t.id for t in again.tokens]
    assert len(first.tokens) == 6 and first.moe_layers == [0, 1]
    for token in first.tokens:
        assert set(token.experts) == {0, 1}
        assert all(0 <= e < 4 for e in token.experts.values())
    # Greedy picks the argmax of a direct forward over the prompt.
    ids = loaded.tokenizer("def f(x):")["input_ids"]
    with torch.no_grad():
        logits = loaded.model(input_ids=torch.tensor([ids])).logits[0, -1]
    assert first.tokens[0].id == int(logits.argmax())
    decoded = loaded.tokenizer.decode([t.id for t in first.tokens])
    assert first.text == decoded


def test_the_cached_trace_equals_a_full_forwards_routing(tiny_study) -> None:
    """Each generated token's experts (hooks during cached decoding) are those a cache-free
    forward over the whole sequence assigns to that position."""
    loaded = load_model(tiny_study["moe"] / "best")
    result = generate(loaded, "x = 1", max_new_tokens=5, stop_at_eos=False)
    ids = loaded.tokenizer("x = 1")["input_ids"] + [t.id for t in result.tokens]
    with torch.no_grad():
        loaded.model(input_ids=torch.tensor([ids]))
    stats = last_router_stats(loaded.model)
    start = len(ids) - len(result.tokens)
    for offset, token in enumerate(result.tokens):
        position = start + offset
        for layer, expert in token.experts.items():
            assert expert == int(stats[layer].expert_index[position, 0])
            want = float(stats[layer].probs[position, expert])
            assert abs(token.probs[layer] - want) < 1e-5


def test_sampling_is_seeded_and_options_are_checked(tiny_study) -> None:
    loaded = load_model(tiny_study["moe"] / "best")

    def sample(seed: int, **kwargs) -> list[int]:
        result = generate(loaded, "def", max_new_tokens=8, temperature=1.0, seed=seed,
                          stop_at_eos=False, **kwargs)  # fmt: skip
        return [t.id for t in result.tokens]

    state = torch.random.get_rng_state()
    assert sample(3) == sample(3)
    assert torch.equal(torch.random.get_rng_state(), state)  # the global RNG is untouched
    greedy = [t.id for t in generate(loaded, "def", max_new_tokens=8, stop_at_eos=False).tokens]
    assert sample(3, top_k=1) == greedy
    # Any GenerationConfig field reaches generate(): suppressing greedy's first pick.
    options = {"suppress_tokens": [greedy[0]]}
    other = generate(loaded, "def", max_new_tokens=8, stop_at_eos=False, options=options)
    assert other.tokens[0].id != greedy[0]
    with pytest.raises(ModelError, match="unknown generation option"):
        sample(0, options={"not_an_option": 1})
    with pytest.raises(ModelError, match="num_beams"):
        sample(0, options={"num_beams": 2})
    window = loaded.model.config.n_positions
    with pytest.raises(ModelError, match=f"at most {window} positions"):
        generate(loaded, "def", max_new_tokens=window)
    long_prompt = generate(loaded, "def f(x): " * window, max_new_tokens=4)
    assert long_prompt.prompt_tokens_dropped > 0 and len(long_prompt.tokens) >= 1


def test_cli_generate(cli, tiny_study, tmp_path: Path) -> None:
    shown = cli(
        "generate", tiny_study["moe"], "--prompt", "def f(x):", "--max-new-tokens", "5",
        "--temperature", "0.8", "--top-p", "0.9", "--seed", "3", "--show-experts",
    )  # fmt: skip
    assert shown.exit_code == 0, shown.output
    assert "def f(x):" in shown.output and "layer 0" in shown.output and "layer 1" in shown.output
    repeat = cli(
        "generate", tiny_study["moe"], "--prompt", "def f(x):", "--max-new-tokens", "5",
        "--temperature", "0.8", "--top-p", "0.9", "--seed", "3", "--show-experts",
    )  # fmt: skip
    assert repeat.output == shown.output
    dense = cli("generate", tiny_study["dense"], "--max-new-tokens", "3", "--show-experts")
    assert dense.exit_code == 0 and "dense model" in dense.output
    missing = cli("generate", tmp_path / "missing")
    assert missing.exit_code == 2 and "does not exist" in " ".join(missing.output.split())


def test_cli_generate_says_which_part_of_a_long_prompt_it_continues(cli, tiny_study) -> None:
    from moectl.interop.loading import load_model

    loaded = load_model(tiny_study["moe"] / "best")
    window = loaded.model.config.n_positions
    prompt = "".join(f"line {i} says {i * 7}. " for i in range(window))
    ids = loaded.tokenizer(prompt)["input_ids"]
    kept = window - 4
    shown = cli("generate", tiny_study["moe"], "--prompt", prompt, "--max-new-tokens", "4")
    assert shown.exit_code == 0, shown.output
    text = " ".join(shown.output.split())
    assert (
        f"the prompt is {len(ids)} tokens and the model sees {window} positions, so with 4 new "
        f"tokens it continues the prompt's last {kept} tokens (the first {len(ids) - kept} are "
        "dropped)"
    ) in text
    seen = loaded.tokenizer.decode(ids[-kept:], clean_up_tokenization_spaces=False)
    assert " ".join(seen.split()) in text and "line 0 says 0." not in text


def test_cli_generate_options_and_exported_models(cli, tiny_study, tmp_path: Path) -> None:
    from moectl.interop.export import export_model

    export_model(tiny_study["moe"], tmp_path / "hf")
    args = ("--prompt", "def f(x):", "--max-new-tokens", "5", "--show-experts")
    original = cli("generate", tiny_study["moe"], *args)
    exported = cli("generate", tmp_path / "hf", *args)
    assert exported.exit_code == 0, exported.output
    assert exported.output == original.output
    bad = cli("generate", tiny_study["moe"], "--max-new-tokens", "3", "--gen", "bogus=1")
    assert bad.exit_code == 2 and "unknown generation option" in bad.output
