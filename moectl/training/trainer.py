"""`train_run`: the training loop that ties model, data, logging, checkpoints and DDP together.

The loop is written so that a run stopped at any step boundary (Ctrl-C, SIGTERM, a collapse
stop) and resumed from its checkpoint replays exactly what an uninterrupted run would have done:
the data order is a function of (seed, epoch, position), every RNG is checkpointed, and all
partial accumulators (metric window, routing counts, collapse streak) travel in the state.
"""

from __future__ import annotations

import contextlib
import math
import random
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from moectl import fs
from moectl.config import RunConfig, check_context
from moectl.data.store import Corpus, load_corpus
from moectl.device import resolve_device
from moectl.errors import RunFailure, TrainingError
from moectl.model.compat import check_model_fits_corpus
from moectl.model.initial import write_init_record
from moectl.model.io import read_meta, save_model
from moectl.model.routing import (
    balance_states,
    last_router_stats,
    moe_layers,
    set_router_progress,
)
from moectl.progress import ProgressCallback, report
from moectl.rundir.layout import BEST_DIR, CHECKPOINTS, METRICS_NAME, ROUTING_NAME
from moectl.rundir.locate import artifact_step
from moectl.rundir.records import Amendment, EvalRow, EvalScores, RoutingRow, TrainRow
from moectl.rundir.writing import (
    JsonlWriter,
    check_run_dir,
    lock_run_dir,
    resolve_resume,
    resume_amendments,
    start_run,
    truncate_after,
)
from moectl.training.balancing import StepCounts, count_before_step
from moectl.training.batches import eval_subset, fetch, train_sampler
from moectl.training.checkpoint import (
    STATE_FORMAT,
    capture_rng_state,
    read_trainer_state,
    restore_rng_state,
    write_checkpoint,
)
from moectl.training.collapse import CollapseDetector
from moectl.training.compiling import check_compile, compile_model, synchronize
from moectl.training.distributed import (
    DistContext,
    all_reduce_sum,
    any_rank,
    barrier,
    init_distributed,
    launched_world_size,
    shard_rows,
    shutdown,
)
from moectl.training.evaluation import evaluate_blocks
from moectl.training.results import StopReason, TrainResult
from moectl.training.routing_log import RoutingAccumulator
from moectl.training.schedule import build_optimizer
from moectl.training.setup import (
    check_init_routing,
    config_of_artifact,
    config_of_pretrained,
    configure_routers,
    fresh_model,
    model_meta,
    resumed_model,
)
from moectl.training.sharding import (
    check_parallel,
    full_model_state,
    full_tensor,
    load_optimizer_state,
    optimizer_state,
    shard_model,
)
from moectl.training.signals import StopRequest
from moectl.training.sinks import MetricSink, build_sinks, check_sinks, log_row
from moectl.training.step import (
    MetricWindow,
    autocast_context,
    forward_losses,
    token_domains,
)


def train_run(
    config: RunConfig,
    data_dir: str | Path,
    run_dir: str | Path,
    *,
    resume: Path | bool | None = None,
    init_from: str | Path | None = None,
    callback: ProgressCallback | None = None,
) -> TrainResult:
    """Train `config` on the prepared corpus in `data_dir`, recording everything in `run_dir`.

    `resume=True` continues from the run's latest checkpoint, a path from that checkpoint;
    `init_from` starts a new run from a model artifact (upcycling it if it is dense).
    The config.yaml written records what runs: its data section is the corpus manifest's. A
    resume must bring the run's saved config, except for train.max_steps and train.parallel
    (each recorded in run.json as an amendment); a resume of a run already at max_steps
    returns `already_complete` and touches nothing. While it writes, the run directory is
    locked against a second writer.
    Under torchrun this joins the process group and trains with DDP, or with FSDP when
    train.parallel is fsdp; only rank 0 writes.
    """
    data_dir, run_dir = Path(data_dir), Path(run_dir)
    init_path = Path(init_from) if init_from is not None else None
    config, corpus = _checked_inputs(config, data_dir, run_dir, resume, init_path)
    fresh_checkpoint = None if resume else resolve_resume(run_dir, None)
    device = resolve_device(config.train.device)
    if config.train.compile:
        check_compile(device)
    if config.train.num_threads is not None:
        torch.set_num_threads(config.train.num_threads)
    ctx = init_distributed(device.type)
    if device.type == "cuda" and ctx.enabled:
        device = torch.device("cuda", ctx.local_rank)
    fresh_dir = not run_dir.exists()
    lock = lock_run_dir(run_dir) if ctx.is_main else contextlib.nullcontext()
    try:
        with lock:
            try:
                # The checkpoint is read only under the lock: no other writer prunes it meanwhile.
                checkpoint = resolve_resume(run_dir, resume) if resume else fresh_checkpoint
                amendments: list[Amendment] = []
                if checkpoint is not None:
                    step = artifact_step(checkpoint)
                    amendments = resume_amendments(run_dir, config, step)
                    if step >= config.train.max_steps:
                        return TrainResult(
                            run_dir=str(run_dir),
                            steps=step,
                            max_steps=config.train.max_steps,
                            stop_reason="already_complete",
                            resumed_from=str(checkpoint),
                        )
                    check_model_fits_corpus(read_meta(checkpoint), corpus, str(checkpoint))
                if ctx.is_main:
                    fs.remove_stale_temps(run_dir)
                    fs.remove_stale_temps(run_dir / CHECKPOINTS)
                trainer = _Trainer(config, corpus, run_dir, device, ctx, callback)
                trainer.setup(checkpoint, init_path, data_dir, amendments)
            except BaseException:
                if fresh_dir and ctx.is_main:
                    shutil.rmtree(run_dir, ignore_errors=True)
                raise
            return trainer.run()
    finally:
        shutdown(ctx)


