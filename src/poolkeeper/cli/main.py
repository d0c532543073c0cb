"""Entry point of the ``poolkeeper`` command: argument parsing and error policy.

Every command returns an exit code (see :mod:`poolkeeper.cli._common`):
0 ok, 1 a check failed or the benchmark hit an error, 2 usage error (bad
option, bad URL, missing driver or extra), 3 cannot connect. Expected failures
are printed as one line on stderr; the traceback appears only with
``--debug``.
"""

from __future__ import annotations

import argparse
import sys
import traceback
from collections.abc import Sequence
from typing import Any

import poolkeeper
from poolkeeper.cli._common import EXIT_FAILED, CliError

EPILOG = """\
commands:
  poolkeeper bench                      pooled vs connect-per-query on embedded SQLite
  poolkeeper bench --url URL            ... on your database
  poolkeeper tune --url URL             recommend min_size / max_size
  poolkeeper check URL                  diagnose a connection step by step

exit codes:
  0  success
  1  a check failed, or the benchmark hit an error (e.g. the query failed)
  2  usage error: bad option, bad URL, driver or extra not installed
  3  cannot connect: DNS, TCP, TLS or authentication failed

Run 'poolkeeper COMMAND --help' for a command's options and examples.
"""


def build_parser() -> argparse.ArgumentParser:
    """Build the argument parser for all sub-commands."""
    from poolkeeper.cli import bench, check, tune

    parser = argparse.ArgumentParser(
        prog="poolkeeper",
        description="Measure, size and diagnose database connection pools.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        parents=[_global_options(default=False)],
    )
    parser.add_argument(
        "--version", action="version", version=f"poolkeeper {poolkeeper.__version__}"
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    subparsers.required = True
    # The same options again after the command name. Their default there is
    # SUPPRESS: argparse copies every value the sub-parser sets over the main
    # parser's, so a default would undo `poolkeeper --debug bench`.
    for module in (bench, tune, check):
        module.add_parser(subparsers, [_global_options(default=argparse.SUPPRESS)])
    return parser


def _global_options(default: Any) -> argparse.ArgumentParser:
    """Options every command accepts, before or after the command name."""
    options = argparse.ArgumentParser(add_help=False)
    options.add_argument(
        "--debug",
        action="store_true",
        default=default,
        help="show the full traceback when something goes wrong",
    )
    return options


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line and return its exit code.

    Args:
        argv: Arguments without the program name (default: ``sys.argv[1:]``).
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    prefix = f"poolkeeper {args.command}: error:"
    try:
        code: int = args.func(args)
    except CliError as exc:
        if args.debug:
            traceback.print_exc()
        print(f"{prefix} {_scrub(str(exc), args)}", file=sys.stderr)
        return exc.code
    except BrokenPipeError:
        # The reader went away (``poolkeeper bench --json | head``): not an error.
        sys.stderr.close()
        return EXIT_FAILED
    except KeyboardInterrupt:
        print(f"{prefix} interrupted", file=sys.stderr)
        return 130
    except Exception as exc:
        if args.debug:
            traceback.print_exc()
        text = next((ln for ln in str(exc).splitlines() if ln.strip()), "")
        print(
            f"{prefix} {type(exc).__name__}: {_scrub(text, args)} "
            "(run with --debug for the traceback)",
            file=sys.stderr,
        )
        return EXIT_FAILED
    return code


def _scrub(text: str, args: argparse.Namespace) -> str:
    """Remove the URL's password from ``text``, however a driver quoted it."""
    from poolkeeper._config import parse_url, scrub

    url = getattr(args, "url", None)
    if not url:
        return text
    try:
        password = parse_url(url).password
    except Exception:
        return text
    return scrub(text, (password,)) if password else text


if __name__ == "__main__":
    sys.exit(main())
