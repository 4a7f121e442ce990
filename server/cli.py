"""The ``treasure-hunt`` command line: one argparse parser, one module per subcommand.

Errors in options are one line on stderr (``treasure-hunt simulate: error: ...``)
and exit status 2, never a traceback. Heavy imports (numba, rich, matplotlib)
happen inside the subcommands, so ``--help`` is instant.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import os
import sys
from typing import NoReturn

from .tools import bots, events, replay, serve, simulate, ticket

PROG = "treasure-hunt"

#: The subcommands, in the order ``--help`` lists them. To add one (serve, replay,
#: bots): write ``server/<name>.py`` with ``add_parser(subparsers)``, which registers
#: its options and calls ``set_defaults(run=<function(args) -> int>, prog=parser.prog)``,
#: and list the module here.
SUBCOMMANDS = (serve, simulate, replay, bots, events, ticket)

DESCRIPTION = """\
A real-time treasure hunt engine: Numba tick kernels over struct-of-arrays
buffers. Players (or bots) roam a map, follow hints towards hidden treasures,
and score what they find.
"""

EPILOG = """\
examples:
  treasure-hunt simulate --players 5000 --ticks 1200
  treasure-hunt simulate --config examples/forest.toml --json run.json --plot run.png
  treasure-hunt simulate --help

Run 'treasure-hunt COMMAND --help' for the options of a command.
"""


class ArgumentParser(argparse.ArgumentParser):
    """argparse with one-line errors: ``prog: error: message``, exit status 2."""

    #: Parsers of the subcommands by name (set on the top-level parser only).
    subcommands: dict[str, argparse.ArgumentParser]

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see '{self.prog} --help')\n")


def build_parser() -> ArgumentParser:
    parser = ArgumentParser(
        prog=PROG, description=DESCRIPTION, epilog=EPILOG, allow_abbrev=False,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version",
                        version=f"%(prog)s {importlib.metadata.version('treasure-hunt')}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", title="commands")
    for module in SUBCOMMANDS:
        module.add_parser(subparsers)
    parser.subcommands = subparsers.choices
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``treasure-hunt`` console script; returns the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra:
        # Name the subcommand whose options these are not (argparse names the top level).
        commands = parser.subcommands
        commands.get(args.command, parser).error(
            f"unrecognized arguments: {' '.join(extra)}")
    if args.command is None:
        parser.print_help(sys.stderr)
        return 2
    args.argv = argv
    try:
        return args.run(args)
    except BrokenPipeError:
        # Output piped into `head` and the like: stop quietly (and keep Python's
        # final flush of stdout from failing again).
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
