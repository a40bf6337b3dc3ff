"""One optimizer update of a training session: grad_accum micro-batches forward and backward,
routing counted, the step taken, and its losses added to the metric window."""

from __future__ import annotations

import contextlib
import math

import torch

from moectl.model.routing import last_router_stats, set_router_progress
from moectl.training.balancing import count_before_step
from moectl.training.batches import fetch
from moectl.training.distributed import all_reduce_sum, shard_rows
from moectl.training.log_rows import log_initial_routing
from moectl.training.session import Session
from moectl.training.sharding import full_tensor
from moectl.training.step import forward_losses, token_domains


def train_step(session: Session) -> int:
    """One optimizer update over grad_accum micro-batches; returns the global tokens used."""
    cfg = session.train_cfg
    core, device, ctx = session.core, session.device, session.ctx
    set_router_progress(core, session.step, cfg.max_steps)
    session.model.train()
    rows = shard_rows(ctx, cfg.batch_size)
    n_domains = len(session.domains)
    values = torch.zeros(4, device=device, dtype=torch.float64)
    domain_sum = torch.zeros(n_domains, device=device, dtype=torch.float64)
    domain_count = torch.zeros(n_domains, device=device, dtype=torch.float64)
    batches = [
        fetch(session.train_data, session.sampler.next_batch()[rows], device)
        for _ in range(cfg.grad_accum)
    ]
    inputs = [input_ids for input_ids, _ in batches]
    count_before_step(core, inputs, session.autocast, ctx, device)
    for micro, (input_ids, domain) in enumerate(batches):
        last = micro == cfg.grad_accum - 1
        # DDP all-reduces once per step; FSDP reduce-scatters each micro-batch's gradients
        # into the shards (so no rank ever holds a whole unsharded gradient).
        ddp = ctx.enabled and not session.sharded
        sync = session.model.no_sync() if ddp and not last else contextlib.nullcontext()
        with sync:
            losses = forward_losses(
                session.model,
                core,
                input_ids,
                domain,
                n_domains,
                session.config.moe,
                session.autocast,
            )
            (losses.loss / cfg.grad_accum).backward()
        if session.moe_layers:
            stats = last_router_stats(core)
            session.routing.update(stats, token_domains(domain, input_ids.shape[1]))
            session.step_counts.add(stats)
        parts = [losses.loss.detach(), losses.lm_loss, losses.lb_loss, losses.z_loss]
        values += torch.stack([p.double() for p in parts]) / cfg.grad_accum
        domain_sum += losses.domain_sum
        domain_count += losses.domain_count
    if session.step == 0 and session.moe_layers:
        log_initial_routing(session)
    clip = cfg.grad_clip if cfg.grad_clip is not None else math.inf
    grad_norm = torch.nn.utils.clip_grad_norm_(core.parameters(), clip)
    session.lr = session.optimizer.param_groups[0]["lr"]
    session.optimizer.step()
    session.scheduler.step()
    session.optimizer.zero_grad(set_to_none=True)
    session.step_counts.end_step(ctx, device)
    merged = torch.cat([values, domain_sum, domain_count])
    all_reduce_sum(ctx, [merged], device)
    values = merged[:4] / ctx.world_size
    session.window.add(values, merged[4 : 4 + n_domains], merged[4 + n_domains :])
    session.grad_norm = full_tensor(grad_norm.detach())  # read when a row is written
    session.step += 1
    step_tokens = cfg.batch_size * cfg.grad_accum * session.corpus.block_size
    session.tokens += step_tokens
    session.window.tokens += step_tokens
    return step_tokens
