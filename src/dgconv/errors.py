"""The errors dgconv raises for bad input or a bad environment, one base class for all of them.

Every error here carries a message meant for the user: what was wrong and what to do. The command line prints
it without a traceback (``dgconv ...: error: <message>``, exit status 2); anything else that escapes (a bug, an
unexpected library error) keeps its traceback. Each class also derives from the built-in exception that code
written against earlier versions caught (``ValueError`` for bad input, ``RuntimeError`` for a run that cannot go
on, ``OSError`` for the file system), so ``except ValueError`` keeps working.

Example::

    >>> from dgconv.errors import ConfigError, DGConvError
    >>> try:
    ...     raise ConfigError("budget must be positive, got -1")
    ... except DGConvError as e:
    ...     print(e)
    budget must be positive, got -1
"""

from __future__ import annotations

from typing import Any

__all__ = ["DGConvError", "ConfigError", "DataError", "TrainingError", "RunDirError", "RunInUseError", "MissingExtraError", "Interrupted",
           "short"]


class DGConvError(Exception):
    """Base class of every error dgconv reports to users as a message rather than a traceback."""


class ConfigError(DGConvError, ValueError):
    """An option or argument is invalid (unknown name, out of range, inconsistent with another one)."""


class DataError(DGConvError, ValueError):
    """A dataset is missing, malformed, or not what was asked for; the message says what was expected."""


class TrainingError(DGConvError, RuntimeError):
    """A run cannot start or continue; the message says why and what was kept."""


class RunDirError(DGConvError, OSError):
    """A run directory cannot be created, read or written (permissions, a file in the way, a full disk, a
    malformed run file); the message names the path and the cause."""


class RunInUseError(RunDirError):
    """Another process holds the run directory's lock; the message names its PID."""


class MissingExtraError(DGConvError, ImportError):
    """An optional dependency is not installed; the message names the ``pip install 'dgconv[extra]'`` that adds it."""


class Interrupted(BaseException):
    """A run stopped by a signal (SIGINT or SIGTERM) at a checkpoint-safe point.

    Derives from ``BaseException`` like ``KeyboardInterrupt``: ``except Exception`` does not swallow it.

    Attributes:
        signum: the signal number.
        detail: what the run kept (filled in by the trainer), for the message.
    """

    def __init__(self, signum: int, detail: str = "") -> None:
        super().__init__(signum, detail)
        self.signum = signum
        self.detail = detail

    @property
    def exit_code(self) -> int:
        """The conventional shell exit status for death by this signal: ``128 + signum`` (130 SIGINT, 143 SIGTERM)."""
        return 128 + self.signum

    def __str__(self) -> str:
        import signal

        name = signal.Signals(self.signum).name
        return f"stopped by {name}" + (f"; {self.detail}" if self.detail else "")


def short(value: Any, limit: int = 80) -> str:
    """``repr(value)`` cut to about ``limit`` characters, without ever building the whole repr (a YAML alias bomb
    nests a billion references in a few hundred bytes)."""
    import reprlib

    r = reprlib.Repr()
    r.maxlevel, r.maxlist, r.maxdict, r.maxtuple, r.maxstring, r.maxother = 3, 6, 6, 6, limit, limit
    text = r.repr(value)
    return text if len(text) <= limit + 10 else text[:limit] + "..."
