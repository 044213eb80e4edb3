"""Command-line interface: a thin layer that parses arguments, calls the API, prints and sets the exit code.

``parser`` builds the argparse tree (flags and their checks), ``commands`` holds one function per verb.
Exit codes: 0 all good, 1 some inputs or the run failed (named on stderr), 2 usage error, 130 interrupted.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any, Iterator, Optional, Sequence

from ..errors import ConfigError
from ..plumbing import output_lock
from .parser import build_parser

__all__ = ["main", "build_parser"]


#: Commands whose whole run holds the lock of their --out folder (explain takes it itself, after checking its flags;
#: train locks its run folder).
LOCKED_COMMANDS = ("evaluate", "experiment", "patches", "certify", "attribution", "audit")
#: Commands that split their images among the processes of a ``torchrun`` launch (see bagnet.parallel).
SHARDED_COMMANDS = ("evaluate", "experiment", "certify")
#: Exit codes: all good; some inputs or the run failed (named on stderr); a usage error (bad flag or config value).
EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run one command; errors are one line on stderr (set BAGNET_DEBUG=1 for the traceback), never a traceback."""
    parser = build_parser()
    args = parser.parse_args(argv)  # argparse's own usage errors exit 2
    _cap_images(args)
    if getattr(args, "download", False) and getattr(args, "data", None) == "imagenette":
        from ..data import fetch_imagenette

        try:
            fetch_imagenette()
        except OSError as err:
            print(f"bagnet {args.command}: error: {err}", file=sys.stderr)
            return EXIT_FAILED
    if getattr(args, "device", None) == "auto":  # every command that computes: --device auto unless told
        from ..plumbing import resolve_device

        args.device = str(resolve_device("auto"))
    if getattr(args, "device", None) is not None and not _quiet_rank():
        print(f"bagnet {args.command}: device {args.device}", file=sys.stderr)
    try:
        with _data_parallel(args):
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


@contextlib.contextmanager
def _data_parallel(args: Any) -> Iterator[None]:
    """Under ``torchrun``, join the process group for the commands that shard their images (evaluate, the experiments,
    certify); ranks other than 0 compute their shard but print nothing and write into a folder that is removed
    afterwards, so the files in --out are rank 0's alone. ``train`` runs its own DDP; other commands run whole on
    every rank."""
    from ..parallel import init_from_env, launched, sharded, world

    splits = args.command in SHARDED_COMMANDS and getattr(args, "name", None) not in ("summary", "diagnostic")
    if not launched() or not splits:
        yield
        return
    args.device = init_from_env(getattr(args, "device", None))
    stack = contextlib.ExitStack()
    stack.enter_context(sharded())
    rank = world()[0]
    scratch = None
    stdout = sys.stdout
    if rank != 0:
        scratch = tempfile.mkdtemp(prefix=f"bagnet-rank{rank}-")
        args.out = Path(scratch)
        sys.stdout = open(os.devnull, "w")
    try:
        yield
    finally:
        stack.close()
        if scratch is not None:
            sys.stdout.close()
            sys.stdout = stdout
            shutil.rmtree(scratch, ignore_errors=True)


def _cap_images(args: Any) -> None:
    """``BAGNET_MAX_IMAGES=N``: every command that takes ``--limit`` uses at most N images (a dry run of a long
    pipeline: the documentation's examples run this way in CI). Said once on stderr."""
    text = os.environ.get("BAGNET_MAX_IMAGES")
    if not text or not hasattr(args, "limit"):
        return
    try:
        cap = int(text)
        assert cap >= 1
    except (ValueError, AssertionError):
        raise SystemExit(f"bagnet: BAGNET_MAX_IMAGES must be a positive integer, got {text!r}") from None
    args.limit = cap if args.limit is None else min(args.limit, cap)
    if getattr(args, "attack_limit", None) is not None:
        args.attack_limit = min(args.attack_limit, cap)
    print(f"bagnet {args.command}: BAGNET_MAX_IMAGES={cap}: at most {args.limit} images", file=sys.stderr)


def _quiet_rank() -> bool:
    """A torchrun process other than rank 0 (which prints for all)."""
    return int(os.environ.get("RANK", "0")) != 0


def _unknown_name(err: Exception) -> bool:
    """An unknown model or architecture name given on the command line (a usage error)."""
    return isinstance(err, KeyError) and bool(err.args) and str(err.args[0]).startswith("unknown ")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
