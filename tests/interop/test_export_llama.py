"""`moectl export` of Llama-family models: transformers' own MoE class where it is exact, custom
code otherwise, the plain class when dense (issue 16 section 2).

Every export below is loaded in one process that cannot import moectl, with
`trust_remote_code` only where config.json names custom code (`auto_map`): a native export that
needed moectl's code would not load there. The reference logits and greedy tokens come from
`moectl.load_model` (greedy without the KV cache); the exports generate with the cache.
"""

from __future__ import annotations

import json
import textwrap
from dataclasses import dataclass, replace
from pathlib import Path

import pytest
import torch
from helpers.exports import BLOCK_MOECTL, IDS, NEW_TOKENS, run_without_moectl
from helpers.models import llama_cfg, small_tokenizer, tiny_dir

from moectl.config import MoEConfig, RunConfig
from moectl.errors import ModelError
from moectl.interop.export import export_model
from moectl.interop.families import llama as native_export
from moectl.interop.loading import load_model
from moectl.model.artifact import ModelMeta
from moectl.model.factory import build_model
from moectl.model.io import save_model
from moectl.model.routing import moe_layers
from moectl.model.surgery import apply_moe
from moectl.training.setup import config_of_pretrained

LOADER = BLOCK_MOECTL + textwrap.dedent(
    """
    from pathlib import Path

    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    ids, new_tokens = torch.tensor(json.loads(sys.argv[2])), int(sys.argv[3])
    results = {}
    for folder in sorted(Path(sys.argv[1]).iterdir()):
        config = json.loads((folder / "config.json").read_text())
        remote = "auto_map" in config
        model = AutoModelForCausalLM.from_pretrained(folder, trust_remote_code=remote).eval()
        tokenizer = AutoTokenizer.from_pretrained(folder, trust_remote_code=remote)
        with torch.no_grad():
            logits = model(ids).logits
            generated = model.generate(ids[:1], max_new_tokens=new_tokens, do_sample=False)
            is_moe = "num_experts_per_tok" in config
            routed = model(ids, output_router_logits=True) if is_moe else None
        router = getattr(routed, "router_logits", None)
        results[folder.name] = {
            "class": type(model).__name__,
            "remote": remote,
            "logits": logits.tolist(),
            "generated": generated[0].tolist(),
            "router_shapes": [list(r.shape) for r in router] if router else None,
            "eos": tokenizer.eos_token_id,
            "max_length": tokenizer.model_max_length,
        }
    print(json.dumps(results))
    """
)


@dataclass(frozen=True)
class Case:
    model_type: str
    moe: MoEConfig | None
    architecture: str
    native: bool
    base: tuple[tuple[str, int], ...] = ()  # base config overrides


WINDOW = (("sliding_window", 4),)  # shorter than the prompt: the window changes the logits


def moe(**kw) -> MoEConfig:
    base = {"enabled": True, "last_n": 2, "n_experts": 4, "top_k": 2, "perturbation_std": 0.5}
    return MoEConfig(**{**base, **kw})


CASES = {
    "qwen3-dense-layer": Case("qwen3", moe(last_n=1), "Qwen3MoeForCausalLM", True),
    "qwen3-top1-fine": Case("qwen3", moe(top_k=1, granularity=2), "Qwen3MoeForCausalLM", True),
    "llama-every-layer": Case("llama", moe(), "MixtralForCausalLM", True),
    "mistral-top1": Case("mistral", moe(top_k=1), "MixtralForCausalLM", True, WINDOW),
    "mistral-dense-layer": Case("mistral", moe(last_n=1), "Qwen2MoeForCausalLM", True, WINDOW),
    "llama-dense-layer": Case("llama", moe(last_n=1), "Qwen2MoeForCausalLM", True),
    "qwen2-top2": Case("qwen2", moe(), "Qwen2MoeForCausalLM", True),
    "qwen3-deepseek": Case(
        "qwen3",
        moe(score="sigmoid", balance="bias", shared_experts=1, granularity=2),
        "Qwen3MoectlMoEForCausalLM",
        False,
    ),
    "llama-bias": Case("llama", moe(last_n=1, balance="bias"), "LlamaMoectlMoEForCausalLM", False),
    "llama-dense": Case("llama", None, "LlamaForCausalLM", True),
}


