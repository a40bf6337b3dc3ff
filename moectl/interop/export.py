"""`moectl export`: a model as a standard transformers directory that works without moectl.

The model's family decides what is written: its exporter (moectl.interop.exporters), defined in
its interop module (moectl.interop.families: `gpt2`, `llama`). Dense models become their plain
transformers class (GPT-2, Llama, ...). A Llama-family MoE becomes transformers' own MoE class
where one computes exactly what moectl's layers do (Qwen3-MoE, Mixtral, Qwen2-MoE), so it loads
without trust_remote_code. Other MoE models become custom code from `moectl/interop/hf_code/`
(loaded with `trust_remote_code=True`); its two files are copied next to the weights and named
by `auto_map` in config.json. The result and the model card say which class was written and why.
The tokenizer files sit at the top level, so `AutoTokenizer.from_pretrained(DIR)` finds them.
config.json's `moectl` entry records where the model came from (and the tokenizer hash), so moectl
can take the directory back in. README.md is the model card (`moectl.interop.model_card`).
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field

from moectl.config import MoEConfig
from moectl.errors import ModelError
from moectl.interop.families import EXPORTERS
from moectl.interop.plan import HF_CODE, ExportPlan
from moectl.model.arch import family_of, model_sizes
from moectl.rundir.locate import resolve_model
from moectl.version import __version__


class ExportResult(BaseModel):
    """What `export_model` wrote."""

    path: str
    source: str = Field(description="the model artifact that was exported")
    kind: Literal["dense", "moe"]
    files: list[str]
    has_tokenizer: bool
    architecture: str = Field(description="the transformers class written to config.json")
    remote_code: bool = Field(description="whether loading it needs trust_remote_code=True")
    reason: str = Field(description="why that class was written")
    warnings: list[str] = Field(default_factory=list)


def export_model(
    source: Path,
    out: Path,
    *,
    force: bool = False,
    tokenizer: Path | None = None,
    license: str | None = None,
    repo_id: str | None = None,
) -> ExportResult:
    """Export a run directory (its best/ model, else the latest checkpoint) or an artifact.

    An existing `out` is refused unless `force`, before anything is read or written; the new
    directory is assembled beside `out` and renamed into place. `tokenizer` (a directory written
    by save_pretrained, e.g. a corpus's tokenizer/) supplies one for an artifact saved without.
    `license` (a hub license id) and `repo_id` (the hub repo it will be pushed to, which the
    card's snippet then loads) go into the model card.
    """
    from moectl.fs import atomic_directory
    from moectl.interop.loading import load_model
    from moectl.interop.model_card import CARD_NAME, model_card

    source, out = Path(source), Path(out)
    artifact, run_dir = resolve_model(source)
    check_out(out, artifact, force)
    loaded = load_model(artifact)
    warnings: list[str] = []
    tok = loaded.tokenizer
    if tokenizer is not None:
        tok = _load_tokenizer(tokenizer, loaded.meta.tokenizer, model_sizes(loaded.model).vocab)
    elif tok is None:
        warnings.append(
            f"{artifact} has no tokenizer, so the export has none: add one with "
            f"--tokenizer {_tokenizer_suggestion(run_dir)}"
        )
    model, plan = hf_model(loaded, tok)
    positions = model_sizes(loaded.model).positions
    with atomic_directory(out) as temp:
        model.save_pretrained(str(temp))
        for name in plan.code_files:
            shutil.copyfile(HF_CODE / name, temp / name)
        if tok is not None:
            # transformers' default (1e30) lets pipeline() feed a prompt past the positions
            tok.model_max_length = positions
            tok.save_pretrained(str(temp))
        _add_provenance(temp / "config.json", loaded, artifact, plan)
        card = model_card(
            loaded,
            artifact,
            run_dir,
            positions,
            tok is not None,
            plan,
            location=repo_id or out.name,
            license=license,
        )
        (temp / CARD_NAME).write_text(card, encoding="utf-8")
    return ExportResult(
        path=str(out),
        source=str(artifact),
        kind="moe" if loaded.meta.moe_layers else "dense",
        files=sorted(p.name for p in out.iterdir()),
        has_tokenizer=tok is not None,
        architecture=plan.architecture,
        remote_code=not plan.native,
        reason=plan.reason,
        warnings=warnings,
    )


def hf_model(loaded: Any, tokenizer: Any = None) -> tuple[Any, ExportPlan]:
    """The transformers model to save and the plan that chose its class (with the hf_code/ files
    to copy beside it), as the model's family exports it; its generation config stops at the
    tokenizer's EOS and decodes as `moectl generate` does."""
    meta = loaded.meta
    model, plan = export_for(loaded.model, meta.moe, meta.moe_layers)
    return _stop_at_eos(model, tokenizer, model_sizes(loaded.model).positions), plan


def export_for(model: Any, moe: MoEConfig | None, moe_layers: list[int]) -> tuple[Any, ExportPlan]:
    """The transformers model to save for `model` (MoE layers `moe_layers` routed by `moe`, or
    dense) and the plan that chose its class, as its family's exporter builds it."""
    name = family_of(model).name
    if name not in EXPORTERS:
        raise ModelError(
            f"moectl cannot export a {name} model (its family has no exporter)",
            hint="use the moectl artifact itself (moectl.load_model)",
        )
    return EXPORTERS[name](model, moe, moe_layers)


def _stop_at_eos(model: Any, tokenizer: Any, positions: int) -> Any:
    """`model` with `moectl generate`'s default generation config (greedy, 50 new tokens, or
    half the context of a model that sees fewer than 100 positions), which starts, pads and
    stops at the tokenizer's EOS."""
    from moectl.analysis.generation import DEFAULT_NEW_TOKENS, greedy_config

    eos = getattr(tokenizer, "eos_token_id", None)
    if eos is None:
        eos = model.config.eos_token_id
    model.generation_config = greedy_config(eos, min(DEFAULT_NEW_TOKENS, positions // 2))
    return model


def check_out(out: Path, artifact: Path, force: bool) -> None:
    """A ModelError unless `out` is new, or `force` and it is an export or an empty folder:
    --force never replaces a run, a corpus or anyone's other files."""
    from moectl.rundir.kinds import KIND_LABELS, describe_path

    replaceable = (KIND_LABELS["export"], "an empty folder")
    if out.exists():
        found = describe_path(out)
        if not force:
            hint = "choose another --out" + (", or --force" if found in replaceable else "")
            raise ModelError(f"{out} already exists ({found}); nothing was changed", hint=hint)
        if found not in replaceable:
            raise ModelError(
                f"--force replaces only an exported model or an empty folder, and {out} is {found}",
                hint="choose another --out",
            )
    resolved, source = out.resolve(), artifact.resolve()
    if resolved == source or resolved in source.parents:
        raise ModelError(
            f"--out {out} holds the model being exported", hint="export to another directory"
        )
    if out.exists() and not out.is_dir():
        raise ModelError(f"{out} is a file", hint="choose a directory for --out")


def _load_tokenizer(path: Path, info: dict[str, Any], vocab_size: int) -> Any:
    """The tokenizer at `path`, checked against the one the model was trained with."""
    from moectl.data.store import load_tokenizer_dir
    from moectl.data.tokenizer import tokenizer_fingerprint

    tok = load_tokenizer_dir(Path(path))
    if info.get("hash") and tokenizer_fingerprint(tok) != info["hash"]:
        raise ModelError(
            f"the tokenizer in {path} is not the one the model was trained with "
            f"(hash {tokenizer_fingerprint(tok)} vs {info['hash']})",
            hint="pass the tokenizer/ folder of the corpus the model was trained on",
        )
    if len(tok) > vocab_size:
        raise ModelError(
            f"the tokenizer in {path} has {len(tok)} ids but the model embeds {vocab_size}",
            hint="pass the tokenizer/ folder of the corpus the model was trained on",
        )
    return tok


def _tokenizer_suggestion(run_dir: Path | None) -> str:
    """The corpus tokenizer of the run when known, else a description of what to pass."""
    if run_dir is not None:
        try:
            info = json.loads((run_dir / "run.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            info = {}
        folder = Path(info.get("data_dir", "")) / "tokenizer"
        if info.get("data_dir") and folder.is_dir():
            return str(folder)
    return "DATA_DIR/tokenizer (the corpus the model was trained on)"


def _add_provenance(config_file: Path, loaded: Any, artifact: Path, plan: ExportPlan) -> None:
    """config.json gains a `moectl` entry: source, step, tokenizer info and the MoE settings; a
    Llama-family MoE's also holds its base config and MoE layers, from which moectl rebuilds it
    (moectl.interop.hf_format reads them back)."""
    config = json.loads(config_file.read_text(encoding="utf-8"))
    meta = loaded.meta
    config["moectl"] = {
        "version": __version__,
        "source": str(artifact),
        "step": meta.step,
        "metrics": meta.metrics,
        "tokenizer": meta.tokenizer,
        "moe": meta.moe.model_dump(mode="json") if meta.moe else None,
    }
    if plan.base_config is not None:
        config["moectl"].update(base_config=plan.base_config, moe_layers=meta.moe_layers)
    temp = config_file.with_name(".config.json.tmp")
    temp.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    os.replace(temp, config_file)
