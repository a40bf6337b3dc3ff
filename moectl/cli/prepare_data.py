"""Placeholder while the command is being built in this session; replaced by its owner."""

from moectl.errors import MoectlError


def prepare_data() -> None:
    """Not built yet."""
    raise MoectlError("prepare_data is not built yet")
