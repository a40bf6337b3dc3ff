"""Placeholder while the command is being built in this session; replaced by its owner."""

from moectl.errors import MoectlError


def quickstart() -> None:
    """Not built yet."""
    raise MoectlError("quickstart is not built yet")
