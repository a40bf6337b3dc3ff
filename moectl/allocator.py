"""Keep freed tensor memory in the process's heap, so a CPU training step's large tensors do not
fault their pages in afresh on every step.

glibc's malloc serves a block above its mmap threshold (128 KiB, rising to at most 32 MiB as
it adapts) with a fresh `mmap` and gives it back with `munmap` on free, and it trims the heap's
free top back to the kernel. A training step allocates and frees the same large tensors every
step (at the quickstart's shape the logits and their gradient are 2,048 x 4,096 floats,
32 MiB each), so every step the kernel zero-fills and maps each of their pages again. On the
2-core development VM that was 2.6-3.5 million page faults per 100 steps and 13-17% of a run's
wall time in the kernel (docs/benchmarks.md, benchmarks/bench_study.py). Raising both
thresholds keeps such blocks in the heap for the next step. Numbers are unchanged (only where
memory comes from changes), and so is the peak: what stays is what a step needed anyway.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import platform

# mallopt(3) parameters (malloc.h).
M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
RETAINED_BYTES = 1 << 30
"""Blocks up to this size come from the heap, and up to this much free heap top is kept."""


def retain_freed_memory() -> bool:
    """Raise glibc's mmap and trim thresholds to `RETAINED_BYTES` for this process; True where
    that was done, False where the C library is not glibc (the setting does not exist there).
    Idempotent; it changes only where later allocations come from."""
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    mmap_set = libc.mallopt(M_MMAP_THRESHOLD, ctypes.c_int(RETAINED_BYTES))
    trim_set = libc.mallopt(M_TRIM_THRESHOLD, ctypes.c_int(RETAINED_BYTES))
    return bool(mmap_set and trim_set)
