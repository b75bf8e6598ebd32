"""The ``pes`` command: ``pes <noun> <verb>``.

Each noun lives in its own module of this package and exposes ``register(subparsers)``, which
adds its sub-parser and sets ``func`` on the parsed arguments. A noun whose module cannot be
imported (an optional dependency missing) is skipped with a note in ``pes --help``.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from .. import __version__

#: noun modules, in the order ``pes --help`` lists them
NOUNS = ("init", "db", "enumerate", "calc", "basis", "model", "simulate", "campaign", "retrain")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pes",
        description="Machine-learn the DFT potential energy surface of a halide perovskite around its cubic reference.",
    )
    parser.add_argument("--version", action="version", version=f"perovskite-pes {__version__}")
    sub = parser.add_subparsers(dest="noun", metavar="COMMAND")
    for noun in NOUNS:
        try:
            module = importlib.import_module(f".{noun}", __name__)
        except ModuleNotFoundError as exc:
            if exc.name and exc.name.startswith(f"{__name__}.{noun}"):
                continue  # this command is not part of the installed package yet
            raise
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    from ..errors import PesError

    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 0 if args.noun is None else 2
    try:
        rc = args.func(args)
    except PesError as exc:
        print(f"pes: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("pes: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # the reader went away (pes db query --json | head): end quietly
        _silence_stdout()
        return 0
    try:
        sys.stdout.flush()
    except BrokenPipeError:
        _silence_stdout()
    return int(rc or 0)


def _silence_stdout() -> None:
    """Point stdout at /dev/null so that the interpreter's final flush cannot fail on a closed pipe."""
    import os

    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
