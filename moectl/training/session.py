"""The state of one training session and its set-up: the model (fresh, upcycled or restored),
its optimizer, data order and accumulators, the eval subset, and the run directory's logs.

A `Session` is what the trainer's steps share (`update.train_step`, the rows of `log_rows`, the
checkpoints of `saving`); `open_session` builds it, in the same order on every start, so that a
resumed session continues bit for bit where the checkpointed one stopped.
"""

from __future__ import annotations

import math
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist

from moectl.config import RunConfig
from moectl.data.store import Corpus
from moectl.device import Precision, resolve_precision
from moectl.model.initial import write_init_record
from moectl.model.routing import moe_layers
from moectl.progress import ProgressCallback
from moectl.rundir.layout import METRICS_NAME, ROUTING_NAME
from moectl.rundir.reading import read_run_info
from moectl.rundir.records import Amendment, EvalScores
from moectl.rundir.writing import JsonlWriter, start_run, truncate_after
from moectl.training.balancing import StepCounts
from moectl.training.batches import eval_subset, train_sampler
from moectl.training.checkpoint import read_trainer_state, restore_rng_state
from moectl.training.collapse import CollapseDetector
from moectl.training.compiling import compile_model
from moectl.training.distributed import DistContext, shard_rows
from moectl.training.routing_log import RoutingAccumulator
from moectl.training.schedule import build_optimizer
from moectl.training.setup import configure_routers, fresh_model, resumed_model
from moectl.training.sharding import full_model_state, load_optimizer_state, shard_model
from moectl.training.sinks import MetricSink, build_sinks
from moectl.training.step import MetricWindow, autocast_context


class Session:
    """Everything one training session holds; `open_session` fills it, the steps advance it."""

    def __init__(
        self,
        config: RunConfig,
        corpus: Corpus,
        run_dir: Path,
        device: torch.device,
        ctx: DistContext,
        callback: ProgressCallback | None,
    ) -> None:
        self.config = config
        self.train_cfg = config.train
        self.corpus = corpus
        self.run_dir = run_dir
        self.device = device
        self.ctx = ctx
        self.callback = callback
        self.domains = corpus.domains
        self.step = 0
        self.tokens = 0
        self.best_step: int | None = None
        self.best_loss: float | None = None
        self.last_eval: EvalScores | None = None
        self.last_train_loss: float | None = None
        self.last_checkpoint: Path | None = None
        self.resumed_from: Path | None = None
        self.precision: Precision = "fp32"
        self.saved_step: int | None = None
        self.grad_norm: float | torch.Tensor = 0.0
        self.lr = 0.0
        self.last_tps = 0.0
        self.last_max_share: float | None = None
        self.logged_step: int | None = None
        self.writers: dict[str, JsonlWriter] = {}
        self.sinks: list[MetricSink] = []

    @property
    def tokens_per_s(self) -> float:
        """Throughput over the current log window (the last window's right after a row)."""
        window = self.window
        return window.tokens / window.seconds if window.seconds > 0 else self.last_tps

    def gathered(self, value: dict[str, Any]) -> list[dict[str, Any]]:
        """`value` from every rank, in rank order (a one-element list in one process)."""
        if not self.ctx.enabled:
            return [value]
        values: list[Any] = [None] * self.ctx.world_size
        dist.all_gather_object(values, value)
        return values

    def full_weights(self) -> dict[str, torch.Tensor] | None:
        """The sharded model's gathered weights (a collective; on rank 0), or None when
        `self.core` holds them whole."""
        return full_model_state(self.core) if self.sharded else None

    def metrics(self) -> dict[str, Any]:
        """What model.json records of the run at this step."""
        evaluated = self.last_eval.model_dump() if self.last_eval else None
        return {"train_loss": self.last_train_loss, "eval": evaluated}

    def close(self) -> None:
        """Close the JSONL writers and the sinks (every finished row is already flushed)."""
        for writer in self.writers.values():
            writer.close()
        for sink in self.sinks:
            sink.close()


def open_session(
    session: Session,
    checkpoint: Path | None,
    init_from: Path | None,
    data_dir: Path,
    amendments: list[Amendment],
) -> None:
    """Set `session` up to train: a fresh (or --init-from) model, or one restored from
    `checkpoint` with every state it saved; then the eval subset and, on the main rank, the
    run directory's config, run.json and logs (cut back to the restored step)."""
    cfg = session.train_cfg
    shard_rows(session.ctx, cfg.batch_size)
    _seed_everything(cfg.seed)
    state = read_trainer_state(checkpoint) if checkpoint is not None else None
    session.precision = _precision(session, checkpoint)
    _build_model(session, checkpoint, init_from)
    _build_training_state(session)
    if state is not None:
        restore(session, state)
        session.resumed_from = checkpoint
    _wrap_model(session)
    _choose_eval_subset(session)
    if session.ctx.is_main:
        _open_logs(session, checkpoint, init_from, data_dir, amendments)


def _precision(session: Session, checkpoint: Path | None) -> Precision:
    """What `train.precision` resolves to on this device; a resumed run keeps what it recorded
    (run.json), so it continues in the precision it started in on any machine. A run from
    before precision was recorded resolved auto to fp32 on every CPU."""
    cfg = session.train_cfg
    if checkpoint is not None:
        info = read_run_info(session.run_dir)
        if info is not None and info.precision in ("fp32", "bf16"):
            return info.precision  # type: ignore[return-value]
        if info is not None and cfg.precision == "auto" and session.device.type != "cuda":
            return "fp32"
    return resolve_precision(session.device, cfg.precision)


def _seed_everything(seed: int) -> None:
    torch.manual_seed(seed)
    np.random.seed(seed)
    random.seed(seed)