def check_run(
    config: RunConfig,
    data_dir: str | Path,
    run_dir: str | Path,
    *,
    resume: Path | bool | None = None,
    init_from: str | Path | None = None,
) -> None:
    """Every check `train_run` makes before it builds a model (config against corpus, run
    directory, sinks, parallelism, --init-from), without writing: a caller validates first
    and only then says that training starts."""
    init_path = Path(init_from) if init_from is not None else None
    _checked_inputs(config, Path(data_dir), Path(run_dir), resume, init_path)


def _checked_inputs(
    config: RunConfig,
    data_dir: Path,
    run_dir: Path,
    resume: Path | bool | None,
    init_path: Path | None,
) -> tuple[RunConfig, Corpus]:
    """The config completed from the corpus (and --init-from artifact) once every input checks."""
    if resume and init_path is not None:
        raise TrainingError(
            "--resume and --init-from cannot be combined: a resumed run continues its own model",
            hint="drop --init-from to resume, or start a new --run-dir from the artifact",
        )
    check_sinks(config.train.sinks)
    check_parallel(config.train, launched_world_size())
    if init_path is not None and not init_path.is_dir():
        raise TrainingError(
            f"--init-from {init_path} does not exist",
            hint="pass a model directory such as runs/dense/best",
        )
    check_run_dir(run_dir, resuming=bool(resume))
    fs.check_writable(run_dir, "--run-dir")
    corpus = load_corpus(data_dir)
    corpus.tokenizer()  # the whole corpus is checked before step 1, not at the first save
    config = config_of_pretrained(config.model_copy(update={"data": corpus.manifest.config}))
    check_context(config, corpus.block_size)
    if init_path is not None:
        artifact = read_meta(init_path)
        check_model_fits_corpus(artifact, corpus, str(init_path))
        config = config_of_artifact(config, artifact)
        check_init_routing(config, artifact, init_path)
    return config, corpus


def _seed_everything(seed: int) -> None:
    torch.manual_seed(seed)
    np.random.seed(seed)
    random.seed(seed)