def llama_artifact(folder: Path, case: Case) -> Path:
    """A tiny saved moectl model of `case`, with a tokenizer; experts that differ enough (and
    a selection bias that changes choices) so that routing matters."""
    torch.manual_seed(0)
    model = build_model(llama_cfg(tiny_dir(folder, case.model_type, **dict(case.base))), 64, 16)
    if case.moe is not None:
        apply_moe(model, case.moe, seed=1)
        for layer in moe_layers(model).values():
            if case.moe.balance == "bias":
                layer.balance.bias.copy_(torch.linspace(0.3, -0.3, case.moe.routed_experts))
    path = folder / "artifact"
    save_model(model.eval(), path, ModelMeta(moe=case.moe), tokenizer=small_tokenizer())
    return path


@pytest.fixture(scope="module")
def exported(tmp_path_factory) -> dict:
    """Every case exported, its export result, moectl's reference outputs, and what a process
    without moectl got from the export."""
    root = tmp_path_factory.mktemp("llama-exports")
    outputs, found = root / "exports", {}
    outputs.mkdir()
    ids = torch.tensor(IDS)
    for name, case in CASES.items():
        source = llama_artifact(root / name, case)
        result = export_model(source, outputs / name)
        reference = load_model(source).model
        with torch.no_grad():
            logits = reference(ids).logits
            greedy = reference.generate(
                ids[:1], max_new_tokens=NEW_TOKENS, do_sample=False, use_cache=False
            )
        found[name] = {"result": result, "logits": logits, "greedy": greedy[0].tolist()}
    loaded = run_without_moectl(outputs, root, LOADER)
    for name in CASES:
        found[name]["loaded"] = loaded[name]
    return found


@pytest.mark.slow  # the module fixture: nine exports and a subprocess (~20 s CPU)
@pytest.mark.parametrize("name", list(CASES))
def test_export_is_exact_and_native_where_a_class_is(exported: dict, name: str) -> None:
    case, found = CASES[name], exported[name]
    result, got = found["result"], found["loaded"]
    assert result.architecture == case.architecture and result.remote_code == (not case.native)
    assert got["class"] == case.architecture and got["remote"] == (not case.native)
    assert (torch.tensor(got["logits"]) - found["logits"]).abs().max() <= 1e-5
    assert got["generated"] == found["greedy"]
    assert got["eos"] == 0 and got["max_length"] == 32
    config = json.loads((Path(result.path) / "config.json").read_text())
    code = sorted(p.name for p in Path(result.path).glob("*.py"))
    if case.native:
        assert "auto_map" not in config and code == []
    else:
        assert code == list(native_export.CODE_FILES)
        assert config["auto_map"]["AutoModelForCausalLM"].endswith("." + case.architecture)
    if case.moe is not None:
        n_layers = len(case.moe.resolve_layers(2))
        tokens = len(IDS) * len(IDS[0])
        assert got["router_shapes"] == [[tokens, case.moe.routed_experts]] * n_layers
    card = (Path(result.path) / "README.md").read_text()
    assert result.architecture in card or case.moe is None
    assert ("custom_code" in card) == (not case.native)


def base_config(model_type: str, **fields) -> dict:
    """A base config dict as plan_export reads it (two layers)."""
    return {"model_type": model_type, "num_hidden_layers": 2, "intermediate_size": 64, **fields}


@pytest.mark.parametrize(
    ("base", "layout", "reason"),
    [
        (
            base_config("qwen3", layer_types=["full_attention", "sliding_attention"]),
            moe(),
            "sliding",
        ),
        (base_config("llama", attention_bias=True), moe(), "attention biases"),
        (base_config("qwen2", mlp_bias=True), moe(), "MLPs have biases"),
        (base_config("mistral"), moe(score="sigmoid"), "sigmoid"),
        (base_config("qwen2"), moe(shared_experts=1), "shared experts"),
    ],
)
def test_what_no_native_class_reproduces_goes_to_custom_code(base, layout, reason) -> None:
    plan = native_export.plan_export(base, layout, [0, 1])
    assert not plan.native and plan.code_files == native_export.CODE_FILES
    assert plan.architecture == native_export.custom_architecture(base["model_type"])
    assert reason in plan.reason


