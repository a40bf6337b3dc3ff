"""Validated configuration for corpora and runs, with presets, YAML files and --set overrides.

Precedence is preset < config file < `--set key=value`, applied as a deep merge of plain dicts
before one pydantic validation, so a typo anywhere is reported with its full field path instead
of becoming a silent default. The resolved model is what runs save and print.
"""

from __future__ import annotations

import copy
import typing
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from moectl.errors import ConfigError, MoectlError, did_you_mean
from moectl.fs import read_text

SourceKind = Literal["builtin", "files", "hf"]


SEED_MAX = 2**32 - 1
"""The largest train.seed: numpy's global seed takes 0..2**32-1 (torch takes more)."""


class StrictModel(BaseModel):
    """Base for every config section: unknown keys are errors, assignments are validated."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class HFDatasetSpec(StrictModel):
    """One Hugging Face dataset feeding a domain; fields name how to turn a row into text."""

    path: str
    name: str | None = None
    split: str = "train"
    revision: str | None = None
    data_files: list[str] | None = Field(
        None, description="local files for a packaged builder such as path: json"
    )
    text_fields: list[str] = Field(default_factory=lambda: ["text"], min_length=1)
    join_wikitext_articles: bool = False


class DataConfig(StrictModel):
    """What `moectl prepare-data` builds: sources, sizes, tokenizer, packing and balancing."""

    source: SourceKind = "builtin"
    domains: list[str] = Field(default_factory=lambda: ["code", "math", "prose"], min_length=1)
    files: dict[str, list[str]] = Field(
        default_factory=dict, description="files source: domain name -> paths or glob patterns"
    )
    text_column: str = Field("text", description="column holding text in jsonl/json/parquet/csv")
    hf_datasets: dict[str, list[HFDatasetSpec]] = Field(
        default_factory=dict,
        description="hf source: domain -> datasets tried in order (default: the reference's)",
    )
    size_mb: float = Field(1.0, gt=0, description="characters per domain, in millions")
    block_size: int = Field(512, gt=0)
    balance_tokens: bool = Field(
        False, description="truncate every domain's train blocks to the smallest domain's"
    )
    balance_eval: bool = Field(
        False,
        description="balance the eval split too; off (as in the reference study) keeps every "
        "eval text, so per-domain eval losses use all held-out data",
    )
    seed: int = Field(0, ge=0)
    min_example_chars: int = Field(0, ge=0)
    max_example_chars: int | None = Field(None, gt=0)
    tokenizer: str = Field(
        "gpt2",
        description="'gpt2', a local tokenizer path, a pretrained model's hub name (its own "
        "tokenizer), or 'bpe:N'",
    )
    num_proc: int = Field(1, ge=1)
    eval_min_texts: int = Field(10, ge=1)
    eval_fraction: float = Field(0.05, gt=0, lt=1)
    eval_max_fraction: float = Field(0.10, gt=0, lt=1)
    imbalance_warning_ratio: float = Field(1.5, ge=1)

    @model_validator(mode="after")
    def _check(self) -> DataConfig:
        if self.max_example_chars is not None and self.max_example_chars <= self.min_example_chars:
            raise ValueError("max_example_chars must be larger than min_example_chars")
        if self.eval_fraction > self.eval_max_fraction:
            raise ValueError("eval_fraction must not exceed eval_max_fraction")
        if len(set(self.domains)) != len(self.domains):
            raise ValueError("domains must be unique")
        return self


class ModelConfig(StrictModel):
    """The base model: a hub name or local directory, or a scratch config of the given size.

    `arch` names the family (moectl.model.arch): `gpt2` (GELU MLPs) or `llama` (SwiGLU MLPs;
    Llama, Mistral, Qwen2, Qwen3, SmolLM2). A local pretrained directory sets it from its
    config.json's model_type when it is not given (an `arch` naming another family is refused);
    a hub checkpoint must be of the family `arch` names. The size fields are generic: n_embd is the
    hidden width, n_head the attention heads, n_layer the blocks.
    """

    arch: Literal["gpt2", "llama"] = Field("gpt2", description="architecture family")
    pretrained: str | None = Field(
        None, description="hub model name or local directory; None builds from scratch"
    )
    n_layer: int = Field(4, ge=1)
    n_embd: int = Field(256, ge=8)
    n_head: int = Field(4, ge=1)
    n_kv_head: int | None = Field(
        None, ge=1, description="llama: key/value heads (grouped-query attention); None = n_head"
    )
    intermediate_size: int | None = Field(
        None,
        ge=1,
        description="MLP inner width; None = 4 * n_embd (gpt2) or 8/3 * n_embd rounded up to a "
        "multiple of 32 (llama's SwiGLU)",
    )
    n_positions: int | None = Field(None, ge=1, description="defaults to the corpus block size")
    dropout: float = Field(0.0, ge=0, le=1)

    @model_validator(mode="after")
    def _check(self) -> ModelConfig:
        if self.n_embd % self.n_head:
            raise ValueError(f"n_embd ({self.n_embd}) must be divisible by n_head ({self.n_head})")
        if self.n_kv_head is not None and self.n_head % self.n_kv_head:
            raise ValueError(f"n_head ({self.n_head}) must be divisible by n_kv_head")
        if self.arch == "gpt2" and self.n_kv_head not in (None, self.n_head):
            raise ValueError(
                f"n_kv_head ({self.n_kv_head}) is grouped-query attention, which GPT-2 does not "
                "have: drop it, or set model.arch=llama"
            )
        return self


class MoEConfig(StrictModel):
    """Which MLPs become routed experts and how the router is trained (DESIGN.md section 2)."""

    enabled: bool = False
    layers: list[int] | None = Field(None, description="layer indices; negative counts from end")
    last_n: int | None = Field(None, ge=1, description="alternative to layers: the last N layers")
    n_experts: int = Field(8, ge=1)
    top_k: int = Field(1, ge=1)
    lb_coef: float = Field(0.01, ge=0)
    z_coef: float = Field(0.001, ge=0)
    noise_std: float = Field(0.1, ge=0)
    anneal_fraction: float = Field(0.25, ge=0, le=1)
    perturbation_std: float = Field(1e-3, ge=0)
    init: Literal["upcycle", "scratch"] = Field(
        "upcycle",
        description="experts as copies of the dense MLP (sparse upcycling) or freshly "
        "initialized, independently per expert (an MoE trained from scratch, as OLMoE)",
    )
    router_lr_scale: float = Field(
        1.0,
        ge=0,
        description="the gates' learning rate as a multiple of train.lr; 0 keeps every gate at "
        "its initial weights (a frozen-router arm: the body trains around a router that never "
        "learns)",
    )
    balance: Literal["switch", "global", "sequence", "bias", "none"] = Field(
        "switch",
        description="load balancing (moectl.model.balance): Switch LB per micro-batch, over the "
        "optimizer step's global batch (Qiu et al. 2025), per sequence, DeepSeek-V3's "
        "aux-loss-free selection bias, or none",
    )
    bias_update_rate: float = Field(
        1e-3, gt=0, description="balance=bias: how far the bias moves after each step"
    )
    score: Literal["softmax", "sigmoid"] = Field(
        "softmax",
        description="router scores: softmax over experts, or sigmoid per expert normalized over "
        "the chosen ones (DeepSeek-V3)",
    )
    shared_experts: int = Field(
        0, ge=0, description="always-on experts beside the routed ones (DeepSeekMoE, Qwen2-MoE)"
    )
    granularity: int = Field(
        1,
        ge=1,
        description="fine-grained experts: each MLP split into g experts of width 4D/g; "
        "n_experts*g routed, top_k*g active (DeepSeekMoE)",
    )

    @property
    def routed_experts(self) -> int:
        """Routed experts per layer, counting fine-grained ones: n_experts * granularity."""
        return self.n_experts * self.granularity

    @property
    def routed_top_k(self) -> int:
        """Experts each token is routed to: top_k * granularity."""
        return self.top_k * self.granularity

    @property
    def routing_label(self) -> str:
        """The routing in one short label, so runs can be told apart where they are compared
        (inspect, evaluate's table, the report): experts and top-k, the balancing scheme, then
        only what differs from the default, e.g. `top-2x8 bias sigmoid +1 shared g=4`."""
        parts = [f"top-{self.top_k}x{self.n_experts}", self.balance]
        if self.score != "softmax":
            parts.append(self.score)
        if self.shared_experts:
            parts.append(f"+{self.shared_experts} shared")
        if self.granularity != 1:
            parts.append(f"g={self.granularity}")
        return " ".join(parts)

    @model_validator(mode="after")
    def _check(self) -> MoEConfig:
        if self.enabled and self.n_experts < 2:
            raise ValueError(
                f"n_experts ({self.n_experts}) must be at least 2: with one expert the router "
                "has nothing to choose and collapse means nothing"
            )
        if self.top_k > self.n_experts:
            raise ValueError(f"top_k ({self.top_k}) must be <= n_experts ({self.n_experts})")
        if self.layers is not None and self.last_n is not None:
            raise ValueError("give either layers or last_n, not both")
        if self.enabled and self.layers is None and self.last_n is None:
            raise ValueError(
                "an enabled MoE needs the layers whose MLPs become experts: add moe.last_n "
                "or moe.layers, e.g. --set moe.last_n=2 (the last two layers) or "
                "--set 'moe.layers=[1,3]'"
            )
        if self.layers is not None and len(set(self.layers)) != len(self.layers):
            raise ValueError("layers must be unique")
        return self

    def resolve_layers(self, n_layer: int) -> list[int]:
        """Concrete, sorted layer indices for a model of `n_layer` layers."""
        if not self.enabled:
            return []
        if self.last_n is not None:
            if self.last_n > n_layer:
                raise ConfigError(
                    "invalid MoE layers",
                    [("moe.last_n", f"{self.last_n} exceeds the model's {n_layer} layers")],
                )
            return list(range(n_layer - self.last_n, n_layer))
        resolved = []
        for index in self.layers or []:
            real = index + n_layer if index < 0 else index
            if not 0 <= real < n_layer:
                raise ConfigError(
                    "invalid MoE layers",
                    [("moe.layers", f"layer {index} is out of range for {n_layer} layers")],
                )
            resolved.append(real)
        return sorted(set(resolved))


class CollapseConfig(StrictModel):
    """Collapse detection: warn when one expert takes > threshold of a layer's assignments."""

    threshold: float = Field(0.60, gt=0, le=1)
    patience: int = Field(3, ge=1)
    stop: bool = Field(False, description="stop the run after `patience` consecutive warnings")


class WandbConfig(StrictModel):
    """Where the `wandb` sink logs; unset fields fall back to W&B's own defaults and env vars."""

    project: str | None = Field(None, description="W&B project (default: WANDB_PROJECT)")
    entity: str | None = Field(None, description="W&B team or user (default: WANDB_ENTITY)")
    tags: list[str] = Field(default_factory=list)
    mode: Literal["online", "offline", "disabled"] | None = Field(
        None, description="None: WANDB_MODE, else online"
    )


class TrainConfig(StrictModel):
    """The optimisation loop, logging, evaluation and checkpoint cadence."""

    max_steps: int = Field(1000, ge=1)
    batch_size: int = Field(2, ge=1)
    grad_accum: int = Field(4, ge=1)
    batch_mixing: Literal["mixed", "domain"] = Field(
        "mixed",
        description="mixed: batches drawn from all domains; domain: each micro-batch from one "
        "domain, domains taking turns, so only the optimizer step's global batch mixes them "
        "(where micro-batch and global-batch load balancing differ, Qiu et al. 2025)",
    )
    lr: float = Field(5e-5, gt=0)
    weight_decay: float = Field(0.01, ge=0)
    warmup_fraction: float = Field(0.1, ge=0, le=1)
    min_lr_ratio: float = Field(0.0, ge=0, le=1)
    grad_clip: float | None = Field(1.0, gt=0)
    log_every: int = Field(10, ge=1)
    router_log_every: int = Field(100, ge=1)
    eval_every: int = Field(200, ge=1)
    eval_max_blocks: int | None = Field(None, ge=1)
    save_every: int = Field(500, ge=1)
    keep_last: int = Field(3, ge=1)
    seed: int = Field(
        0, ge=0, le=SEED_MAX, description="seeds torch, numpy and random (numpy's range)"
    )
    device: Literal["auto", "cpu", "cuda", "mps"] = "auto"
    precision: Literal["auto", "fp32", "bf16"] = Field(
        "auto",
        description="auto: bf16 autocast on CUDA and on a CPU with bf16 tiles (AMX), fp32 "
        "elsewhere; recorded in run.json, kept on resume",
    )
    num_threads: int | None = Field(None, ge=1, description="torch CPU threads; None = default")
    compile: bool = Field(False, description="torch.compile the model for training")
    parallel: Literal["ddp", "fsdp"] = Field(
        "ddp",
        description="under torchrun: ddp replicates the model on every rank; fsdp shards "
        "parameters, gradients and optimizer state across ranks (FSDP2, docs/scaling.md)",
    )
    sinks: list[Literal["tensorboard", "wandb"]] = Field(default_factory=list)
    wandb: WandbConfig = Field(default_factory=WandbConfig)
    collapse: CollapseConfig = Field(default_factory=CollapseConfig)


class RunConfig(StrictModel):
    """Everything one study run needs; saved as config.yaml in the run directory."""

    name: str = "run"
    description: str = ""
    data: DataConfig = Field(default_factory=DataConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    moe: MoEConfig = Field(default_factory=MoEConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)


PRESET_PACKAGE = "moectl.presets"


def preset_names() -> list[str]:
    """Names of the presets shipped with the package."""
    folder = resources.files(PRESET_PACKAGE)
    return sorted(p.name[: -len(".yaml")] for p in folder.iterdir() if p.name.endswith(".yaml"))


def load_preset(name: str) -> dict[str, Any]:
    """The raw dict of a preset, with `extends:` chains merged (child wins)."""
    seen: list[str] = []
    return _load_preset(name, seen)


def _load_preset(name: str, seen: list[str]) -> dict[str, Any]:
    if name in seen:
        raise ConfigError(f"preset cycle: {' -> '.join([*seen, name])}")
    resource = resources.files(PRESET_PACKAGE) / f"{name}.yaml"
    if not resource.is_file():
        raise ConfigError(
            f"unknown preset '{name}'{did_you_mean(name, preset_names())}",
            hint="`moectl presets` lists them with descriptions",
        )
    raw = load_yaml(resource.read_text(encoding="utf-8"), f"preset {name}") or {}
    parent = raw.pop("extends", None)
    if parent is None:
        return raw
    return deep_merge(_load_preset(parent, [*seen, name]), raw)


def deep_merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """A new dict: `override` merged into `base`, recursing into nested dicts."""
    merged = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def parse_override(text: str) -> dict[str, Any]:
    """`a.b.c=value` -> {"a": {"b": {"c": value}}}, the value parsed as a YAML scalar or list."""
    key, sep, raw_value = text.partition("=")
    key = key.strip()
    if not sep or not key or any(not part for part in key.split(".")):
        raise ConfigError(
            f"cannot parse override '{text}'",
            hint="write --set section.key=value, e.g. train.lr=1e-3",
        )
    try:
        value = yaml.safe_load(raw_value) if raw_value.strip() else None
    except yaml.YAMLError as exc:
        raise ConfigError(f"cannot parse the value of override '{text}': {exc}") from None
    value = _yaml11_float(value)
    nested: dict[str, Any] = {}
    cursor = nested
    parts = key.split(".")
    for part in parts[:-1]:
        cursor = cursor.setdefault(part, {})
    cursor[parts[-1]] = value
    return nested


def flatten(raw: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """A nested config mapping as {"section.key": value} (an empty mapping is a value)."""
    flat: dict[str, Any] = {}
    for key, value in raw.items():
        if isinstance(value, dict) and value:
            flat.update(flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def config_file_overrides(path: Path) -> list[str]:
    """A YAML config file as `--set` overrides, for commands that hand their settings on as
    overrides (quickstart's stages)."""
    return as_overrides(read_config_file(path))


def as_overrides(raw: dict[str, Any]) -> list[str]:
    """A nested config mapping as `--set` overrides (`model.n_embd=128`), each value as JSON,
    which YAML reads back as it was."""
    import json

    return [f"{key}={json.dumps(value)}" for key, value in flatten(raw).items()]


def _yaml11_float(value: Any) -> Any:
    """PyYAML reads '1e-3' (no dot) as a string; users mean the number."""
    if isinstance(value, str):
        try:
            return float(value) if any(c in value.lower() for c in ".e") else value
        except ValueError:
            return value
    return value


class _DuplicateKey(Exception):
    def __init__(self, key: Any, line: int) -> None:
        super().__init__(key, line)
        self.key, self.line = key, line


class _UniqueKeyLoader(yaml.SafeLoader):
    """PyYAML's safe loader, except that a key given twice in one mapping is an error: plain
    YAML keeps the last value, so a setting written twice would silently lose one of them."""

    def construct_mapping(self, node: yaml.Node, deep: bool = False) -> dict[Any, Any]:
        if isinstance(node, yaml.MappingNode):
            seen: set[Any] = set()
            for key_node, _ in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":
                    continue
                key = self.construct_object(key_node, deep=True)
                try:
                    if key in seen:
                        raise _DuplicateKey(key, key_node.start_mark.line + 1)
                    seen.add(key)
                except TypeError:  # an unhashable key: the base loader says what is wrong
                    continue
        return super().construct_mapping(node, deep=deep)


def load_yaml(text: str, source: str | Path) -> Any:
    """The YAML document in `text` (from `source`, named in errors); a ConfigError for invalid
    YAML or a key given twice in one mapping, naming the key and its line."""
    try:
        return yaml.load(text, Loader=_UniqueKeyLoader)  # a SafeLoader
    except _DuplicateKey as dup:
        raise ConfigError(
            f"{source} line {dup.line}: duplicate key '{dup.key}'",
            hint="keep one of the two; YAML would silently use only the last",
        ) from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{source} is not valid YAML: {exc}") from None


def read_yaml(path: Path, hint: str | None = None) -> Any:
    """The YAML document in the file `path`; a MoectlError naming the file when it cannot be
    read, is not text, is not YAML or repeats a key."""
    return load_yaml(read_text(path, hint), path)


def read_config_file(path: Path) -> dict[str, Any]:
    """The mapping in a YAML config file, or a ConfigError saying what is wrong with it."""
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}", hint="check the --config path")
    raw = read_yaml(path, hint="check the --config path")
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise ConfigError(
            f"config file {path} must hold a mapping of sections, not {type(raw).__name__}"
        )
    return raw


def check_context(config: RunConfig, block_size: int) -> None:
    """Refuse a model context shorter than the corpus blocks it would train on (positions past
    the context have no embedding), before a run writes anything."""
    positions = config.model.n_positions
    if positions is not None and positions < block_size:
        raise MoectlError(
            f"model.n_positions {positions} is shorter than the corpus blocks of {block_size} "
            "tokens",
            hint=f"set model.n_positions to {block_size} or more, or leave it unset (it "
            "defaults to the block size)",
        )


def validate(model_cls: type[StrictModel], raw: dict[str, Any], what: str = "configuration"):
    """Validate `raw` against `model_cls`, turning pydantic errors into one ConfigError."""
    try:
        return model_cls.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(f"invalid {what}", validation_problems(exc, model_cls)) from None


# Fields users reach for that moectl spells another way: an unknown one suggests the real one.
_FIELD_ALIASES = {"tensorboard": "sinks=[tensorboard]"}


def validation_problems(
    exc: ValidationError, model_cls: type[BaseModel] | None = None
) -> list[tuple[str, str]]:
    """(dotted field path, message) for each problem pydantic found; an unknown key names the
    closest known one of its section when `model_cls` is given."""
    problems = []
    for err in exc.errors():
        path = ".".join(str(p) for p in err["loc"]) or "(root)"
        message = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            known = _section_fields(model_cls, err["loc"][:-1]) if model_cls else []
            name = str(err["loc"][-1])
            alias = _FIELD_ALIASES.get(name)
            if alias is not None and alias.partition("=")[0] in known:
                message = f"unknown field (did you mean '{alias}'?)"
            else:
                message = "unknown field" + (did_you_mean(name, known) or "")
        problems.append((path, message))
    return problems


def preset_description(name: str) -> str:
    """A preset's one-line description (its own or the nearest one it extends)."""
    return str(load_preset(name).get("description", ""))


def _section_fields(model_cls: type[BaseModel], loc: tuple[Any, ...]) -> list[str]:
    """The field names of the config section at `loc` (e.g. ("train",) -> TrainConfig's;
    ("arms", 0) -> an experiment arm's: a list index selects the list's item)."""
    for part in loc:
        if isinstance(part, int):
            continue
        field = model_cls.model_fields.get(str(part))
        section = _model_in(field.annotation) if field is not None else None
        if section is None:
            return []
        model_cls = section
    return list(model_cls.model_fields)


def _model_in(annotation: Any) -> type[BaseModel] | None:
    """The pydantic model an annotation holds: itself, or a list's or an optional's item."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in typing.get_args(annotation):
        found = _model_in(arg)
        if found is not None:
            return found
    return None


def resolve_run_config(
    preset: str | None = None,
    config_file: Path | None = None,
    overrides: list[str] | None = None,
    base: dict[str, Any] | None = None,
) -> RunConfig:
    """Merge base < preset < config file < overrides and validate the result as a RunConfig."""
    raw: dict[str, Any] = copy.deepcopy(base) if base else {}
    if preset:
        raw = deep_merge(raw, load_preset(preset))
    if config_file is not None:
        raw = deep_merge(raw, read_config_file(config_file))
    for text in overrides or []:
        raw = deep_merge(raw, parse_override(text))
    return validate(RunConfig, raw, "run configuration")


def resolve_data_config(
    config_file: Path | None = None,
    overrides: list[str] | None = None,
    options: dict[str, Any] | None = None,
) -> DataConfig:
    """DataConfig from a config file's `data:` section, then CLI options, then `--set data.*`.

    A config file may be a whole RunConfig (its `data:` section is used) or bare DataConfig keys.
    """
    raw: dict[str, Any] = {}
    if config_file is not None:
        file_raw = read_config_file(config_file)
        run_sections = set(RunConfig.model_fields)
        is_run_file = bool(run_sections & set(file_raw))
        raw = (file_raw.get("data") or {}) if is_run_file else file_raw
    raw = deep_merge(raw, {k: v for k, v in (options or {}).items() if v is not None})
    for text in overrides or []:
        parsed = parse_override(text)
        raw = deep_merge(raw, parsed.get("data", parsed))
    return validate(DataConfig, raw, "data configuration")


def dump_yaml(config: BaseModel) -> str:
    """The config as YAML, in field order, for config.yaml and for printing."""
    return yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False)
