"""The `simgan` command. Each feature module registers its own subcommand, so this file only lists
them: a module `M` in COMMAND_MODULES defines `register(subparsers)` which adds a parser and sets
`func` (a callable taking the parsed args and returning an exit code or None)."""

from __future__ import annotations

import argparse
import importlib
import sys

from simgan.io import SimganError

COMMAND_MODULES = [
    "simgan.sim.cli",            # simulate, show
    "simgan.data.cli",           # import, download, export
    "simgan.compare",            # compare
    "simgan.config",             # params apply|overrides
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="simgan", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as e:
            if e.name == name:  # a feature not built yet; the others still work
                continue
            raise
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        rc = args.func(args)
    except SimganError as e:
        print(f"simgan {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"simgan {args.command}: interrupted", file=sys.stderr)
        return 130
    return int(rc or 0)


if __name__ == "__main__":
    sys.exit(main())
