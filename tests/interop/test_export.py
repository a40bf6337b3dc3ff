"""`moectl export`: the exported directory loads and runs in a process that cannot import moectl.

The reference logits and greedy tokens come from `moectl.load_model` (greedy without the KV
cache); the exported model is loaded by transformers alone (custom code for MoE) and generates
with the cache, so both the weight mapping and the cache path are checked.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from helpers.exports import IDS, MOE, NEW_TOKENS, artifact, run_without_moectl

from moectl.config import MoEConfig
from moectl.interop.export import export_model
from moectl.interop.loading import load_model


@pytest.mark.parametrize("kind", list(MOE))
def test_export_matches_moectl_without_moectl(tmp_path: Path, kind: str) -> None:
    moe = MOE[kind]
    source = artifact(tmp_path, moe)
    result = export_model(source, tmp_path / "hf")
    assert result.kind == ("dense" if moe is None else "moe") and result.has_tokenizer
    assert {"config.json", "model.safetensors", "generation_config.json"} <= set(result.files)
    assert "tokenizer.json" in result.files and not result.warnings

    reference = load_model(source).model
    ids = torch.tensor(IDS)
    with torch.no_grad():
        want = reference(ids).logits
        greedy = reference.generate(
            ids[:1], max_new_tokens=NEW_TOKENS, do_sample=False, use_cache=False
        )
    got = run_without_moectl(tmp_path / "hf", tmp_path)
    assert (torch.tensor(got["logits"]) - want).abs().max() <= 1e-5
    assert got["generated"] == greedy[0].tolist()
    assert got["cached_lengths"] == [1] * (NEW_TOKENS - 1)  # one new token per cached step
    assert got["padded_diff"] <= 1e-5
    assert got["eos"] == 0
    config = json.loads((tmp_path / "hf" / "config.json").read_text())
    if moe is None:
        assert config["model_type"] == "gpt2" and got["class"] == "GPT2LMHeadModel"
        assert got["router_shapes"] is None
    else:
        assert (
            config["model_type"] == "moectl_gpt2_moe"
            and "AutoModelForCausalLM" in (config["auto_map"])
        )
        tokens = ids.numel()
        assert got["router_shapes"] == [[tokens, moe.routed_experts]] * len(moe.layers)
        coef = moe.lb_coef if moe.balance not in ("bias", "none") else 0.0
        assert got["aux_loss"] > 0 and got["aux_coef"] == coef
        assert got["aux_in_loss"] == pytest.approx(coef * got["aux_loss"], rel=1e-4, abs=1e-7)
    card = (tmp_path / "hf" / "README.md").read_text()
    if kind == "bias":  # the card describes the routing the export computes, not softmax + LB
        assert "| router | linear gate without bias, float32 sigmoid (DeepSeek-V3) scores |" in card
        choice = "top-k of the scores, plus the balancing scheme's per-expert selection bias"
        assert f"| expert choice | {choice} |" in card
        assert "| load balancing | bias: bias rate 0.001, no LB loss |" in card
        assert (
            "| routed experts per layer | 4 |" in card
            and "| shared experts (always on) | 1 |" in card
        )
    elif moe is not None:
        assert "float32 softmax scores" in card and "| load balancing | switch: lb 0.01 |" in card


@pytest.mark.parametrize("balance", ["global", "sequence", "none"])
def test_every_scheme_exports_its_logits_and_generates(tmp_path: Path, balance: str) -> None:
    """The schemes that only change training export the switch model; checked in this process
    with the exported modeling file's class (the process that cannot import moectl runs the
    bias export above, and the switch ones)."""
    from moectl.interop.families.gpt2 import CODE_FILES
    from moectl.interop.hf_code.modeling_moectl_gpt2_moe import MoectlGPT2MoEForCausalLM
    from moectl.interop.plan import HF_CODE

    moe = MoEConfig(enabled=True, layers=[1], n_experts=4, top_k=2, balance=balance)
    source = artifact(tmp_path, moe)
    export_model(source, tmp_path / "hf")
    for name in CODE_FILES:
        assert (tmp_path / "hf" / name).read_bytes() == (HF_CODE / name).read_bytes()
    exported = MoectlGPT2MoEForCausalLM.from_pretrained(tmp_path / "hf")
    ids = torch.tensor(IDS)
    reference = load_model(source).model
    with torch.no_grad():
        diff = exported.eval()(ids).logits - reference(ids).logits
        generated = exported.generate(ids[:1], max_new_tokens=3, do_sample=False)
        greedy = reference.generate(ids[:1], max_new_tokens=3, do_sample=False, use_cache=False)
    assert diff.abs().max() <= 1e-5
    assert generated.tolist() == greedy.tolist()
    assert exported.config.balance == balance
    assert exported.config.router_aux_loss_coef == (0.0 if balance == "none" else moe.lb_coef)
    setting = {"global": "lb 0.01", "sequence": "lb 0.01", "none": "no balancing"}[balance]
    assert (
        f"| load balancing | {balance}: {setting} |" in (tmp_path / "hf" / "README.md").read_text()
    )


@pytest.mark.parametrize("kind", ["dense", "top2", "bias"])
def test_exported_dir_loads_back_into_moectl(tmp_path: Path, kind: str) -> None:
    source = artifact(tmp_path, MOE[kind])
    export_model(source, tmp_path / "hf")
    back = load_model(tmp_path / "hf")
    ids = torch.tensor(IDS)
    with torch.no_grad():
        diff = back.model(ids).logits - load_model(source).model(ids).logits
    assert diff.abs().max() == 0
    assert back.meta.moe_layers == ([] if MOE[kind] is None else [0, 1])
    assert back.meta.moe == load_model(source).meta.moe
    assert back.tokenizer is not None and back.tokenizer.eos_token_id == 0


def test_every_family_has_exactly_one_exporter_and_the_model_layer_none() -> None:
    """The exporters are the interop wing's: each family registers one in its own module of
    interop/families/ (named as the family, found without a list), a second one or an unknown
    family is refused, and no Family has an `export` of its own."""
    import pkgutil

    import moectl.interop.families as package
    from moectl.interop.exporters import REGISTERED, exporter
    from moectl.interop.families import EXPORTERS
    from moectl.model.arch import FAMILIES, Family

    modules = {info.name for info in pkgutil.iter_modules(package.__path__)}
    assert set(EXPORTERS) == set(FAMILIES) == modules and EXPORTERS == REGISTERED
    assert not hasattr(Family, "export")
    with pytest.raises(TypeError, match="two exporters"):
        exporter("gpt2")(lambda model, moe, layers: (model, None))
    with pytest.raises(TypeError, match="no architecture family"):
        exporter("phi3")


def test_missing_tokenizer_warns_with_the_fix_and_out_dir_is_protected(tmp_path: Path) -> None:
    source = artifact(tmp_path, None, with_tokenizer=False)
    result = export_model(source, tmp_path / "hf")
    assert not result.has_tokenizer and len(result.warnings) == 1
    assert "has no tokenizer" in result.warnings[0] and "--tokenizer" in result.warnings[0]

    existing = tmp_path / "existing"
    existing.mkdir()
    (existing / "keep.txt").write_text("mine")
    from moectl.errors import ModelError

    with pytest.raises(ModelError, match="already exists"):
        export_model(source, existing)
    assert [p.name for p in existing.iterdir()] == ["keep.txt"]


def assert_starts_from(run_dir: Path, source: Path) -> None:
    """The run's step-0 model holds exactly the weights of `source` (an export or artifact).

    Where the run upcycled a dense source, its experts are the dense MLP plus the upcycling
    perturbation (1e-3 of each parameter's std), so they are checked to that tolerance."""
    from moectl.analysis.step_zero import load_initial_model

    start = load_initial_model(run_dir).model.state_dict()
    weights = load_model(source).model.state_dict()
    for key, tensor in weights.items():
        if key in start:
            assert torch.equal(start[key], tensor), key
            continue
        prefix, name = key.rsplit(".mlp.", 1)  # a dense MLP the run turned into experts
        stacked = {"c_fc.weight": "fc_weight", "c_fc.bias": "fc_bias",
                   "c_proj.weight": "proj_weight", "c_proj.bias": "proj_bias"}[name]  # fmt: skip
        experts = start[f"{prefix}.mlp.experts.{stacked}"]
        assert experts.shape[1:] == tensor.shape, key
        assert (experts - tensor).abs().max() <= 0.01 * tensor.std(), key
    assert sum(key in start for key in weights) >= len(weights) - 4


def test_exported_dirs_go_back_in_with_init_from_and_model_pretrained(tiny_corpus, tmp_path):
    from moectl.config import resolve_run_config
    from moectl.data.store import load_corpus
    from moectl.data.tokenizer import resolve_tokenizer, tokenizer_fingerprint
    from moectl.errors import ModelError
    from moectl.training.trainer import train_run

    short = ["train.max_steps=2", "train.eval_every=2", "train.save_every=2"]
    moe = ["moe.enabled=true", "moe.last_n=1", "moe.n_experts=4"]
    dense_cfg = resolve_run_config("tiny", overrides=short)
    train_run(dense_cfg, tiny_corpus, tmp_path / "dense")
    export_model(tmp_path / "dense", tmp_path / "dense-hf")

    # model.pretrained: a dense run's best/ (what the offline hint suggests) and its export.
    for base in (tmp_path / "dense" / "best", tmp_path / "dense-hf"):
        config = resolve_run_config("tiny", overrides=[*short, *moe, f"model.pretrained={base}"])
        name = f"from-{base.name}"
        assert train_run(config, tiny_corpus, tmp_path / name).stop_reason == "completed"
        assert_starts_from(tmp_path / name, base)

    # --init-from: a dense export is upcycled; an MoE export continues with its own layout.
    moe_cfg = resolve_run_config("tiny", overrides=[*short, *moe])
    train_run(moe_cfg, tiny_corpus, tmp_path / "moe", init_from=tmp_path / "dense-hf")
    assert_starts_from(tmp_path / "moe", tmp_path / "dense-hf")
    export_model(tmp_path / "moe", tmp_path / "moe-hf")
    again = train_run(moe_cfg, tiny_corpus, tmp_path / "moe2", init_from=tmp_path / "moe-hf")
    assert again.stop_reason == "completed"
    assert_starts_from(tmp_path / "moe2", tmp_path / "moe-hf")  # every weight, experts too
    # The export's top-level tokenizer is the corpus's (data.tokenizer=DIR reads it).
    exported_tokenizer = resolve_tokenizer(str(tmp_path / "moe-hf"))
    assert (
        tokenizer_fingerprint(exported_tokenizer)
        == load_corpus(tiny_corpus).manifest.tokenizer.hash
    )

    # An MoE model is not a dense base: the error names the option that works.
    config = resolve_run_config(
        "tiny", overrides=[*short, *moe, f"model.pretrained={tmp_path / 'moe-hf'}"]
    )
    with pytest.raises(ModelError) as raised:
        train_run(config, tiny_corpus, tmp_path / "bad")
    assert "--init-from" in raised.value.hint


def test_cli_export_checkpoint_tokenizer_hint_and_force(cli, tiny_corpus, tmp_path):
    from moectl.config import resolve_run_config
    from moectl.training.trainer import train_run

    config = resolve_run_config("tiny", overrides=["train.max_steps=2", "train.save_every=2"])
    train_run(config, tiny_corpus, tmp_path / "run")
    checkpoint = tmp_path / "run" / "checkpoints" / "step-2"
    bare = cli("export", checkpoint, "--out", tmp_path / "bare")
    assert bare.exit_code == 0, bare.output
    text = " ".join(bare.output.split())
    assert f"--tokenizer {tiny_corpus.resolve() / 'tokenizer'}" in text
    assert not (tmp_path / "bare" / "tokenizer.json").exists()

    refused = cli("export", checkpoint, "--out", tmp_path / "bare")
    assert refused.exit_code == 2 and "already exists" in " ".join(refused.output.split())
    assert "Traceback" not in refused.output

    fixed = cli(
        "export", checkpoint, "--out", tmp_path / "bare", "--force",
        "--tokenizer", tiny_corpus / "tokenizer",
    )  # fmt: skip
    assert fixed.exit_code == 0, fixed.output
    assert "warning" not in fixed.output
    assert (tmp_path / "bare" / "tokenizer.json").is_file()
    assert load_model(tmp_path / "bare").tokenizer is not None


LONG_PROMPT = textwrap.dedent(
    """
    import json, sys

    sys.meta_path.insert(0, type("Block", (), {"find_spec": staticmethod(
        lambda name, *a: (_ for _ in ()).throw(ImportError(name))
        if name.split(".")[0] == "moectl" else None)})())
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, pipeline

    path, remote = sys.argv[1], sys.argv[2] == "moe"
    tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=remote or None)
    generate = pipeline("text-generation", model=path, trust_remote_code=remote or None)
    prompt = "def f(x): return x + 1 two plus two is four " * 12
    ids = tokenizer(prompt)["input_ids"]
    out = generate(prompt, max_new_tokens=4, do_sample=False, handle_long_generation="hole",
                   return_full_text=False)
    model = AutoModelForCausalLM.from_pretrained(path, trust_remote_code=remote or None)
    keep = tokenizer.model_max_length - 4
    with torch.no_grad():
        alone = model.generate(torch.tensor([ids[-keep:]]), max_new_tokens=4, do_sample=False)
    print(json.dumps({
        "model_max_length": tokenizer.model_max_length,
        "prompt_tokens": len(ids),
        "generated": out[0]["generated_text"],
        "alone": tokenizer.decode(alone[0, keep:]),
    }))
    """
)


@pytest.mark.parametrize("kind", ["dense", "top1"])
def test_long_prompt_through_pipeline_and_a_tokenizer_with_the_model_context(
    tmp_path: Path, kind: str
) -> None:
    """model_max_length is the context (16 here), so the pipeline's "hole" strategy keeps the
    prompt's last tokens instead of running past the positions (an IndexError at 1e30). A dense
    export's AutoTokenizer loads without any remote-code question (stdin is closed)."""
    export_model(artifact(tmp_path, MOE[kind]), tmp_path / "hf")
    config = json.loads((tmp_path / "hf" / "tokenizer_config.json").read_text())
    assert config["model_max_length"] == 16
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["HF_MODULES_CACHE"] = str(tmp_path / "hf-modules")
    done = subprocess.run(
        [sys.executable, "-c", LONG_PROMPT, str(tmp_path / "hf"), "moe" if MOE[kind] else "-"],
        capture_output=True, text=True, cwd=tmp_path, env=env, timeout=300,
        stdin=subprocess.DEVNULL,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    assert "custom code" not in done.stdout + done.stderr
    got = json.loads(done.stdout.strip().splitlines()[-1])
    assert got["model_max_length"] == 16 and got["prompt_tokens"] > 100
    assert got["generated"] == got["alone"] and got["generated"]


def test_export_card_has_hub_metadata_and_the_run_evaluation_with_intervals(
    cli, tiny_corpus, tmp_path
) -> None:
    import yaml

    from moectl.analysis.results import load_results
    from moectl.config import resolve_run_config
    from moectl.training.trainer import train_run

    overrides = ["moe.enabled=true", "moe.last_n=1", "moe.n_experts=4", "train.max_steps=4",
                 "train.eval_every=4", "train.save_every=4"]  # fmt: skip
    run = tmp_path / "run"
    train_run(resolve_run_config("tiny", overrides=overrides), tiny_corpus, run)

    def card(out: Path) -> tuple[dict, str]:
        text = (out / "README.md").read_text()
        _, header, body = text.split("---\n", 2)
        return yaml.safe_load(header), body

    export_model(run, tmp_path / "before")
    header, body = card(tmp_path / "before")
    assert header["library_name"] == "transformers" and header["pipeline_tag"] == "text-generation"
    assert {"moectl", "mixture-of-experts", "custom_code"} <= set(header["tags"])
    assert "base_model" not in header  # trained from scratch: there is none
    assert "4 experts with top-1 routing in layers 1" in body
    assert "no specialization verdicts" in body and "output_router_logits=True" in body

    evaluated = cli("evaluate", run, "--max-blocks", "12", "--permutations", "3")
    assert evaluated.exit_code == 0, evaluated.output
    export_model(run, tmp_path / "after")
    _, body = card(tmp_path / "after")
    (path,) = (run / "eval").glob("*.json")
    (result,) = load_results(path)
    assert f"| all | {result.loss:.4f} | {result.ppl:.2f} |" in body
    for domain, loss in result.domain_loss.items():
        assert f"| {domain} | {loss:.4f} |" in body
    spec = result.routing[0].specialization
    low, high = spec.nmi_ci
    assert f"| 1 | {spec.nmi:.3f} [{low:.3f}, {high:.3f}] | {spec.baseline_nmi:.3f}" in body
    emergent = spec.emergent
    assert emergent.verdict is not None  # a trained run has its step-0 router as the control
    low, high = emergent.ci
    assert f"{emergent.verdict}: {emergent.difference:.3f} [{low:.3f}, {high:.3f}]" in body
