"""Placeholder while the command is being built in this session; replaced by its owner."""

from moectl.errors import MoectlError


def evaluate() -> None:
    """Not built yet."""
    raise MoectlError("evaluate is not built yet")
