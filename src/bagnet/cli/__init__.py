"""Command-line interface: a thin layer that parses arguments, calls the API, prints and sets the exit code.

``parser`` builds the argparse tree (flags and their checks), ``commands`` holds one function per verb.
Exit codes: 0 all good, 1 some inputs or the run failed (named on stderr), 2 usage error, 130 interrupted.
"""

from __future__ import annotations

import sys
from typing import Optional, Sequence

from ..errors import ConfigError
from ..plumbing import output_lock
from .parser import build_parser

__all__ = ["main", "build_parser"]


#: Commands whose whole run holds the lock of their --out folder (explain takes it itself, after checking its flags;
#: train locks its run folder).
LOCKED_COMMANDS = ("evaluate", "experiment", "patches", "certify", "attribution")
#: Exit codes: all good; some inputs or the run failed (named on stderr); a usage error (bad flag or config value).
EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run one command; errors are one line on stderr (set BAGNET_DEBUG=1 for the traceback), never a traceback."""
    import os

    parser = build_parser()
    args = parser.parse_args(argv)  # argparse's own usage errors exit 2
    try:
        if args.command in LOCKED_COMMANDS:  # a second process writing the same --out fails at once
            with output_lock(args.out):
                return int(args.func(args))
        return int(args.func(args))
    except KeyboardInterrupt:
        print(f"bagnet {args.command}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Exception as err:  # every failure is reported as one line naming the problem
        if os.environ.get("BAGNET_DEBUG"):
            raise
        code = EXIT_USAGE if isinstance(err, ConfigError) or _unknown_name(err) else EXIT_FAILED
        message = err.args[0] if isinstance(err, KeyError) and err.args else str(err)
        if isinstance(err, MemoryError):
            message = "out of memory (try smaller inputs, --batch-size or --limit)"
        elif not isinstance(err, (ValueError, KeyError, OSError, ImportError, RuntimeError)) or not message:
            message = f"{type(err).__name__}: {message}"
        print(f"bagnet {args.command}: error: {message}", file=sys.stderr)
        if code == EXIT_USAGE:
            print(f"(usage: bagnet {args.command} --help)", file=sys.stderr)
        return code


def _unknown_name(err: Exception) -> bool:
    """An unknown model or architecture name given on the command line (a usage error)."""
    return isinstance(err, KeyError) and bool(err.args) and str(err.args[0]).startswith("unknown ")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
