"""`train_run`: the training loop that ties model, data, logging, checkpoints and DDP together.

Read top to bottom: `train_run` checks its inputs and takes the run directory's lock, sets up a
`session.Session` (`open_session`), and `run_session` steps it (`update.train_step`), logging
(`log_rows`) and saving (`saving`) what each step is due, until `finish` says how it ended.

The loop is written so that a run stopped at any step boundary (Ctrl-C, SIGTERM, a collapse
stop) and resumed from its checkpoint replays exactly what an uninterrupted run would have done:
the data order is a function of (seed, epoch, position), every RNG is checkpointed, and all
partial accumulators (metric window, routing counts, collapse streak) travel in the state.
"""

from __future__ import annotations

import contextlib
import gc
import shutil
import time
from pathlib import Path

import torch

from moectl import fs
from moectl.allocator import retain_freed_memory
from moectl.config import RunConfig, check_context
from moectl.data.store import Corpus, load_corpus
from moectl.device import resolve_device
from moectl.errors import TrainingError
from moectl.interop.loading import read_meta
from moectl.model.compat import check_model_fits_corpus
from moectl.progress import ProgressCallback
from moectl.rundir.layout import CHECKPOINTS
from moectl.rundir.locate import artifact_step
from moectl.rundir.records import Amendment
from moectl.rundir.writing import check_run_dir, lock_run_dir, resolve_resume, resume_amendments
from moectl.training.compiling import check_compile, synchronize
from moectl.training.distributed import any_rank, init_distributed, launched_world_size, shutdown
from moectl.training.log_rows import log_eval, log_routing, log_train, report_step
from moectl.training.results import StopReason, TrainResult
from moectl.training.saving import save_checkpoint
from moectl.training.session import Session, open_session
from moectl.training.setup import check_init_routing, config_of_artifact, config_of_pretrained
from moectl.training.sharding import check_parallel
from moectl.training.signals import StopRequest
from moectl.training.sinks import check_sinks
from moectl.training.update import train_step


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
    if device.type == "cpu":
        retain_freed_memory()
    ctx = init_distributed(device.type)
    if device.type == "cuda" and ctx.enabled:
        device = torch.device("cuda", ctx.local_rank)
    fresh_dir = not run_dir.exists()
    lock = lock_run_dir(run_dir) if ctx.is_main else contextlib.nullcontext()
    session: Session | None = None
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
                session = Session(config, corpus, run_dir, device, ctx, callback)
                open_session(session, checkpoint, init_path, data_dir, amendments)
            except BaseException:
                if fresh_dir and ctx.is_main:
                    shutil.rmtree(run_dir, ignore_errors=True)
                raise
            return run_session(session)
    finally:
        if ctx.enabled:
            # The DDP/FSDP model goes before its process group (torch's documented order): a
            # gloo group last freed by the wrapper's reducer as this returns, after
            # destroy_process_group, once left a rank hung at exit joining its threads.
            session = None
            gc.collect()
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


def run_session(session: Session) -> TrainResult:
    """Step `session` to train.max_steps, a collapse stop or a stop request, logging and
    saving what each step is due; the last step always gets its rows and a checkpoint."""
    cfg = session.train_cfg
    stop_reason: StopReason = "completed"
    stop_signal: str | None = None
    session_tokens, session_seconds = 0, 0.0
    try:
        with StopRequest() as stop:
            while session.step < cfg.max_steps:
                started = time.perf_counter()
                step_tokens = train_step(session)
                if session.step % cfg.log_every == 0 or session.step == cfg.max_steps:
                    # Steps queue on the GPU without waiting; the window's time must
                    # include their execution before its throughput is logged.
                    synchronize(session.device)
                elapsed = time.perf_counter() - started
                session_tokens += step_tokens
                session_seconds += elapsed
                session.window.seconds += elapsed
                collapsed = after_step(session)
                if session.step == cfg.max_steps or collapsed:
                    stop_reason = "collapse" if collapsed else "completed"
                    final_logs(session)
                    report_step(session)
                    save_checkpoint(session)
                    break
                report_step(session)
                if any_rank(session.ctx, stop.requested, session.device):
                    stop_reason, stop_signal = "interrupted", stop.signal_name
                    if session.saved_step != session.step:
                        save_checkpoint(session)
                    break
    finally:
        session.close()
    tokens_per_s = session_tokens / session_seconds if session_seconds > 0 else 0.0
    return finish(session, stop_reason, stop_signal, tokens_per_s)


def after_step(session: Session) -> bool:
    """Logging, routing, eval and checkpoints due at this step; True on a collapse stop."""
    cfg, step = session.train_cfg, session.step
    collapsed = False
    if step % cfg.log_every == 0:
        log_train(session)
    if session.moe_layers and step % cfg.router_log_every == 0:
        collapsed = log_routing(session)
    if step % cfg.eval_every == 0:
        log_eval(session)
    if step % cfg.save_every == 0 and step != cfg.max_steps and not collapsed:
        save_checkpoint(session)
    return collapsed


def final_logs(session: Session) -> None:
    """The last step always gets a train row, a routing row and an eval."""
    cfg, step = session.train_cfg, session.step
    if session.window.steps:
        log_train(session)
    if session.moe_layers and step % cfg.router_log_every != 0:
        log_routing(session)
    if step % cfg.eval_every != 0:
        log_eval(session)


def finish(
    session: Session, stop_reason: StopReason, stop_signal: str | None, tokens_per_s: float
) -> TrainResult:
    """What the session's caller is told: how far it got, why it stopped, its best and last
    scores, its last checkpoint and collapse events, and this session's throughput."""
    last_checkpoint, resumed_from = session.last_checkpoint, session.resumed_from
    return TrainResult(
        run_dir=str(session.run_dir),
        steps=session.step,
        max_steps=session.train_cfg.max_steps,
        stop_reason=stop_reason,
        stop_signal=stop_signal,
        best_step=session.best_step,
        best_eval_loss=session.best_loss,
        last_eval=session.last_eval,
        last_train_loss=session.last_train_loss,
        last_checkpoint=str(last_checkpoint) if last_checkpoint else None,
        collapse_events=session.detector.events,
        tokens_per_s=tokens_per_s,
        resumed_from=str(resumed_from) if resumed_from else None,
        world_size=session.ctx.world_size,
    )
