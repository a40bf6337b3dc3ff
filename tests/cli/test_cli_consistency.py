"""One CLI: short flags mean one thing, --device defaults to auto, on/off options are
--flag/--no-flag, every option is described with one placeholder style, help prose is reflowed
for the terminal, shell completion is there, usage errors read like every other error, presets
are listed, configs can be printed, typos get a suggestion, and a log without a terminal gets
plain step lines."""

from __future__ import annotations

import re

import typer
import yaml
from conftest import refused, tree_hash

from moectl.config import TrainConfig, preset_names

ACTIONS = {"help", "version", "install_completion", "show_completion"}
"""Options that do one thing and exit, so they have no --no- form."""


def root():
    from moectl.cli.app import app

    return typer.main.get_command(app)


def commands() -> dict:
    group = root()
    return {name: group.get_command(None, name) for name in group.list_commands(None)}


def all_params():
    """(command name, parameter) for every option and argument, the root's and help included."""
    group = root()
    for name, command in {"moectl": group, **commands()}.items():
        ctx = typer.Context(command, info_name=name)
        for param in command.get_params(ctx):
            yield name, param


def test_on_off_options_are_flag_pairs_and_take_no_placeholder():
    for name, param in all_params():
        if not getattr(param, "is_flag", False) or param.name in ACTIONS:
            continue
        assert param.secondary_opts == [f"--no-{param.opts[0][2:]}"], (name, param.opts)
        assert param.metavar == "", (name, param.opts)


def test_every_option_is_described_with_one_placeholder_style(cli):
    style = re.compile(r"^[A-Z]+(=[A-Z]+)?$")
    for name, param in all_params():
        assert (param.help or "").strip(), f"{name} {param.opts} has no description"
        if not getattr(param, "is_flag", False):
            assert style.match(param.metavar or ""), (name, param.opts, param.metavar)
    for name in commands():
        text = cli(name, "--help").output
        assert not re.search(r"<(bool|path|str|int|float|list)", text), (name, text)


def test_help_prose_is_reflowed_for_the_terminal_and_examples_keep_their_lines(cli):
    """Every command's prose paragraphs are one line each (the terminal wraps them), so an
    80-column --help is not cut at the source's 100-column breaks; example lines stay apart."""
    for name, command in commands().items():
        for paragraph in (command.help or "").split("\n\n"):
            if not paragraph.startswith(" "):
                assert "\n" not in paragraph, (name, paragraph)
    text = cli("quickstart", "--help").output
    assert "moectl quickstart --tiny --out /tmp/tiny-study" in text
    assert "one process each: an 8-expert top-1 MoE" in " ".join(text.split())


def test_shell_completion_is_typers_own(cli):
    names = {param.name for _, param in all_params()}
    assert {"install_completion", "show_completion"} <= names
    script = cli("--show-completion", "bash")
    assert script.exit_code == 0 and "_MOECTL_COMPLETE=complete_bash" in script.output


def test_usage_errors_are_one_error_and_hint_line(cli):
    for name in commands():
        line = refused(cli(name, "--bogus"), "error: No such option: --bogus")
        assert "Traceback" not in line and "╭" not in cli(name, "--bogus").output
    result = cli("evaluate", "run", "--max-blocks", 0)
    refused(result, "Invalid value for '--max-blocks'")
    assert "hint: `moectl evaluate --help` lists the options" in result.output
    refused(cli("export", "run"), "Missing option '--out'")


def test_a_permission_no_command_checked_is_still_one_line(cli, monkeypatch):
    def denied():
        raise PermissionError(13, "Permission denied", "/srv/presets")

    monkeypatch.setattr("moectl.config.preset_names", denied)
    refused(cli("presets"), "permission denied: /srv/presets")


def test_quickstart_takes_set_and_config_like_train(cli, tmp_path, monkeypatch):
    from moectl.study.plan import plan_configs

    options = {name: {o for p in c.params for o in p.opts} for name, c in commands().items()}
    for name in ("train", "quickstart"):
        assert {"-s", "--set", "-c", "--config"} <= options[name]
    captured = {}

    def fake_study(out, size, **kwargs):
        captured.update(kwargs)
        raise SystemExit(0)

    monkeypatch.setattr("moectl.study.run_study", fake_study)
    config = tmp_path / "mine.yaml"
    config.write_text("moe:\n  router_lr_scale: 3.0\ntrain:\n  lr: 0.002\n")
    cli("quickstart", "--tiny", "-c", config, "-s", "train.lr=0.003", "--out", tmp_path / "s")
    _, runs = plan_configs("tiny", "scratch", captured["overrides"])
    for run in runs.values():  # the file reaches every stage, and --set wins over it
        assert (run.moe.router_lr_scale, run.train.lr) == (3.0, 0.003)


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
    refused(command, "No such command 'trian'")
    assert "hint: Did you mean 'train'?" in command.output
    option = cli("train", "--preset", "tiny", "--print-conifg")
    refused(option, "No such option: --print-conifg")
    assert "--print-config" in option.output
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