def test_a_native_class_that_differs_falls_back_to_custom_code(tmp_path, monkeypatch) -> None:
    """The export runs the native model against moectl's before writing it: a config that the
    rules map wrongly (here a changed norm epsilon) makes it write custom code and say why."""
    qwen3 = native_export.QWEN3_MOE

    def wrong(base, layout, layers):
        return {**qwen3.config(base, layout, layers), "rms_norm_eps": 0.5}

    monkeypatch.setitem(native_export.NATIVE, qwen3.architecture, replace(qwen3, config=wrong))
    source = llama_artifact(tmp_path, CASES["qwen3-dense-layer"])
    result = export_model(source, tmp_path / "hf")
    assert result.architecture == "Qwen3MoectlMoEForCausalLM" and result.remote_code
    assert result.reason.startswith("Qwen3MoeForCausalLM differed from moectl's logits by")
    assert set(native_export.CODE_FILES) <= set(result.files)
    assert "because Qwen3MoeForCausalLM differed" in (tmp_path / "hf" / "README.md").read_text()


def test_cli_export_says_which_class_and_why(cli, tmp_path) -> None:
    source = llama_artifact(tmp_path, CASES["llama-every-layer"])
    done = cli("export", source, "--out", tmp_path / "hf")
    assert done.exit_code == 0, done.output
    text = " ".join(done.output.split())
    assert "as MixtralForCausalLM: every layer is MoE and Mixtral routes as moectl does" in text
    assert "trust_remote_code" not in text


@pytest.mark.slow  # the module fixture: nine exports and a subprocess (~20 s CPU)
@pytest.mark.parametrize("name", list(CASES))
def test_llama_export_loads_back_into_moectl(exported: dict, name: str) -> None:
    """moectl reads every export back (evaluate, generate, --init-from) as its own model."""
    back = load_model(exported[name]["result"].path)
    assert (back.meta.moe is None) == (CASES[name].moe is None)
    if CASES[name].moe is not None:
        assert back.meta.moe.routed_experts == CASES[name].moe.routed_experts
        assert back.meta.moe_layers == CASES[name].moe.resolve_layers(2)
    with torch.no_grad():
        logits = back.model(torch.tensor(IDS)).logits
    assert (logits - exported[name]["logits"]).abs().max() == 0


def test_native_layout_round_trips_and_a_working_shared_expert_is_refused() -> None:
    generator = torch.Generator().manual_seed(0)
    state = {
        "model.layers.1.mlp.gate.weight": torch.randn(4, 8, generator=generator),
        "model.layers.1.mlp.experts.gate_up": torch.randn(4, 8, 6, generator=generator),
        "model.layers.1.mlp.experts.down": torch.randn(4, 3, 8, generator=generator),
        "model.norm.weight": torch.ones(8),
    }
    native = native_export.native_state_dict(state, native_export.QWEN2_MOE, [1], "model.layers")
    assert native["model.layers.1.mlp.experts.gate_up_proj"].shape == (4, 6, 8)
    assert native["model.layers.1.mlp.experts.down_proj"].shape == (4, 8, 3)
    assert not native["model.layers.1.mlp.shared_expert.down_proj.weight"].any()
    back = native_export.moectl_state_dict(native)
    assert back.keys() == state.keys()
    assert all(torch.equal(back[key], value) for key, value in state.items())
    native["model.layers.1.mlp.shared_expert.down_proj.weight"][0, 0] = 1.0
    with pytest.raises(ModelError, match=r"shared_expert\.down_proj\.weight is not zero"):
        native_export.moectl_state_dict(native)


@pytest.mark.parametrize("name", ["qwen3-dense-layer", "llama-bias"])
def test_an_moe_export_as_model_pretrained_points_to_init_from(tmp_path, name) -> None:
    """A Llama-family MoE export (native class or custom code) given as the dense base gets
    the same one-line answer as a moectl artifact; before, a native one was refused as an
    unsupported architecture ('qwen3_moe')."""
    export_model(llama_artifact(tmp_path, CASES[name]), tmp_path / "hf")
    with pytest.raises(ModelError, match="is an MoE model") as err:
        config_of_pretrained(RunConfig(model=llama_cfg(tmp_path / "hf")))
    assert f"--init-from {tmp_path / 'hf'}" in err.value.hint
