"""moectl: study how experts specialize in mixture-of-experts language models."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from moectl.version import __version__

if TYPE_CHECKING:
    from moectl.model.artifact import LoadedModel


def load_model(path: Any, device: Any = "cpu") -> LoadedModel:
    """Load a dense or MoE model artifact saved by moectl (lazy import keeps the CLI fast)."""
    from moectl.interop.loading import load_model as _load_model

    return _load_model(path, device=device)


__all__ = ["__version__", "load_model"]
