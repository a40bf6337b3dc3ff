"""Placeholder while the command is being built in this session; replaced by its owner."""

from moectl.errors import MoectlError


def train() -> None:
    """Not built yet."""
    raise MoectlError("train is not built yet")
