"""What a training session saves: its checkpoint (model artifact + trainer state, the state every
rank's RNG and partial counts included, so a resume is exact) and its best/ model."""

from __future__ import annotations

from typing import Any

from moectl.model.io import save_model
from moectl.progress import report
from moectl.rundir.layout import BEST_DIR
from moectl.training.checkpoint import STATE_FORMAT, capture_rng_state, write_checkpoint
from moectl.training.distributed import barrier
from moectl.training.session import Session
from moectl.training.setup import model_meta
from moectl.training.sharding import optimizer_state


def trainer_state(session: Session) -> dict[str, Any]:
    """The trainer_state.pt of this step (`session.restore` takes it back)."""
    routing = session.routing.state_dict()
    state = {
        "format_version": STATE_FORMAT,
        "step": session.step,
        "tokens": session.tokens,
        "world_size": session.ctx.world_size,
        "optimizer": optimizer_state(session.core, session.optimizer),
        "scheduler": session.scheduler.state_dict(),
        "rng": session.gathered(capture_rng_state()),
        "data": session.sampler.state_dict(),
        "window": session.window.state_dict(),
        "routing": routing,
        "collapse": session.detector.state_dict(),
        "best": {"step": session.best_step, "loss": session.best_loss},
    }
    if session.ctx.enabled:
        # Under DDP each rank holds its own partial counts; "routing" stays rank 0's so
        # checkpoints keep their format for readers that predate this key.
        state["routing_ranks"] = session.gathered(routing)
    return state


def save_checkpoint(session: Session) -> None:
    """checkpoints/step-N of this step (older ones rotated out past train.keep_last)."""
    session.saved_step = session.step
    state = trainer_state(session)
    weights = session.full_weights()
    if session.ctx.is_main:
        core = session.core
        meta = model_meta(core, session.config, session.corpus, session.step, session.metrics())
        session.last_checkpoint = write_checkpoint(
            session.run_dir,
            session.step,
            lambda path: save_model(core, path, meta, state=weights),
            state,
            session.train_cfg.keep_last,
        )
        report(
            session.callback,
            "checkpoint",
            session.step,
            session.train_cfg.max_steps,
            message=str(session.last_checkpoint),
        )
    barrier(session.ctx)


def save_best(session: Session) -> None:
    """best/: the model at this step, with the corpus's tokenizer."""
    weights = session.full_weights()
    if session.ctx.is_main:
        core = session.core
        meta = model_meta(core, session.config, session.corpus, session.step, session.metrics())
        save_model(
            core,
            session.run_dir / BEST_DIR,
            meta,
            tokenizer=session.corpus.tokenizer(),
            state=weights,
        )
    barrier(session.ctx)
