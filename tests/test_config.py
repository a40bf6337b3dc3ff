from pathlib import Path

import pytest

from moectl.config import (
    DataConfig,
    MoEConfig,
    RunConfig,
    dump_yaml,
    load_preset,
    parse_override,
    preset_names,
    resolve_data_config,
    resolve_run_config,
)
from moectl.errors import ConfigError


def test_reference_presets_carry_the_design_values():
    moe = resolve_run_config("moe-main")
    assert moe.moe.enabled and moe.moe.layers == [8, 9, 10, 11]
    assert (moe.moe.n_experts, moe.moe.top_k) == (8, 1)
    assert (moe.moe.lb_coef, moe.moe.z_coef) == (0.01, 0.001)
    assert moe.moe.noise_std == 0.1 and moe.train.max_steps == 10000
    assert (moe.train.batch_size, moe.train.grad_accum, moe.train.lr) == (2, 4, 5e-5)
    assert (moe.train.eval_every, moe.train.save_every, moe.train.keep_last) == (200, 500, 3)
    assert moe.data.block_size == 512 and moe.model.pretrained == "gpt2"
    no_lb = resolve_run_config("no-lb")
    assert no_lb.moe.lb_coef == 0 and no_lb.moe.noise_std == 0 and no_lb.train.collapse.stop
    assert no_lb.train.max_steps == 2000 and no_lb.moe.z_coef == 0.001
    top2 = resolve_run_config("top2")
    assert top2.moe.top_k == 2 and top2.train.max_steps == 3000
    shake = resolve_run_config("shakedown")
    assert not shake.moe.enabled and shake.train.max_steps == 100 and shake.data.size_mb == 1
    assert resolve_run_config("dense").train.max_steps == 5000
    for name in ("dense", "moe-main", "no-lb", "top2", "shakedown"):
        config = resolve_run_config(name)
        assert config.train.precision == "fp32", name
        assert config.data.balance_tokens and not config.data.balance_eval, name
    assert resolve_run_config("cpu-moe").train.precision == "auto"


def test_every_preset_validates():
    names = preset_names()
    assert {"shakedown", "dense", "moe-main", "no-lb", "top2", "cpu-moe", "tiny"} <= set(names)
    for name in names:
        assert isinstance(resolve_run_config(name), RunConfig)


def test_precedence_preset_then_file_then_set(tmp_path: Path):
    cfg_file = tmp_path / "run.yaml"
    cfg_file.write_text("train:\n  lr: 0.002\n  max_steps: 7\nmoe:\n  top_k: 2\n")
    cfg = resolve_run_config("moe-main", cfg_file, ["train.lr=3e-4", "moe.layers=[1, 2]"])
    assert cfg.train.lr == 3e-4  # --set beats the file
    assert cfg.train.max_steps == 7  # the file beats the preset
    assert cfg.moe.top_k == 2 and cfg.moe.layers == [1, 2]
    assert cfg.moe.n_experts == 8  # untouched preset value


def test_override_values_parse_as_yaml():
    assert parse_override("a.b=1e-3") == {"a": {"b": 1e-3}}
    assert parse_override("x=[1, 2]") == {"x": [1, 2]}
    assert parse_override("flag=true") == {"flag": True}
    assert parse_override("name=hello") == {"name": "hello"}
    for bad in ["novalue", "=3", "a..b=1"]:
        with pytest.raises(ConfigError):
            parse_override(bad)


def test_typos_and_bounds_are_reported_with_field_paths():
    with pytest.raises(ConfigError) as info:
        resolve_run_config("moe-main", overrides=["train.lrr=1", "data.block_size=0"])
    paths = {path for path, _ in info.value.problems}
    assert "train.lrr" in paths and "data.block_size" in paths
    with pytest.raises(ConfigError) as info:
        resolve_run_config("moe-main", overrides=["moe.top_k=9"])
    assert "top_k (9) must be <= n_experts (8)" in str(info.value)
    with pytest.raises(ConfigError):
        resolve_run_config("cpu", overrides=["model.n_head=5"])
    with pytest.raises(ConfigError):
        resolve_run_config("cpu", overrides=["train.collapse.threshold=1.5"])
    with pytest.raises(ConfigError, match="unknown preset"):
        load_preset("nope")
    with pytest.raises(ConfigError, match=r"drop it, or set model\.arch=llama"):
        resolve_run_config("cpu", overrides=["model.n_kv_head=2"])  # silently ignored before
    assert resolve_run_config("cpu", overrides=["model.n_kv_head=4"]).model.n_kv_head == 4


def test_moe_layers_resolve_and_reject_out_of_range():
    assert MoEConfig(enabled=True, last_n=2).resolve_layers(4) == [2, 3]
    assert MoEConfig(enabled=True, layers=[-1, 0]).resolve_layers(4) == [0, 3]
    assert MoEConfig(enabled=False).resolve_layers(4) == []
    with pytest.raises(ConfigError, match="out of range"):
        MoEConfig(enabled=True, layers=[4]).resolve_layers(4)
    with pytest.raises(ConfigError, match="exceeds"):
        MoEConfig(enabled=True, last_n=5).resolve_layers(4)


def test_data_config_from_run_file_or_bare_file(tmp_path: Path):
    run_file = tmp_path / "study.yaml"
    run_file.write_text("data:\n  block_size: 64\ntrain:\n  lr: 1.0\n")
    assert resolve_data_config(run_file).block_size == 64
    bare = tmp_path / "data.yaml"
    bare.write_text("block_size: 96\nsize_mb: 0.5\n")
    cfg = resolve_data_config(bare, ["data.seed=4"], {"size_mb": 2.0, "seed": None})
    assert (cfg.block_size, cfg.size_mb, cfg.seed) == (96, 2.0, 4)
    bad = tmp_path / "bad.yaml"
    bad.write_text("- a\n- b\n")
    with pytest.raises(ConfigError, match="mapping"):
        resolve_data_config(bad)
    with pytest.raises(ConfigError, match="not found"):
        resolve_data_config(tmp_path / "missing.yaml")


def test_dump_yaml_round_trips():
    cfg = resolve_run_config("top2")
    again = RunConfig.model_validate(__import__("yaml").safe_load(dump_yaml(cfg)))
    assert again == cfg
    assert DataConfig().domains == ["code", "math", "prose"]


def test_router_lr_scale_allows_a_frozen_router_but_not_a_negative_rate():
    assert MoEConfig(router_lr_scale=0).router_lr_scale == 0.0
    with pytest.raises(ValueError, match="router_lr_scale"):
        MoEConfig(router_lr_scale=-1)
