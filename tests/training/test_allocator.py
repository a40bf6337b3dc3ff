"""`allocator.retain_freed_memory`: after it (and after a CPU training run, which calls it), a
large tensor comes from glibc's heap instead of a fresh mmap, so freeing it and allocating it
again on the next step reuses pages instead of faulting them in anew.

Each case runs in its own interpreter: the setting is process-wide and cannot be undone, and
glibc's `mallinfo2` says where the live tensor's bytes came from (`hblkhd`: bytes in mmapped
blocks)."""

from __future__ import annotations

import json
import platform
import subprocess
import sys

import pytest

pytestmark = pytest.mark.skipif(
    platform.system() != "Linux" or platform.libc_ver()[0] != "glibc",
    reason="the mmap and trim thresholds are glibc's",
)

BIG = 64 << 20
MEASURE = f"""
import ctypes, json, torch
class MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in (
        "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks",
        "fordblks", "keepcost")]
libc = ctypes.CDLL("libc.so.6")
libc.mallinfo2.restype = MallInfo2
def measure():
    before = libc.mallinfo2().hblkhd
    big = torch.ones({BIG}, dtype=torch.uint8)
    mapped = libc.mallinfo2().hblkhd - before
    del big
    return mapped
"""


def _mapped_bytes(setup: str) -> dict:
    code = f"{MEASURE}\n{setup}\nprint(json.dumps({{'mapped': measure(), 'applied': applied}}))"
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=300
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_a_large_tensor_comes_from_the_heap_once_retained():
    default = _mapped_bytes("applied = None")
    retained = _mapped_bytes(
        "from moectl.allocator import retain_freed_memory\napplied = retain_freed_memory()"
    )
    assert default["mapped"] >= BIG  # glibc's default: its own mmap, unmapped on free
    assert retained["applied"] is True
    assert retained["mapped"] == 0


def test_a_cpu_training_run_retains_freed_memory_in_its_process(tiny_corpus, tmp_path):
    run_dir = tmp_path / "run"
    setup = f"""
from moectl.config import resolve_run_config
from moectl.training.trainer import train_run
config = resolve_run_config("tiny", overrides=["train.max_steps=2", "train.device=cpu"])
train_run(config, {str(tiny_corpus)!r}, {str(run_dir)!r})
applied = True
"""
    assert _mapped_bytes(setup)["mapped"] == 0
    assert (run_dir / "best").is_dir()
