"""Dispatch of ``pixelrl GROUP SUB [options]`` commands (``pixelrl dataset stats``, ``pixelrl snapshots info``, ...)."""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

import tyro

__all__ = ["run_subcommand"]


def run_subcommand(argv: list[str], group: str, usage: str,
                   table: dict[str, tuple[type, Callable[[Any], int]]]) -> int:
    """Parse ``argv = [SUB, options...]`` with ``table[SUB] = (ArgsDataclass, handler)`` and run the handler.

    No argument or ``-h``/``--help`` prints ``usage`` (exit 2 / 0); an unknown SUB prints it to stderr (exit 2).
    """
    argv = list(argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(usage)
        return 0 if argv else 2
    sub, rest = argv[0], argv[1:]
    if sub not in table:
        print(f"pixelrl {group}: unknown command '{sub}'\n\n{usage}", file=sys.stderr)
        return 2
    args_cls, handler = table[sub]
    return handler(tyro.cli(args_cls, args=rest, prog=f"pixelrl {group} {sub}"))
