"""`moectl generate` and the generation core on the tiny study's untrained models."""

from __future__ import annotations

from pathlib import Path

import torch
from test_analysis_evaluate import tiny_study  # noqa: F401  (session fixture)

from moectl.analysis.generation import filter_logits, generate
from moectl.model.io import load_model


def test_greedy_is_deterministic_and_records_experts(tiny_study) -> None:  # noqa: F811
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


def test_sampling_seeded_and_filters() -> None:
    logits = torch.tensor([3.0, 2.0, 1.0, 0.0])
    assert torch.isinf(filter_logits(logits, 1.0, 2, None)[2:]).all()
    kept = filter_logits(logits, 1.0, None, 0.5)
    assert not torch.isinf(kept[0]) and torch.isinf(kept[1:]).all()
    assert torch.allclose(filter_logits(logits, 2.0, None, None), logits / 2)


def test_cli_generate(cli, tiny_study, tmp_path: Path) -> None:  # noqa: F811
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
