"""The rows a training session logs: a train row (the metric window's means), a routing row
(with the collapse detector's verdict), an eval row, and the progress events that go with them.
Only the main rank writes; every rank takes part in the all-reduces."""

from __future__ import annotations

import math
import time

from moectl.errors import RunFailure
from moectl.model.routing import balance_states
from moectl.progress import report
from moectl.rundir.records import EvalRow, EvalScores, RoutingRow, TrainRow
from moectl.training.distributed import all_reduce_sum
from moectl.training.evaluation import evaluate_blocks
from moectl.training.saving import save_best
from moectl.training.session import Session
from moectl.training.sinks import log_row


def log_train(session: Session) -> None:
    """A metrics.jsonl train row of the steps since the last one; a non-finite loss stops the
    run (RunFailure) once its row is written."""
    window = session.window
    sums = window.sums.cpu() / max(1, window.steps)
    domain_sum, domain_count = window.domain_sum.cpu(), window.domain_count.cpu()
    domain_loss = {
        domain: float(domain_sum[d] / domain_count[d])
        for d, domain in enumerate(session.domains)
        if domain_count[d] > 0
    }
    session.last_tps = session.tokens_per_s
    moe = bool(session.moe_layers)
    row = TrainRow(
        step=session.step,
        tokens=session.tokens,
        lr=session.lr,
        loss=float(sums[0]),
        lm_loss=float(sums[1]),
        lb_loss=float(sums[2]) if moe else None,
        z_loss=float(sums[3]) if moe else None,
        grad_norm=float(session.grad_norm),
        tokens_per_s=session.last_tps,
        domain_loss=domain_loss,
        time=time.time(),
    )
    session.last_train_loss = row.loss
    session.logged_step = row.step
    if moe:
        session.last_max_share = max(session.routing.max_fractions().values())
    window.reset()
    write_row(session, "metrics", row, "train")
    if not math.isfinite(row.loss):
        raise RunFailure(
            f"the training loss is {row.loss} at step {row.step}; training stopped",
            hint="lower train.lr and train again in a new --run-dir (this run's "
            "metrics.jsonl holds the steps before it)",
        )


def log_initial_routing(session: Session) -> None:
    """The step-0 routing row: the first update's forward passes, which run on the model as
    initialized, so the log starts from the init router's routing. It is not a collapse
    check (`collapse` is null): training has not touched the router yet."""
    all_reduce_sum(session.ctx, session.routing.tensors(), session.device)
    row = session.routing.row(0, balance_states(session.core))
    row = RoutingRow.model_validate({**row, "collapse": None})
    session.routing.reset()
    write_row(session, "routing", row, "routing")


def log_routing(session: Session) -> bool:
    """A routing row of the steps since the last one, judged by the collapse detector; True
    when the detector says stop."""
    step, cfg = session.step, session.train_cfg
    all_reduce_sum(session.ctx, session.routing.tensors(), session.device)
    status = session.detector.update(step, session.routing.max_fractions())
    row = session.routing.row(step, balance_states(session.core))
    row = RoutingRow.model_validate({**row, "collapse": status})
    session.routing.reset()
    write_row(session, "routing", row, "routing")
    if status.warning:
        shares = {k: round(v.max_fraction, 3) for k, v in row.layers.items()}
        report(
            session.callback,
            "collapse",
            step,
            cfg.max_steps,
            message=f"step {step}: busiest expert over "
            f"{cfg.collapse.threshold:.0%} in layers {status.layers} "
            f"(max shares {shares}); {status.consecutive} consecutive"
            + ("; stopping" if status.stop else ""),
            layers=status.layers,
            consecutive=status.consecutive,
            stop=status.stop,
        )
    return status.stop


def log_eval(session: Session) -> None:
    """An eval row on the fixed eval subset; a new best loss saves best/."""
    result = evaluate_blocks(
        session.core,
        session.eval_data,
        session.eval_indices,
        len(session.domains),
        session.train_cfg.batch_size,
        session.device,
        session.autocast,
        session.ctx,
        session.eval_forwards,
    )
    domain_loss = {
        domain: result.domain_loss[d]
        for d, domain in enumerate(session.domains)
        if result.domain_loss[d] is not None
    }
    scores = EvalScores.of(result.loss, domain_loss)
    moe = bool(session.moe_layers)
    row = EvalRow(
        step=session.step,
        **scores.model_dump(),
        lb_loss=result.lb_loss if moe else None,
        z_loss=result.z_loss if moe else None,
    )
    session.last_eval = scores
    write_row(session, "metrics", row, "eval")
    max_steps = session.train_cfg.max_steps
    report(session.callback, "eval", session.step, max_steps, **scores.model_dump())
    if session.best_loss is None or result.loss < session.best_loss:
        session.best_loss, session.best_step = result.loss, session.step
        save_best(session)


def report_step(session: Session) -> None:
    """The `train` progress event of this step (`logged`: a train row was just written)."""
    report(
        session.callback,
        "train",
        session.step,
        session.train_cfg.max_steps,
        loss=session.last_train_loss,
        lr=session.lr,
        tokens_per_s=session.tokens_per_s,
        max_share=session.last_max_share,
        logged=session.logged_step == session.step,
    )


def write_row(
    session: Session, writer: str, row: TrainRow | EvalRow | RoutingRow, kind: str
) -> None:
    """`row` appended to its JSONL file and mirrored to the sinks (on the main rank only)."""
    if not session.ctx.is_main:
        return
    session.writers[writer].write(row)
    log_row(session.sinks, kind, row.model_dump(mode="json"))
