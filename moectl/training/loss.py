"""Per-token cross-entropy that materializes no more than it must.

`F.cross_entropy(logits.float(), reduction="none")` writes a float32 copy of the logits (under
bf16 autocast), a full (tokens, vocab) log-softmax, and in backward a zero-filled gradient of
the NLL plus the log-softmax gradient: four tensors the size of the logits. Here forward keeps
one float32 log-sum-exp per token; backward writes the gradient once, softmax minus one-hot,
row chunk by row chunk so the float32 work stays in cache (CPU) and bounded in memory (GPU).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

IGNORE_INDEX = -100
# Elements of float32 scratch per chunk: 16 MB on the CPU (cache), 1 GB on a GPU (memory).
_CHUNK = {"cpu": 1 << 22}
_DEFAULT_CHUNK = 1 << 28


def _row_chunks(logits: Tensor) -> list[tuple[int, int]]:
    rows, vocab = logits.shape
    step = max(1, _CHUNK.get(logits.device.type, _DEFAULT_CHUNK) // vocab)
    return [(start, min(rows, start + step)) for start in range(0, rows, step)]


class _TokenCrossEntropy(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, logits: Tensor, targets: Tensor) -> Tensor:
        valid = targets != IGNORE_INDEX
        safe = torch.where(valid, targets, 0).unsqueeze(1)
        dtype = torch.promote_types(logits.dtype, torch.float32)
        lse = logits.new_empty(logits.shape[0], dtype=dtype)
        for start, end in _row_chunks(logits):
            torch.logsumexp(logits[start:end].to(dtype), dim=1, out=lse[start:end])
        picked = logits.gather(1, safe).squeeze(1).to(dtype)
        ctx.save_for_backward(logits, safe, valid, lse)
        return torch.where(valid, lse - picked, 0.0)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, None]:
        logits, safe, valid, lse = ctx.saved_tensors
        scale = torch.where(valid, grad.to(lse.dtype), 0.0).unsqueeze(1)
        grad_logits = torch.empty_like(logits)
        in_place = logits.dtype == lse.dtype  # else a float32 chunk, then one cast
        for start, end in _row_chunks(logits):
            rows = grad_logits[start:end] if in_place else None
            probs = torch.sub(logits[start:end], lse[start:end].unsqueeze(1), out=rows).exp_()
            probs.mul_(scale[start:end])
            probs.scatter_add_(1, safe[start:end], -scale[start:end])
            if not in_place:
                grad_logits[start:end] = probs
        return grad_logits, None


def token_cross_entropy(logits: Tensor, targets: Tensor) -> Tensor:
    """Cross-entropy per row of `logits` (N, V) against `targets` (N,), in float32 or wider;
    rows whose target is -100 give 0 and no gradient. As F.cross_entropy(reduction="none")."""
    return _TokenCrossEntropy.apply(logits, targets)
