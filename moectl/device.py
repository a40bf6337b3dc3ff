"""The one device resolver: 'auto' picks the best available device, an absent one is an error.

Every command that puts a model on a device (train, evaluate, generate, the study) resolves it
here first, so asking for CUDA on a CPU-only build is one clear line and exit code 2 everywhere,
never a traceback from deep inside torch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

from moectl.errors import DeviceError

if TYPE_CHECKING:
    import torch

DEVICES = ("auto", "cpu", "cuda", "mps")
Precision = Literal["fp32", "bf16"]


def resolve_device(name: str) -> torch.device:
    """'auto' -> cuda, then mps, then cpu; 'cuda:1' style indices are accepted."""
    import torch

    kind = name.split(":", 1)[0]
    if kind not in DEVICES:
        raise DeviceError(f"unknown device '{name}'", hint=f"use one of {', '.join(DEVICES)}")
    if kind == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    available = {
        "cpu": True,
        "cuda": torch.cuda.is_available(),
        "mps": torch.backends.mps.is_available(),
    }
    if not available[kind]:
        raise DeviceError(
            f"device {name} was asked for but this machine (or torch build) has no {kind}",
            hint="use --device auto (or cpu); for training, --set train.device=auto",
        )
    try:
        device = torch.device(name)
    except RuntimeError as exc:
        raise DeviceError(f"invalid device '{name}': {exc}", hint="use auto, cpu or cuda") from None
    count = torch.cuda.device_count() if device.type == "cuda" else 0
    if device.type == "cuda" and device.index is not None and device.index >= count:
        raise DeviceError(
            f"device {name} does not exist ({count} CUDA devices)", hint="use --device cuda or auto"
        )
    return device


def fast_cpu_bf16() -> bool:
    """Whether this CPU multiplies bf16 matrices in hardware tiles (Intel AMX). Only there does
    bf16 autocast train faster than fp32: without them (even with AVX512-BF16) the casts cost
    more than the narrower math saves (docs/benchmarks.md, benchmarks/bench_precision.py)."""
    import torch

    return bool(torch.cpu._is_amx_tile_supported())


def resolve_precision(device: torch.device, precision: str) -> Precision:
    """`train.precision` on `device`: fp32 and bf16 are kept; auto is bf16 on CUDA and on a CPU
    with bf16 tiles (`fast_cpu_bf16`), fp32 elsewhere. A run records what this resolved to and
    a resume keeps it (moectl/training/session.py)."""
    if precision in ("fp32", "bf16"):
        return precision  # type: ignore[return-value]
    if device.type == "cuda" or (device.type == "cpu" and fast_cpu_bf16()):
        return "bf16"
    return "fp32"
