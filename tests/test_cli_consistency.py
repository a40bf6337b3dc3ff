"""One CLI: short flags mean one thing, --device defaults to auto, presets are listed, configs
can be printed, typos get a suggestion, and a log without a terminal gets plain step lines."""

from __future__ import annotations

import click
import typer
import yaml
from conftest import refused, tree_hash

from moectl.config import TrainConfig, preset_names


def commands() -> dict[str, click.Command]:
    from moectl.cli.app import app

    group = typer.main.get_command(app)
    return {name: group.get_command(None, name) for name in group.list_commands(None)}


def test_each_short_flag_means_one_option_everywhere():
    meaning: dict[str, set[str]] = {}
    for command in commands().values():
        for param in command.params:
            longs = [o for o in param.opts if o.startswith("--")]
            for short in (o for o in param.opts if len(o) == 2 and o.startswith("-")):
                meaning.setdefault(short, set()).update(longs)
    assert all(len(longs) == 1 for longs in meaning.values()), meaning
    assert meaning["-d"] == {"--data"} and meaning["-p"] == {"--preset"}
    assert "-n" not in meaning


def test_device_defaults_to_auto_everywhere():
    devices = {
        name: param.default
        for name, command in commands().items()
        for param in command.params
        if param.name == "device"
    }
    assert devices == {"evaluate": "auto", "generate": "auto"}
    assert TrainConfig().device == "auto"  # train's device is its config's


def test_presets_are_listed_with_descriptions(cli):
    result = cli("presets")
    assert result.exit_code == 0, result.output
    text = " ".join(result.output.split())
    for name in preset_names():
        assert name in text
    assert "a 2-layer, 32-wide GPT-2 for tests" in text


def test_print_config_prints_the_resolved_config_and_writes_nothing(cli, tiny_corpus, tmp_path):
    before = tree_hash(tmp_path)
    result = cli("train", "--preset", "tiny", "--set", "train.lr=0.002", "--print-config")
    assert result.exit_code == 0, result.output
    printed = yaml.safe_load(result.output)
    assert printed["name"] == "tiny" and printed["train"]["lr"] == 0.002
    with_corpus = cli("train", "--preset", "tiny", "--data", tiny_corpus, "--print-config",
                      "--run-dir", tmp_path / "run")  # fmt: skip
    assert yaml.safe_load(with_corpus.output)["data"]["tokenizer"] == "bpe:300"
    assert tree_hash(tmp_path) == before


def test_typos_get_did_you_mean(cli):
    command = cli("trian")
    assert command.exit_code == 2 and "Did you mean 'train'?" in command.output
    option = cli("train", "--preset", "tiny", "--print-conifg")
    # the suggestion's wording is click's or typer's, which differs across their versions
    assert option.exit_code == 2 and "--print-config" in option.output
    refused(cli("train", "--preset", "tny", "--print-config"), "did you mean 'tiny'?")
    key = cli("train", "--preset", "tiny", "--set", "train.lrr=1", "--print-config")
    assert key.exit_code == 2 and "train.lrr: unknown field (did you mean 'lr'?)" in key.output


def test_train_without_a_terminal_prints_one_line_per_log_step(cli, tiny_corpus, tmp_path):
    result = cli(
        "train", "--preset", "tiny", "--data", tiny_corpus, "--run-dir", tmp_path / "run",
        "--set", "train.max_steps=5", "--set", "train.log_every=2",
        "--set", "moe.enabled=true", "--set", "moe.last_n=1", "--set", "moe.n_experts=4",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    lines = [line for line in result.output.splitlines() if line.startswith("step ")]
    logged = [line for line in lines if " loss " in line and "eval" not in line]
    assert [line.split()[1] for line in logged] == ["2/5", "4/5", "5/5"]
    for line in logged:
        assert " lr " in line and " tok/s" in line and " max share " in line
