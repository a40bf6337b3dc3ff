"""`train.compile`: torch.compile for the training forward, and the device syncs around it.

The compiled wrapper (`_orig_mod` inside) only runs the forward; the trainer keeps the bare model
for state dicts, checkpoints, evaluation and the router statistics, so saved keys never carry the
`_orig_mod.` prefix and a compiled run resumes like any other.
"""

from __future__ import annotations

import torch
from torch import nn

from moectl.errors import ConfigError

COMPILE_HINT = "set train.compile=false (--set train.compile=false)"
# torch.compile's backend; tests swap in "eager" (graph capture without code generation).
BACKEND = "inductor"


def compile_unavailable(device: torch.device) -> str | None:
    """Why torch.compile cannot run here, or None when it can."""
    import torch._dynamo

    if not torch._dynamo.is_dynamo_supported():
        return "torch.compile is not supported by this Python or platform"
    if device.type == "cpu":
        from torch._inductor import cpp_builder, exc

        try:
            cpp_builder.get_cpp_compiler()
        except exc.InvalidCxxCompiler:
            return "torch.compile on the CPU needs a C++ compiler (g++ or clang++), none found"
    return None


def check_compile(device: torch.device) -> None:
    """ConfigError (one line, exit 2 in the CLI) when train.compile cannot work here."""
    reason = compile_unavailable(device)
    if reason is not None:
        raise ConfigError(f"train.compile is on but {reason}", hint=COMPILE_HINT)


def compile_model(model: nn.Module) -> nn.Module:
    """The model compiled for training (default inductor backend, static shapes)."""
    return torch.compile(model, backend=BACKEND, dynamic=False)


def synchronize(device: torch.device) -> None:
    """Wait for the device's queued work (a no-op on the CPU)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()
