"""Command-line flags: argparse types that check a value where it is typed (a bad one is a usage error, exit 2),
the run flags every command shares, and one flag per field of a Config (default and help from the Config)."""

from __future__ import annotations

import argparse
import dataclasses
import typing
from pathlib import Path
from typing import Any, Mapping, Optional

import torch

# ---------------------------------------------------------------------------------------------------- flag types
def _int(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be an integer, got {text!r}") from None


def _at_least(low: int, high: int | None = None):
    def check(text: str) -> int:
        value = _int(text)
        if value < low or (high is not None and value > high):
            span = f">= {low}" if high is None else f"in [{low}, {high}]"
            raise argparse.ArgumentTypeError(f"must be an integer {span}, got {text}")
        return value

    return check


#: argparse types: an integer >= 1 / >= 0; worker processes 0 to 64 (anything else is a usage error, exit 2).
positive_int = _at_least(1)
non_negative_int = _at_least(0)
worker_count = _at_least(0, 64)


def device_arg(text: str) -> str:
    """argparse type: ``auto`` or a torch device that exists on this machine (cpu, cuda, cuda:1, mps)."""
    if text == "auto":
        return text
    try:
        device = torch.device(text)
    except (RuntimeError, ValueError):
        raise argparse.ArgumentTypeError(f"not a torch device: {text!r} (cpu, cuda, cuda:1, mps)") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise argparse.ArgumentTypeError(f"{text}: this machine has no CUDA GPU that PyTorch can use")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise argparse.ArgumentTypeError(f"{text}: this machine has {torch.cuda.device_count()} CUDA devices")
    if device.type == "mps" and not (hasattr(torch.backends, "mps") and torch.backends.mps.is_available()):
        raise argparse.ArgumentTypeError(f"{text}: MPS is not available on this machine")
    return text


def int_list(count: int, form: str):
    """An argparse type: ``count`` comma-separated non-negative integers (``--box 10,20,33,33``)."""
    def parse(text: str) -> tuple[int, ...]:
        parts = [p.strip() for p in text.split(",")]
        if len(parts) != count or not all(p.isdigit() for p in parts):
            raise argparse.ArgumentTypeError(f"expected {form}: {count} non-negative integers separated by commas, "
                                             f"got {text!r}")
        return tuple(int(p) for p in parts)

    return parse


def output_folder(text: str) -> Path:
    """argparse type: a folder for result files, existing or not, but not a file (nor empty)."""
    if not text.strip():
        raise argparse.ArgumentTypeError("is empty: name a folder for the result files")
    path = Path(text)
    if path.exists() and not path.is_dir():
        raise argparse.ArgumentTypeError(f"{text} is a file, not a folder: name a folder for the result files")
    return path


def model_spec(text: str) -> str:
    """argparse type: a model name, file or folder; an empty one is refused (it would read as the current folder)."""
    if not text.strip():
        raise argparse.ArgumentTypeError("is empty: name a model (`bagnet models` lists them), a weights file or a "
                                         "run folder")
    return text


# ---------------------------------------------------------------------------------------------------- shared flags
def add_run_flags(parser: argparse.ArgumentParser, out: str, seed: bool = True, limit: bool = False,
                  limit_default: int | None = None) -> None:
    """The flags every command that writes results shares: --out, --seed, --device, --no-progress (and --limit)."""
    parser.add_argument("--out", type=output_folder, default=Path(out),
                        help=f"folder for the result files (default: {out})")
    if limit:
        parser.add_argument("--limit", type=positive_int, default=limit_default, metavar="N",
                            help="use a seeded random sample of N images (the same N and --seed pick the same images "
                                 "in every command)" + (f"; default {limit_default}" if limit_default else ""))
    if seed:
        parser.add_argument("--seed", type=non_negative_int, default=0, help="seed of the image sample (default 0)")
    parser.add_argument("--device", default="auto", type=device_arg,
                        help="auto (default: the GPU when PyTorch can use one, else the CPU), cpu, cuda, cuda:N or mps")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")


def add_config_flags(parser: argparse.ArgumentParser, config: type, *, prefix: str = "",
                     rename: Optional[Mapping[str, str]] = None, skip: tuple[str, ...] = (),
                     help: Optional[Mapping[str, str]] = None, types: Optional[Mapping[str, Any]] = None,
                     unset_default: bool = False) -> None:
    """One flag per field of the dataclass ``config`` (``--ig-steps 32``, ``--gaps 0 8 16``, ``--amp/--no-amp``):
    named ``--{prefix}{field}`` (or ``rename[field]``), its default the field's, its help the field's metadata
    ``help`` (or ``help[field]``), its type and choices from the annotation and the metadata (``choices``, ``min``;
    ``zero_means_none``: the flag's 0 is the field's None; ``types[field]`` overrides the argparse type). Deprecated
    fields (metadata ``deprecated``) get no flag.
    ``unset_default``: every flag defaults to None (a config file fills the rest, as ``train`` does)."""
    hints = typing.get_type_hints(config)
    for f in dataclasses.fields(config):
        if f.name in skip or f.metadata.get("deprecated"):
            continue
        text = (help or {}).get(f.name) or f.metadata.get("help")
        if not text:
            raise TypeError(f"{config.__name__}.{f.name} has no help text (field metadata 'help')")
        hint = hints[f.name]
        optional = type(None) in typing.get_args(hint)
        base = next((a for a in typing.get_args(hint) if a is not type(None)), hint) if optional else hint
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore[misc]
        shown = (0 if default is None and f.metadata.get("zero_means_none") else
                 " ".join(map(str, default)) if isinstance(default, tuple) else default)
        kwargs: dict[str, Any] = {"dest": _dest(config, prefix, f.name),
                                  "default": None if unset_default else default,
                                  "help": f"{text} (default: {shown})"}
        low = f.metadata.get("min")
        if types and f.name in types:
            kwargs.update(type=types[f.name], metavar=f.name.upper())
        elif base is bool:
            kwargs["action"] = argparse.BooleanOptionalAction
        elif typing.get_origin(base) is tuple:
            item = typing.get_args(base)[0]
            kwargs.update(nargs="+", type=_number(item, low), metavar=f.metadata.get("metavar", "N"))
        elif "choices" in f.metadata:
            kwargs.update(choices=list(f.metadata["choices"]), **({"type": base} if base in (int, float) else {}))
        else:
            kwargs.update(type=_number(base, low, bool(f.metadata.get("zero_means_none"))),
                          metavar=f.metadata.get("metavar", f.name.upper()))
        name = (rename or {}).get(f.name) or prefix + f.name.replace("_", "-")
        parser.add_argument("--" + name, **kwargs)


def config_from_args(args: argparse.Namespace, config: type, *, prefix: str = "", **fixed: Any) -> Any:
    """The ``config`` the flags :func:`add_config_flags` made describe (tuples for lists), with ``fixed`` fields."""
    values = {}
    for f in dataclasses.fields(config):
        dest = _dest(config, prefix, f.name)
        if hasattr(args, dest):
            value = getattr(args, dest)
            values[f.name] = tuple(value) if isinstance(value, list) else value
    return config(**{**values, **fixed})


def _dest(config: type, prefix: str, name: str) -> str:
    return f"{config.__name__}.{prefix}{name}"


def _number(kind: Any, low: Optional[float], zero_means_none: bool = False) -> Any:
    """argparse type for an int/float field: bounded below by ``low``; with ``zero_means_none`` 0 reads as None."""
    def check(text: str) -> Any:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be {'an integer' if kind is int else 'a number'}, got {text!r}"
                                             ) from None
        if low is not None and value < low:
            raise argparse.ArgumentTypeError(f"must be >= {low}, got {text}")
        return None if zero_means_none and value == 0 else value

    if kind not in (int, float):
        return kind
    check.__name__ = kind.__name__
    return check