class _Trainer:
    """State of one training session; `setup` builds or restores it, `run` steps it."""

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
        self.saved_step: int | None = None
        self.grad_norm: float | torch.Tensor = 0.0
        self.lr = 0.0
        self.last_tps = 0.0
        self.last_max_share: float | None = None
        self.logged_step: int | None = None

    def setup(
        self,
        checkpoint: Path | None,
        init_from: Path | None,
        data_dir: Path,
        amendments: list[Amendment],
    ) -> None:
        cfg = self.train_cfg
        shard_rows(self.ctx, cfg.batch_size)
        _seed_everything(cfg.seed)
        init_record = None
        if checkpoint is None:
            model, init_record = fresh_model(self.config, self.corpus, init_from)
        else:
            state = read_trainer_state(checkpoint)
            model = resumed_model(self.config, checkpoint)
        configure_routers(model, self.config)
        self.sharded = cfg.parallel == "fsdp"
        # FSDP moves each block to the device as it shards it (the whole model need not fit).
        self.core = model if self.sharded else model.to(self.device)
        self.moe_layers = list(moe_layers(self.core))
        if init_record is not None and self.moe_layers and self.ctx.is_main:
            # Before sharding: the record digests the whole step-0 model.
            write_init_record(self.run_dir, self.core, init_record)
        if self.sharded:
            shard_model(self.core, self.device, self.ctx.world_size)
        self.optimizer, self.scheduler = build_optimizer(
            self.core, cfg, self.config.moe.router_lr_scale
        )
        train_domains = np.asarray(self.corpus.train.with_format("numpy")["domain"])
        self.sampler = train_sampler(cfg.batch_mixing, train_domains, cfg.batch_size, cfg.seed)
        self.window = MetricWindow(len(self.domains), self.device)
        n_experts = self.config.moe.routed_experts
        self.routing = RoutingAccumulator(self.moe_layers, n_experts, self.domains, self.device)
        self.detector = CollapseDetector(cfg.collapse)
        self.step_counts = StepCounts.after_step(self.core, self.device)
        if checkpoint is not None:
            self._restore(state)
            self.resumed_from = checkpoint
        self.model: nn.Module = self.core
        if self.ctx.enabled and not self.sharded:
            from torch.nn.parallel import DistributedDataParallel

            device_ids = [self.device.index] if self.device.type == "cuda" else None
            # Stacked experts get a gradient (zero for an idle expert) at every step.
            self.model = DistributedDataParallel(self.core, device_ids=device_ids)
        if cfg.compile:
            self.model = compile_model(self.model)
        self.train_data = self.corpus.train.with_format("numpy")
        eval_data = self.corpus.eval.with_format("numpy")
        domain_ids = np.asarray(eval_data["domain"])
        subset = eval_subset(domain_ids, cfg.eval_max_blocks, cfg.seed)
        self.eval_indices = subset[self.ctx.rank :: self.ctx.world_size]
        # A sharded forward is a collective: every rank runs as many as the busiest rank.
        busiest = math.ceil(len(subset) / self.ctx.world_size)
        self.eval_forwards = math.ceil(busiest / cfg.batch_size) if self.sharded else 0
        self.eval_data = eval_data
        self.autocast = autocast_context(self.device, cfg.precision)
        self.writers: dict[str, JsonlWriter] = {}
        self.sinks: list[MetricSink] = []
        if self.ctx.is_main:
            logs = [self.run_dir / METRICS_NAME, self.run_dir / ROUTING_NAME]
            truncate_after(logs, self.step)  # a damaged log is refused before any write
            start_run(
                self.run_dir, self.config, data_dir, init_from, self.domains, checkpoint, amendments
            )
            self.writers = {
                "metrics": JsonlWriter(self.run_dir / METRICS_NAME),
                "routing": JsonlWriter(self.run_dir / ROUTING_NAME),
            }
            resume_step = self.step if checkpoint is not None else None
            self.sinks = build_sinks(self.config, self.run_dir, resume_step)

    def _restore(self, state: dict[str, Any]) -> None:
        self.step = int(state["step"])
        self.tokens = int(state["tokens"])
        load_optimizer_state(self.core, self.optimizer, state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.sampler.load_state_dict(state["data"])
        self.window.load_state_dict(state["window"])
        self._restore_routing(state.get("routing_ranks", [state["routing"]]))
        self.detector.load_state_dict(state["collapse"])
        self.best_step = state["best"]["step"]
        self.best_loss = state["best"]["loss"]
        rng = state["rng"]
        restore_rng_state(rng[self.ctx.rank] if len(rng) == self.ctx.world_size else rng[0])

    def _restore_routing(self, ranks: list[dict[str, Any]]) -> None:
        """Each rank's partial routing counts are its own (they are summed across ranks only
        when a row is written): a rank takes back its own, or on another world size the main
        rank takes the sum of all and the others start empty."""
        if len(ranks) == self.ctx.world_size:
            self.routing.load_state_dict(ranks[self.ctx.rank])
            return
        if not self.ctx.is_main:
            return
        self.routing.load_state_dict(ranks[0])
        other = RoutingAccumulator(self.routing.layers, self.routing.n_experts, self.domains)
        for state in ranks[1:]:
            other.load_state_dict(state)
            for total, part in zip(self.routing.tensors(), other.tensors(), strict=True):
                total += part.to(total.device, total.dtype)

    def _gathered(self, value: dict[str, Any]) -> list[dict[str, Any]]:
        """`value` from every rank, in rank order (a one-element list in one process)."""
        if not self.ctx.enabled:
            return [value]
        values: list[Any] = [None] * self.ctx.world_size
        dist.all_gather_object(values, value)
        return values

    def run(self) -> TrainResult:
        cfg = self.train_cfg
        stop_reason: StopReason = "completed"
        stop_signal: str | None = None
        session_tokens, session_seconds = 0, 0.0
        try:
            with StopRequest() as stop:
                while self.step < cfg.max_steps:
                    started = time.perf_counter()
                    step_tokens = self._train_step()
                    if self.step % cfg.log_every == 0 or self.step == cfg.max_steps:
                        # Steps queue on the GPU without waiting; the window's time must
                        # include their execution before its throughput is logged.
                        synchronize(self.device)
                    elapsed = time.perf_counter() - started
                    session_tokens += step_tokens
                    session_seconds += elapsed
                    self.window.seconds += elapsed
                    collapsed = self._after_step()
                    final = self.step == cfg.max_steps or collapsed
                    if final:
                        stop_reason = "collapse" if collapsed else "completed"
                        self._final_logs()
                        self._report_step()
                        self._save_checkpoint()
                        break
                    self._report_step()
                    if any_rank(self.ctx, stop.requested, self.device):
                        stop_reason, stop_signal = "interrupted", stop.signal_name
                        if self.saved_step != self.step:
                            self._save_checkpoint()
                        break
        finally:
            for writer in self.writers.values():
                writer.close()
            for sink in self.sinks:
                sink.close()
        return TrainResult(
            run_dir=str(self.run_dir),
            steps=self.step,
            max_steps=cfg.max_steps,
            stop_reason=stop_reason,
            stop_signal=stop_signal,
            best_step=self.best_step,
            best_eval_loss=self.best_loss,
            last_eval=self.last_eval,
            last_train_loss=self.last_train_loss,
            last_checkpoint=str(self.last_checkpoint) if self.last_checkpoint else None,
            collapse_events=self.detector.events,
            tokens_per_s=session_tokens / session_seconds if session_seconds > 0 else 0.0,
            resumed_from=str(self.resumed_from) if self.resumed_from else None,
            world_size=self.ctx.world_size,
        )

    def _train_step(self) -> int:
        """One optimizer update over grad_accum micro-batches; returns the global tokens used."""
        cfg = self.train_cfg
        set_router_progress(self.core, self.step, cfg.max_steps)
        self.model.train()
        rows = shard_rows(self.ctx, cfg.batch_size)
        n_domains = len(self.domains)
        values = torch.zeros(4, device=self.device, dtype=torch.float64)
        domain_sum = torch.zeros(n_domains, device=self.device, dtype=torch.float64)
        domain_count = torch.zeros(n_domains, device=self.device, dtype=torch.float64)
        batches = [
            fetch(self.train_data, self.sampler.next_batch()[rows], self.device)
            for _ in range(cfg.grad_accum)
        ]
        inputs = [input_ids for input_ids, _ in batches]
        count_before_step(self.core, inputs, self.autocast, self.ctx, self.device)
        for micro, (input_ids, domain) in enumerate(batches):
            last = micro == cfg.grad_accum - 1
            # DDP all-reduces once per step; FSDP reduce-scatters each micro-batch's gradients
            # into the shards (so no rank ever holds a whole unsharded gradient).
            ddp = self.ctx.enabled and not self.sharded
            sync = self.model.no_sync() if ddp and not last else contextlib.nullcontext()
            with sync:
                losses = forward_losses(
                    self.model,
                    self.core,
                    input_ids,
                    domain,
                    n_domains,
                    self.config.moe,
                    self.autocast,
                )
                (losses.loss / cfg.grad_accum).backward()
            if self.moe_layers:
                stats = last_router_stats(self.core)
                self.routing.update(stats, token_domains(domain, input_ids.shape[1]))
                self.step_counts.add(stats)
            parts = [losses.loss.detach(), losses.lm_loss, losses.lb_loss, losses.z_loss]
            values += torch.stack([p.double() for p in parts]) / cfg.grad_accum
            domain_sum += losses.domain_sum
            domain_count += losses.domain_count
        if self.step == 0 and self.moe_layers:
            self._log_initial_routing()
        clip = cfg.grad_clip if cfg.grad_clip is not None else math.inf
        grad_norm = torch.nn.utils.clip_grad_norm_(self.core.parameters(), clip)
        self.lr = self.optimizer.param_groups[0]["lr"]
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.step_counts.end_step(self.ctx, self.device)
        merged = torch.cat([values, domain_sum, domain_count])
        all_reduce_sum(self.ctx, [merged], self.device)
        values = merged[:4] / self.ctx.world_size
        self.window.add(values, merged[4 : 4 + n_domains], merged[4 + n_domains :])
        self.grad_norm = full_tensor(grad_norm.detach())  # read when a row is written
        self.step += 1
        step_tokens = cfg.batch_size * cfg.grad_accum * self.corpus.block_size
        self.tokens += step_tokens
        self.window.tokens += step_tokens
        return step_tokens

    def _after_step(self) -> bool:
        """Logging, routing, eval and checkpoints due at this step; True on a collapse stop."""
        cfg = self.train_cfg
        collapsed = False
        if self.step % cfg.log_every == 0:
            self._log_train()
        if self.moe_layers and self.step % cfg.router_log_every == 0:
            collapsed = self._log_routing()
        if self.step % cfg.eval_every == 0:
            self._evaluate()
        if self.step % cfg.save_every == 0 and self.step != cfg.max_steps and not collapsed:
            self._save_checkpoint()
        return collapsed

    def _report_step(self) -> None:
        """The `train` progress event of this step (`logged`: a train row was just written)."""
        report(
            self.callback,
            "train",
            self.step,
            self.train_cfg.max_steps,
            loss=self.last_train_loss,
            lr=self.lr,
            tokens_per_s=self._tokens_per_s,
            max_share=self.last_max_share,
            logged=self.logged_step == self.step,
        )

    def _final_logs(self) -> None:
        """The last step always gets a train row, a routing row and an eval."""
        cfg = self.train_cfg
        if self.window.steps:
            self._log_train()
        if self.moe_layers and self.step % cfg.router_log_every != 0:
            self._log_routing()
        if self.step % cfg.eval_every != 0:
            self._evaluate()

    @property
    def _tokens_per_s(self) -> float:
        """Throughput over the current log window (the last window's right after a row)."""
        window = self.window
        return window.tokens / window.seconds if window.seconds > 0 else self.last_tps

    def _log_train(self) -> None:
        window = self.window
        sums = window.sums.cpu() / max(1, window.steps)
        domain_sum, domain_count = window.domain_sum.cpu(), window.domain_count.cpu()
        domain_loss = {
            domain: float(domain_sum[d] / domain_count[d])
            for d, domain in enumerate(self.domains)
            if domain_count[d] > 0
        }
        self.last_tps = self._tokens_per_s
        row = TrainRow(
            step=self.step,
            tokens=self.tokens,
            lr=self.lr,
            loss=float(sums[0]),
            lm_loss=float(sums[1]),
            lb_loss=float(sums[2]) if self.moe_layers else None,
            z_loss=float(sums[3]) if self.moe_layers else None,
            grad_norm=float(self.grad_norm),
            tokens_per_s=self.last_tps,
            domain_loss=domain_loss,
            time=time.time(),
        )
        self.last_train_loss = row.loss
        self.logged_step = row.step
        if self.moe_layers:
            self.last_max_share = max(self.routing.max_fractions().values())
        window.reset()
        self._write("metrics", row, "train")
        if not math.isfinite(row.loss):
            raise RunFailure(
                f"the training loss is {row.loss} at step {row.step}; training stopped",
                hint="lower train.lr and train again in a new --run-dir (this run's "
                "metrics.jsonl holds the steps before it)",
            )

    def _log_initial_routing(self) -> None:
        """The step-0 routing row: the first update's forward passes, which run on the model as
        initialized, so the log starts from the init router's routing. It is not a collapse
        check (`collapse` is null): training has not touched the router yet."""
        all_reduce_sum(self.ctx, self.routing.tensors(), self.device)
        row = self.routing.row(0, balance_states(self.core))
        row = RoutingRow.model_validate({**row, "collapse": None})
        self.routing.reset()
        self._write("routing", row, "routing")

    def _log_routing(self) -> bool:
        all_reduce_sum(self.ctx, self.routing.tensors(), self.device)
        status = self.detector.update(self.step, self.routing.max_fractions())
        row = self.routing.row(self.step, balance_states(self.core))
        row = RoutingRow.model_validate({**row, "collapse": status})
        self.routing.reset()
        self._write("routing", row, "routing")
        if status.warning:
            shares = {k: round(v.max_fraction, 3) for k, v in row.layers.items()}
            report(
                self.callback,
                "collapse",
                self.step,
                self.train_cfg.max_steps,
                message=f"step {self.step}: busiest expert over "
                f"{self.train_cfg.collapse.threshold:.0%} in layers {status.layers} "
                f"(max shares {shares}); {status.consecutive} consecutive"
                + ("; stopping" if status.stop else ""),
                layers=status.layers,
                consecutive=status.consecutive,
                stop=status.stop,
            )
        return status.stop

    def _evaluate(self) -> None:
        result = evaluate_blocks(
            self.core,
            self.eval_data,
            self.eval_indices,
            len(self.domains),
            self.train_cfg.batch_size,
            self.device,
            self.autocast,
            self.ctx,
            self.eval_forwards,
        )
        domain_loss = {
            domain: result.domain_loss[d]
            for d, domain in enumerate(self.domains)
            if result.domain_loss[d] is not None
        }
        scores = EvalScores.of(result.loss, domain_loss)
        row = EvalRow(
            step=self.step,
            **scores.model_dump(),
            lb_loss=result.lb_loss if self.moe_layers else None,
            z_loss=result.z_loss if self.moe_layers else None,
        )
        self.last_eval = scores
        self._write("metrics", row, "eval")
        report(self.callback, "eval", self.step, self.train_cfg.max_steps, **scores.model_dump())
        if self.best_loss is None or result.loss < self.best_loss:
            self.best_loss, self.best_step = result.loss, self.step
            weights = self._full_weights()
            if self.ctx.is_main:
                meta = model_meta(self.core, self.config, self.corpus, self.step, self._metrics())
                save_model(
                    self.core,
                    self.run_dir / BEST_DIR,
                    meta,
                    tokenizer=self.corpus.tokenizer(),
                    state=weights,
                )
            barrier(self.ctx)

    def _full_weights(self) -> dict[str, torch.Tensor] | None:
        """The sharded model's gathered weights (a collective; on rank 0), or None when
        `self.core` holds them whole."""
        return full_model_state(self.core) if self.sharded else None

    def _metrics(self) -> dict[str, Any]:
        """What model.json records of the run at this step."""
        evaluated = self.last_eval.model_dump() if self.last_eval else None
        return {"train_loss": self.last_train_loss, "eval": evaluated}

    def _write(self, writer: str, row: TrainRow | EvalRow | RoutingRow, kind: str) -> None:
        if not self.ctx.is_main:
            return
        self.writers[writer].write(row)
        log_row(self.sinks, kind, row.model_dump(mode="json"))

    def _trainer_state(self) -> dict[str, Any]:
        routing = self.routing.state_dict()
        state = {
            "format_version": STATE_FORMAT,
            "step": self.step,
            "tokens": self.tokens,
            "world_size": self.ctx.world_size,
            "optimizer": optimizer_state(self.core, self.optimizer),
            "scheduler": self.scheduler.state_dict(),
            "rng": self._gathered(capture_rng_state()),
            "data": self.sampler.state_dict(),
            "window": self.window.state_dict(),
            "routing": routing,
            "collapse": self.detector.state_dict(),
            "best": {"step": self.best_step, "loss": self.best_loss},
        }
        if self.ctx.enabled:
            # Under DDP each rank holds its own partial counts; "routing" stays rank 0's so
            # checkpoints keep their format for readers that predate this key.
            state["routing_ranks"] = self._gathered(routing)
        return state

    def _save_checkpoint(self) -> None:
        self.saved_step = self.step
        state = self._trainer_state()
        weights = self._full_weights()
        if self.ctx.is_main:
            meta = model_meta(self.core, self.config, self.corpus, self.step, self._metrics())
            self.last_checkpoint = write_checkpoint(
                self.run_dir,
                self.step,
                lambda path: save_model(self.core, path, meta, state=weights),
                state,
                self.train_cfg.keep_last,
            )
            report(
                self.callback,
                "checkpoint",
                self.step,
                self.train_cfg.max_steps,
                message=str(self.last_checkpoint),
            )
        barrier(self.ctx)