def _build_model(session: Session, checkpoint: Path | None, init_from: Path | None) -> None:
    """The model on its device (sharded under FSDP), its routers configured; a fresh MoE
    model's step-0 record is written first."""
    init_record = None
    if checkpoint is None:
        model, init_record = fresh_model(session.config, session.corpus, init_from)
    else:
        model = resumed_model(session.config, checkpoint)
    configure_routers(model, session.config)
    session.sharded = session.train_cfg.parallel == "fsdp"
    # FSDP moves each block to the device as it shards it (the whole model need not fit).
    session.core = model if session.sharded else model.to(session.device)
    session.moe_layers = list(moe_layers(session.core))
    if init_record is not None and session.moe_layers and session.ctx.is_main:
        # Before sharding: the record digests the whole step-0 model.
        write_init_record(session.run_dir, session.core, init_record)
    if session.sharded:
        shard_model(session.core, session.device, session.ctx.world_size)


def _build_training_state(session: Session) -> None:
    """Optimizer and schedule, data order, metric window, routing counts, collapse detector
    and the balancing scheme's step counts, each at its start."""
    cfg, device = session.train_cfg, session.device
    session.optimizer, session.scheduler = build_optimizer(
        session.core, cfg, session.config.moe.router_lr_scale
    )
    train_domains = np.asarray(session.corpus.train.with_format("numpy")["domain"])
    session.sampler = train_sampler(cfg.batch_mixing, train_domains, cfg.batch_size, cfg.seed)
    session.window = MetricWindow(len(session.domains), device)
    n_experts = session.config.moe.routed_experts
    session.routing = RoutingAccumulator(session.moe_layers, n_experts, session.domains, device)
    session.detector = CollapseDetector(cfg.collapse)
    session.step_counts = StepCounts.after_step(session.core, device)


def restore(session: Session, state: dict[str, Any]) -> None:
    """Take back a checkpoint's trainer state (`saving.trainer_state` wrote it)."""
    session.step = int(state["step"])
    session.tokens = int(state["tokens"])
    load_optimizer_state(session.core, session.optimizer, state["optimizer"])
    session.scheduler.load_state_dict(state["scheduler"])
    session.sampler.load_state_dict(state["data"])
    session.window.load_state_dict(state["window"])
    _restore_routing(session, state.get("routing_ranks", [state["routing"]]))
    session.detector.load_state_dict(state["collapse"])
    session.best_step = state["best"]["step"]
    session.best_loss = state["best"]["loss"]
    rng = state["rng"]
    ctx = session.ctx
    restore_rng_state(rng[ctx.rank] if len(rng) == ctx.world_size else rng[0])


def _restore_routing(session: Session, ranks: list[dict[str, Any]]) -> None:
    """Each rank's partial routing counts are its own (they are summed across ranks only
    when a row is written): a rank takes back its own, or on another world size the main
    rank takes the sum of all and the others start empty."""
    ctx, routing = session.ctx, session.routing
    if len(ranks) == ctx.world_size:
        routing.load_state_dict(ranks[ctx.rank])
        return
    if not ctx.is_main:
        return
    routing.load_state_dict(ranks[0])
    other = RoutingAccumulator(routing.layers, routing.n_experts, session.domains)
    for state in ranks[1:]:
        other.load_state_dict(state)
        for total, part in zip(routing.tensors(), other.tensors(), strict=True):
            total += part.to(total.device, total.dtype)


def _wrap_model(session: Session) -> None:
    """`session.model`, what the forward runs: the core model, under DDP and compiled as the
    config asks (`session.core` stays the unwrapped model)."""
    session.model = session.core
    if session.ctx.enabled and not session.sharded:
        from torch.nn.parallel import DistributedDataParallel

        device = session.device
        device_ids = [device.index] if device.type == "cuda" else None
        # Stacked experts get a gradient (zero for an idle expert) at every step.
        session.model = DistributedDataParallel(session.core, device_ids=device_ids)
    if session.train_cfg.compile:
        session.model = compile_model(session.model)


def _choose_eval_subset(session: Session) -> None:
    """The train and eval data, this rank's share of the fixed eval subset, and how many
    forwards a sharded eval runs on every rank."""
    cfg, ctx = session.train_cfg, session.ctx
    session.train_data = session.corpus.train.with_format("numpy")
    eval_data = session.corpus.eval.with_format("numpy")
    domain_ids = np.asarray(eval_data["domain"])
    subset = eval_subset(domain_ids, cfg.eval_max_blocks, cfg.seed)
    session.eval_indices = subset[ctx.rank :: ctx.world_size]
    # A sharded forward is a collective: every rank runs as many as the busiest rank.
    busiest = math.ceil(len(subset) / ctx.world_size)
    session.eval_forwards = math.ceil(busiest / cfg.batch_size) if session.sharded else 0
    session.eval_data = eval_data
    session.autocast = autocast_context(session.device, session.precision)


def _open_logs(
    session: Session,
    checkpoint: Path | None,
    init_from: Path | None,
    data_dir: Path,
    amendments: list[Amendment],
) -> None:
    """config.yaml and run.json written, the logs cut back to the session's step and opened
    for appending, and the metric sinks built."""
    run_dir = session.run_dir
    logs = [run_dir / METRICS_NAME, run_dir / ROUTING_NAME]
    truncate_after(logs, session.step)  # a damaged log is refused before any write
    start_run(
        run_dir,
        session.config,
        data_dir,
        init_from,
        session.domains,
        checkpoint,
        amendments,
        precision=session.precision,
    )
    session.writers = {
        "metrics": JsonlWriter(run_dir / METRICS_NAME),
        "routing": JsonlWriter(run_dir / ROUTING_NAME),
    }
    resume_step = session.step if checkpoint is not None else None
    session.sinks = build_sinks(session.config, run_dir, resume_step)
