"""The ``dgconv`` command line: ``dgconv train | models | profile | deploy | report | sweep | results``
(and ``python -m dgconv ...``)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from .commands import COMMANDS
from .console import configure_logging, guarded, run_train

__all__ = ["main", "run_train", "build_parser"]


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors: what was wrong, a close match for a misspelled flag, and where the help is
    (no usage dump: ``dgconv train``'s usage alone is 29 lines)."""

    def error(self, message: str) -> None:  # type: ignore[override]
        import difflib
        import re

        bad = re.search(r"invalid choice: '([^']*)' \(choose from (.*)\)", message)
        if bad:
            close = difflib.get_close_matches(bad[1], re.findall(r"'([^']*)'", bad[2]), n=1, cutoff=0.6)
            if close:
                message += f"; did you mean {close[0]}?"
        self.exit(2, f"{self.prog}: error: {message} (see `{self.prog} --help`)\n")

    def unknown(self, extras: list[str]) -> None:
        """Refuse arguments this (sub)command does not take, suggesting the closest option for each flag."""
        import difflib

        options = [o for o in self._option_string_actions if o.startswith("--")]
        hints = []
        for arg in extras:
            flag = arg.split("=", 1)[0]
            if flag.startswith("-"):
                close = difflib.get_close_matches(flag, options, n=1, cutoff=0.6)
                if close:
                    hints.append(f"{flag}: did you mean {close[0]}?")
        shown = " ".join(extras)
        self.error(f"unrecognized argument{'s' if len(extras) > 1 else ''} {shown}" + (f"; {'; '.join(hints)}" if hints else ""))


def build_parser() -> argparse.ArgumentParser:
    from .._version import __version__

    parser = _Parser(prog="dgconv", description="Dynamic Grouping Convolution: train, inspect and deploy G-ResNeXt.")
    parser.add_argument("--version", action="version", version=f"dgconv {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for add in COMMANDS:
        add(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``dgconv`` command. Returns the process exit status: 0 done, 1 out of memory, 2 bad input,
    a file-system error (a path that is missing, in the way, read-only or full; every command alike) or a run that
    could not go on, 128 + N stopped by signal N (130 Ctrl-C,
    143 SIGTERM; the run's last checkpoint is named). Unexpected errors keep their traceback."""
    from ..train import interrupts

    interrupts.install()  # before anything slow: Ctrl-C at any moment is a clean stop
    words = list(sys.argv[1:] if argv is None else argv)
    state = {"command": next((w for w in words if not w.startswith("-")), "")}  # for messages before parsing

    def run() -> int:
        parser = build_parser()
        args, extras = parser.parse_known_args(words)
        state["command"] = args.command or state["command"]
        if extras:
            _subparser(parser, args.command).unknown(extras)
        if args.command is None:
            parser.print_help()
            return 2
        configure_logging()
        return int(args.func(args) or 0)

    return guarded(run, state)


def _subparser(parser: argparse.ArgumentParser, command: str | None) -> _Parser:
    """The parser of ``command`` (the top-level parser when there is none)."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction) and command in action.choices:
            return action.choices[command]  # type: ignore[return-value]
    return parser  # type: ignore[return-value]


