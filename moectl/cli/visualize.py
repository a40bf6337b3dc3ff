"""Placeholder while the command is being built in this session; replaced by its owner."""

from moectl.errors import MoectlError


def visualize() -> None:
    """Not built yet."""
    raise MoectlError("visualize is not built yet")
