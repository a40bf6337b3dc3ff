"""Errors the CLI turns into one clear message and an exit code (no traceback unless --debug):
2 for input the user can fix, 1 for a run that failed while it ran (`RunFailure`).

Every error a user can fix carries a `hint` that says how. The core raises these instead of
printing, so library users get the same information as exceptions.
"""

from __future__ import annotations


class MoectlError(Exception):
    """A problem the user can fix: bad input, a missing file, an impossible configuration."""

    exit_code = 2

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return self.message if not self.hint else f"{self.message} ({self.hint})"


class ConfigError(MoectlError):
    """A configuration that does not validate; `problems` lists (field path, message) pairs."""

    def __init__(
        self, message: str, problems: list[tuple[str, str]] | None = None, hint: str | None = None
    ) -> None:
        super().__init__(message, hint)
        self.problems = problems or []

    def __str__(self) -> str:
        lines = [self.message] + [f"  {path}: {msg}" for path, msg in self.problems]
        return "\n".join(lines)


class DataError(MoectlError):
    """Input data that cannot become a corpus, or a corpus on disk that is missing or broken."""


class ModelError(MoectlError):
    """A model, artifact or architecture that does not fit what was asked."""


class TrainingError(MoectlError):
    """A run directory, checkpoint or resume request that cannot be honoured."""


class RunFailure(MoectlError):
    """A run that failed while it ran, not because of its input: a non-finite loss, out of
    memory, a full disk. Exit code 1, so a scheduler tells a failed run from a bad config (2)."""

    exit_code = 1


class DeviceError(MoectlError):
    """A device that was asked for but is not there (CUDA on a CPU-only build, a bad index)."""


class OfflineError(MoectlError):
    """A hub request with no network; the hint names the offline alternatives."""


def did_you_mean(word: str, choices: list[str] | tuple[str, ...]) -> str:
    """' (did you mean 'x'?)' for the closest of `choices` to a mistyped `word`, else ''."""
    import difflib

    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f" (did you mean '{close[0]}'?)" if close else ""
