"""Placeholder while the command is being built in this session; replaced by its owner."""

from moectl.errors import MoectlError


def generate() -> None:
    """Not built yet."""
    raise MoectlError("generate is not built yet")
