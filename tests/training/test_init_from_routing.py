"""`train --init-from` an MoE artifact: a routing the config does not share is refused in one
line with nothing written; a matching one trains what model.json records, so best/ and every
checkpoint reload to the trained module's logits (issue 28 section 2)."""

from __future__ import annotations

import shlex

import pytest
import torch
from conftest import refused, untouched

from moectl.config import resolve_run_config
from moectl.interop.loading import load_model
from moectl.training import session
from moectl.training.trainer import train_run

# Two routings that differ in every field the MoE module is built with.
PLAIN = {"balance": "switch", "score": "softmax", "shared_experts": 0, "granularity": 1,
         "top_k": 1, "n_experts": 4}  # fmt: skip
RICH = {"balance": "bias", "score": "sigmoid", "shared_experts": 1, "granularity": 2,
        "top_k": 2, "n_experts": 3}  # fmt: skip
STEPS = ["train.max_steps=2", "train.save_every=1", "train.eval_every=1", "train.keep_last=5"]


def routing_sets(routing: dict[str, object]) -> list[str]:
    return ["moe.enabled=true", "moe.last_n=1", *(f"moe.{k}={v}" for k, v in routing.items())]


def cli_sets(overrides: list[str]) -> list[str]:
    return [word for item in overrides for word in ("--set", item)]


@pytest.fixture(scope="module")
def artifacts(tiny_corpus, tmp_path_factory):
    """best/ of a one-step MoE run under each routing."""
    found = {}
    for name, routing in (("plain", PLAIN), ("rich", RICH)):
        config = resolve_run_config("tiny", overrides=[*routing_sets(routing), "train.max_steps=1"])
        run = tmp_path_factory.mktemp(name) / "run"
        train_run(config, tiny_corpus, run)
        found[name] = run / "best"
    return found


@pytest.fixture
def trained_modules(monkeypatch):
    """The modules the trainer builds (and then trains in place), kept for the test to read."""
    kept = []

    def keep(*args, **kwargs):
        model, record = real(*args, **kwargs)
        kept.append(model)
        return model, record

    real = session.fresh_model
    monkeypatch.setattr(session, "fresh_model", keep)
    return kept


def logits(model: torch.nn.Module) -> torch.Tensor:
    ids = torch.randint(
        0, model.config.vocab_size, (2, 16), generator=torch.Generator().manual_seed(0)
    )
    with torch.no_grad():
        return model.eval()(ids).logits


def assert_saved_models_are_the_trained_one(run, module) -> None:
    """best/ (the last step: the loss falls over two steps here) and every checkpoint reload to
    the logits of the module that trained; the module moved away from its start."""
    expected = logits(module)
    saved = [run / "best", *sorted((run / "checkpoints").iterdir())]
    assert [p.name for p in saved] == ["best", "step-1", "step-2"]
    assert torch.equal(logits(load_model(run / "best").model), expected)
    assert torch.equal(logits(load_model(saved[-1]).model), expected)
    assert not torch.equal(logits(load_model(saved[1]).model), expected)


def mismatches():
    """(artifact, the config's routing, the fields that differ): each field alone, both ways;
    every other balancing scheme; the layers; the same routed layout from another granularity."""
    cases = []
    for name, mine, other in (("plain", PLAIN, RICH), ("rich", RICH, PLAIN)):
        for field in PLAIN:
            cases.append((name, {**mine, field: other[field]}, [field]))
    for scheme in ("global", "sequence", "bias", "none"):
        cases.append(("plain", {**PLAIN, "balance": scheme}, ["balance"]))
    cases.append(("rich", {**RICH, "bias_update_rate": 0.01}, ["bias_update_rate"]))
    # 6 routed experts, top-4 either way, but of other widths: only the fields tell them apart.
    cases.append(
        (
            "rich",
            {**RICH, "n_experts": 6, "top_k": 4, "granularity": 1},
            ["n_experts", "top_k", "granularity"],
        )
    )
    return cases


@pytest.mark.parametrize(("artifact", "routing", "fields"), mismatches())
def test_a_routing_mismatch_is_refused_naming_each_field_and_writes_nothing(
    cli, tiny_corpus, tmp_path, artifacts, artifact, routing, fields
):
    source = artifacts[artifact]
    theirs = PLAIN if artifact == "plain" else {**RICH, "bias_update_rate": 0.001}
    run = tmp_path / "run"
    args = ["--preset", "tiny", *cli_sets(routing_sets(routing)), "--data", tiny_corpus]
    with untouched(source, tmp_path):
        line = refused(
            cli("train", *args, "--run-dir", run, "--init-from", source),
            f"--init-from {source} routes differently from the run's config",
            *(f"moe.{f} is {theirs[f]} there, {routing[f]} in the config" for f in fields),
        )
    named = line.count(" there, ")
    assert named == len(fields), line


def test_other_layers_are_refused_with_the_set_that_fixes_them(
    cli, tiny_corpus, tmp_path, artifacts
):
    overrides = [*routing_sets(PLAIN), "moe.last_n=2"]
    result = cli("train", "--preset", "tiny", *cli_sets(overrides), "--data", tiny_corpus,
                 "--run-dir", tmp_path / "run", "--init-from", artifacts["plain"])  # fmt: skip
    refused(result, "moe.layers is [1] there, [0, 1] in the config")
    assert "--set moe.layers=[1] --set moe.last_n=null" in result.output


@pytest.mark.parametrize("artifact", ["plain", "rich"])
def test_a_matching_routing_trains_what_it_records(
    tiny_corpus, tmp_path, artifacts, trained_modules, artifact
):
    routing = PLAIN if artifact == "plain" else RICH
    config = resolve_run_config("tiny", overrides=[*routing_sets(routing), *STEPS])
    result = train_run(config, tiny_corpus, tmp_path / "run", init_from=artifacts[artifact])
    assert result.steps == 2 and result.best_step == 2
    assert_saved_models_are_the_trained_one(tmp_path / "run", trained_modules[0])
    recorded = load_model(tmp_path / "run" / "best").meta.moe
    assert {k: getattr(recorded, k) for k in routing} == routing


def test_the_hints_sets_continue_the_artifact_as_it_is(
    cli, tiny_corpus, tmp_path, artifacts, trained_modules
):
    """The refusal's hint, followed word for word, trains the artifact's routing: every field of
    the rich artifact differs from the plain config, and its --set flags make the run accepted."""
    base = ["--preset", "tiny", *cli_sets([*routing_sets(PLAIN), *STEPS]), "--data", tiny_corpus,
            "--init-from", artifacts["rich"]]  # fmt: skip
    refusal = cli("train", *base, "--run-dir", tmp_path / "run")
    refused(refusal, *(f"moe.{field} is" for field in PLAIN))
    hint = refusal.output.split("continue it as it is with ", 1)[1].split(", or upcycle")[0]
    result = cli("train", *base, *shlex.split(hint), "--run-dir", tmp_path / "run")
    assert result.exit_code == 0, result.output
    assert_saved_models_are_the_trained_one(tmp_path / "run", trained_modules[-1])
    recorded = load_model(tmp_path / "run" / "best").meta.moe
    assert {k: getattr(recorded, k) for k in RICH} == RICH
