"""The export is ready to share: the card parses as the hub parses it (ModelCard), records no
local path, describes what the model is, and every snippet in it runs without moectl; the
generation config makes transformers decode as `moectl generate` does; --push-to-hub is one
exact huggingface_hub call, and its failure one line with exit 1."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from conftest import trained_run
from helpers.exports import BLOCK_MOECTL

from moectl.interop.export import export_model

QUICK = ["--preset", "tiny", "--set", "train.max_steps=4", "--set", "train.eval_every=4",
         "--set", "train.save_every=4"]  # fmt: skip
MOE = ["--set", "moe.enabled=true", "--set", "moe.last_n=1", "--set", "moe.n_experts=4"]
PROMPT = "def add(a, b):"


@pytest.fixture(scope="module")
def runs(tmp_path_factory, tiny_corpus) -> dict[str, Path]:
    return {
        "dense": trained_run(tmp_path_factory, "card-dense", *QUICK, "--data", tiny_corpus),
        "moe": trained_run(tmp_path_factory, "card-moe", *QUICK, *MOE, "--data", tiny_corpus),
    }


def without_moectl(script: str, cwd: Path, *args: str) -> subprocess.CompletedProcess:
    """`script` run in a fresh interpreter where importing moectl fails."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["HF_MODULES_CACHE"] = str(cwd / "hf-modules")
    env["HF_HUB_OFFLINE"] = "1"
    return subprocess.run(
        [sys.executable, "-c", BLOCK_MOECTL + script, *args],
        capture_output=True, text=True, cwd=cwd, env=env, timeout=300, stdin=subprocess.DEVNULL,
    )  # fmt: skip


@pytest.mark.parametrize("kind", ["dense", "moe"])
def test_card_metadata_validates_names_no_local_path_and_every_snippet_runs(
    runs, tmp_path: Path, kind: str
) -> None:
    from huggingface_hub import ModelCard

    from moectl.version import __version__

    out = tmp_path / "export"
    export_model(runs[kind], out, license="mit")
    text = (out / "README.md").read_text()
    card = ModelCard.load(out / "README.md")
    data = card.data.to_dict()
    assert data["license"] == "mit" and data["language"] == "en"
    assert data["library_name"] == "transformers" and "moectl" in data["tags"]
    assert "base_model" not in data  # trained from scratch: there is none
    assert "## Training data" in text and "| code |" in text  # the corpus is described
    for local in {str(tmp_path), str(runs[kind].parent), str(Path.home()), os.getcwd()}:
        assert local not in text
    assert f"moectl {__version__} from the moectl run run (best)" in text
    if kind == "dense":
        assert "A dense GPT-2" in text and "expert" not in text.lower()
        assert "specialization" not in text.lower() and "mixture-of-experts" not in data["tags"]
    else:
        assert "mixture-of-experts" in data["tags"] and "no specialization verdicts" in text

    snippets = re.findall(r"```python\n(.*?)```", card.text, flags=re.DOTALL)
    assert snippets
    for snippet in snippets:  # run as written, from the folder that holds the export
        done = without_moectl(snippet, tmp_path)
        assert done.returncode == 0, snippet + done.stderr[-3000:]
        assert PROMPT in done.stdout
        if kind == "moe":
            assert "torch.Size([" in done.stdout  # the router logits


def test_card_without_license_says_so_and_hub_repo_goes_into_the_snippet(runs, tmp_path):
    from huggingface_hub import ModelCard

    export_model(runs["moe"], tmp_path / "export", repo_id="someone/tiny-moe")
    card = ModelCard.load(tmp_path / "export" / "README.md")
    assert card.data.license == "other" and "moectl export --license ID" in card.text
    assert "path = 'someone/tiny-moe'" in card.text


GREEDY = textwrap.dedent(
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer, pipeline

    path, prompt, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
    texts = []
    for _ in range(2):  # two calls: sampling would differ
        generate = pipeline("text-generation", model=path, trust_remote_code=True)
        out = generate(prompt, max_new_tokens=n, return_full_text=False)
        texts.append(out[0]["generated_text"])
    model = AutoModelForCausalLM.from_pretrained(path, trust_remote_code=True)
    tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=True)
    ids = tokenizer(prompt, return_tensors="pt").input_ids
    new = model.generate(ids, attention_mask=ids.new_ones(ids.shape), max_new_tokens=n)
    texts.append(tokenizer.decode(new[0, ids.shape[1]:], skip_special_tokens=True))
    print(json.dumps(texts))
    """
)


@pytest.mark.parametrize("kind", ["dense", "moe"])
def test_generation_config_reproduces_moectl_generate(runs, tmp_path: Path, cli, kind) -> None:
    from moectl.analysis.generation import generate
    from moectl.interop.loading import load_model
    from moectl.rundir.locate import resolve_model

    out = tmp_path / "export"
    export_model(runs[kind], out)
    config = json.loads((out / "generation_config.json").read_text())
    assert config["do_sample"] is False and config["max_new_tokens"] == 8  # half of 16 positions
    assert config["eos_token_id"] == config["pad_token_id"] is not None
    # the prompt and 4 new tokens fit the 16 positions: no prompt token is dropped
    ours = generate(load_model(resolve_model(runs[kind])[0]), PROMPT, max_new_tokens=4)
    assert not ours.warnings
    done = without_moectl(GREEDY, tmp_path, str(out), PROMPT, "4")
    assert done.returncode == 0, done.stderr[-3000:]
    texts = json.loads(done.stdout.strip().splitlines()[-1])
    assert ours.text and texts == [ours.text] * 3


def test_push_to_hub_is_one_upload_call_and_off_by_default(runs, tmp_path, cli, monkeypatch):
    import huggingface_hub

    calls: list[tuple[str, tuple, dict]] = []

    class Info:
        commit_url = "https://huggingface.co/someone/tiny-moe/commit/abc"

    monkeypatch.setattr(
        huggingface_hub, "create_repo", lambda *a, **k: calls.append(("create", a, k))
    )
    monkeypatch.setattr(
        huggingface_hub, "upload_folder", lambda *a, **k: calls.append(("upload", a, k)) or Info()
    )
    plain = cli("export", runs["moe"], "--out", tmp_path / "plain")
    assert plain.exit_code == 0, plain.output
    assert calls == []  # off by default
    out = tmp_path / "pushed"
    pushed = cli("export", runs["moe"], "--out", out, "--push-to-hub", "someone/tiny-moe")
    assert pushed.exit_code == 0, pushed.output
    assert calls == [
        ("create", ("someone/tiny-moe",), {"repo_type": "model", "private": False,
                                           "exist_ok": True}),
        ("upload", (), {"repo_id": "someone/tiny-moe", "folder_path": str(out),
                        "repo_type": "model",
                        "commit_message": "Upload pushed with moectl export"}),
    ]  # fmt: skip
    assert Info.commit_url in pushed.output

    def refuse(*args, **kwargs):
        raise OSError("401 Client Error: Unauthorized for url https://huggingface.co/api/repos")

    monkeypatch.setattr(huggingface_hub, "create_repo", refuse)
    failed = cli("export", runs["moe"], "--out", tmp_path / "failed", "--push-to-hub", "x/y")
    assert failed.exit_code == 1 and "Traceback" not in failed.output
    error = [line for line in failed.output.splitlines() if line.startswith("error:")]
    assert len(error) == 1 and "401" in error[0] and "x/y" in error[0]
    assert (tmp_path / "failed" / "README.md").is_file()  # the export itself is kept
