"""Run plumbing, the lowest floor: a model's device and dtype, eval mode, and result files (atomic writers, strict
JSON with the one schema version, output folders and their locks).

- Every file is written to a temporary file in the same folder and renamed over the target, so a reader (or a kill
  during the write) never sees half a file.
- JSON is strict: NaN and ±inf become ``null`` (``json.loads`` of other languages rejects bare ``NaN``).
- :func:`output_lock` makes a second process that writes the same folder fail at once with a clear message, instead of
  interleaving its files with the first one's.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import math
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, ClassVar, Iterable, Iterator, Mapping, Optional, Sequence, TypedDict

import torch
from torch import nn

#: Version of every JSON result the package writes.
SCHEMA_VERSION = 1
LOCK_NAME = ".bagnet.lock"


# ---------------------------------------------------------------------------------------------------- models
def resolve_device(device: Any = "auto") -> torch.device:
    """``"auto"`` (or None): the first CUDA GPU when PyTorch can use one, else the CPU; anything else as given."""
    if device is None or (isinstance(device, str) and device == "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def model_device(model: nn.Module, device: Any = None) -> torch.device:
    """The device to compute on: ``device`` if given, else where the model's parameters are (CPU for none)."""
    if device is not None:
        return torch.device(device)
    param = next(model.parameters(), None)
    return param.device if param is not None else torch.device("cpu")


def model_dtype(model: nn.Module) -> torch.dtype:
    """The floating-point dtype of the model's parameters (float32 when it has none)."""
    param = next(model.parameters(), None)
    return param.dtype if param is not None and param.is_floating_point() else torch.float32


@contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """``model`` in eval mode for the block, then back in the mode it was in (train or eval), whatever happens."""
    was_training = model.training
    model.eval()
    try:
        yield model
    finally:
        model.train(was_training)


def deprecated_alias(function: Any, old_name: str, since: str = "0.2") -> Any:
    """``function`` under its old public name: works as before for one release, with a ``DeprecationWarning``."""
    import functools
    import warnings

    @functools.wraps(function)
    def alias(*args: Any, **kwargs: Any) -> Any:
        warnings.warn(f"{old_name} was renamed {function.__module__}.{function.__name__} in bagnet {since}; the old "
                      f"name goes away in the next release", DeprecationWarning, stacklevel=2)
        return function(*args, **kwargs)

    alias.__name__ = old_name.rsplit(".", 1)[-1]
    return alias


# ---------------------------------------------------------------------------------------------------- run options
#: Run plumbing every experiment and attribution function takes as keyword arguments (never Config fields).
RUN_OPTIONS = ("batch_size", "limit", "seed", "device")
#: The release that removes the deprecated run-option fields of the method Configs.
RUN_FIELDS_REMOVED_IN = "0.3"


@dataclasses.dataclass(frozen=True)
class RunOptions:
    """One call's run plumbing, resolved: the keyword argument, else the deprecated Config field of the same name,
    else the function's default."""

    batch_size: int = 32
    limit: Optional[int] = None
    seed: int = 0
    device: Any = None

    def __post_init__(self) -> None:
        from .errors import ConfigError

        for key in ("batch_size", "limit"):
            value = getattr(self, key)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
                raise ConfigError(f"{key} must be a positive integer, got {value!r}", field=key)
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            raise ConfigError(f"seed must be a non-negative integer, got {self.seed!r}", field="seed")

    def to_dict(self) -> dict[str, Any]:
        return {"batch_size": self.batch_size, "limit": self.limit, "seed": self.seed,
                "device": None if self.device is None else str(self.device)}


class RunKwargs(TypedDict, total=False):
    """The run options every experiment takes as keyword arguments (``**options: Unpack[RunKwargs]``): ``device``
    (default: each model's own), ``limit`` (a seeded sample of that many images), ``seed`` (which images, and every
    random draw of the run), ``batch_size`` (images per forward pass). None means the function's default."""

    device: Any
    limit: Optional[int]
    seed: Optional[int]
    batch_size: Optional[int]


def option(default: Any, help: str, **metadata: Any) -> Any:
    """A Config field with its help text (and flag hints: ``choices``, ``min``, ``metavar``, ``zero_means_none``):
    the command-line flag generated from it takes default and help from here, so they are written once."""
    return dataclasses.field(default=default, metadata={"help": help, **metadata})


def deprecated_option() -> Any:
    """A Config field kept for one release (default None, no command-line flag)."""
    return dataclasses.field(default=None, metadata={"deprecated": True})


def warn_run_fields(config: Any) -> None:
    """For a Config's ``__post_init__``: a DeprecationWarning when run options were set as its fields."""
    import warnings

    given = [k for k in RUN_OPTIONS if getattr(config, k, None) is not None]
    if given:
        name = type(config).__name__
        warnings.warn(f"{name}({', '.join(f'{k}=…' for k in given)}): run options as Config fields are deprecated and "
                      f"stop working in bagnet {RUN_FIELDS_REMOVED_IN}; pass {', '.join(f'{k}=' for k in given)} to the "
                      f"function as keyword arguments", DeprecationWarning, stacklevel=user_stacklevel())


def user_stacklevel() -> int:
    """The ``stacklevel`` for ``warnings.warn`` (called by the caller of this) that points at the first frame outside
    bagnet and outside generated code (a dataclass's ``__init__``): the user's line that asked for the old thing."""
    import sys

    package = os.path.dirname(os.path.abspath(__file__))
    frame, level = sys._getframe(1), 1
    while frame.f_back is not None and (frame.f_code.co_filename.startswith(package)
                                        or frame.f_code.co_filename.startswith("<")):
        frame, level = frame.f_back, level + 1
    return level


def run_options(config: Any, defaults: RunOptions, **given: Any) -> RunOptions:
    """The run options of one call: each keyword argument in ``given`` that is not None, else ``config``'s
    deprecated field of that name when set, else ``defaults``'. An unknown keyword is a TypeError, as for any
    function."""
    unknown = sorted(set(given) - set(RUN_OPTIONS))
    if unknown:
        raise TypeError(f"unexpected keyword arguments {unknown}; the run options are {', '.join(RUN_OPTIONS)}")
    values = {}
    for key in RUN_OPTIONS:
        value = given.get(key)
        if value is None:
            value = getattr(config, key, None)
        values[key] = getattr(defaults, key) if value is None else value
    return RunOptions(**values)


def config_record(config: Any, run: Optional[RunOptions] = None) -> dict[str, Any]:
    """What a result records of its settings: the Config's method fields (tuples as lists) and the run options."""
    record = {f.name: getattr(config, f.name) for f in dataclasses.fields(config) if f.name not in RUN_OPTIONS}
    record = {k: list(v) if isinstance(v, tuple) else v for k, v in record.items()}
    return {**record, **(run.to_dict() if run is not None else {})}


def is_window(value: Any) -> bool:
    """Whether ``value`` is an intensity window: two finite numbers ``[low, high]`` with low < high (the one rule for
    ``--intensity-window`` and for a weights file's ``intensity_window``)."""
    return (isinstance(value, (list, tuple)) and len(value) == 2
            and all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in value)
            and value[0] < value[1])


def check_image_batch(images: Any, channels: int = 3) -> torch.Tensor:
    """``images`` as a batch (N, channels, H, W) of finite floats (a single (channels, H, W) image gets N = 1), or a
    ``TypeError``/``ValueError`` that names what is wrong (type, shape, emptiness, dtype, NaN/inf)."""
    if not isinstance(images, torch.Tensor):
        raise TypeError(f"images must be a torch.Tensor (N, {channels}, H, W), got {type(images).__name__}")
    if images.dim() == 3:
        images = images.unsqueeze(0)
    if images.dim() != 4:
        raise ValueError(f"images must be shaped (N, {channels}, H, W) or ({channels}, H, W), got "
                         f"{tuple(images.shape)}")
    if images.shape[1] != channels:
        raise ValueError(f"images must have {channels} channels, shaped (N, {channels}, H, W); got shape "
                         f"{tuple(images.shape)}")
    if images.shape[0] == 0 or images.shape[-1] == 0 or images.shape[-2] == 0:
        raise ValueError(f"images must not be empty, got shape {tuple(images.shape)}")
    if not images.is_floating_point():
        raise ValueError(f"images must be normalised floating-point tensors, got dtype {images.dtype}")
    finite = torch.isfinite(images)
    if not bool(finite.all()):
        bad = int((~finite).sum())
        raise ValueError(f"images hold {bad} non-finite values (NaN or inf) of {images.numel()}: maps and logits of "
                         "them would be NaN; check the input's preprocessing")
    return images


# ---------------------------------------------------------------------------------------------------- files
class OutputBusyError(RuntimeError):
    """Another process is writing results into the same folder."""


def check_logits(out: Any, n: int, name: str = "model", num_classes: Optional[int] = None) -> torch.Tensor:
    """``out`` if it is logits (N, classes) for a batch of ``n`` (and ``num_classes`` wide when given), else a
    ``ValueError`` naming the model and what it returned."""
    if not isinstance(out, torch.Tensor) or out.dim() != 2 or out.shape[0] != n:
        shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise ValueError(f"{name} must return logits shaped (N, classes); for N={n} it returned {shape}")
    if num_classes is not None and out.shape[1] != num_classes:
        raise ValueError(f"{name} has {out.shape[1]} outputs but the dataset has {num_classes} classes")
    return out


def printable(text: str) -> str:
    """``text`` with the bytes of a file name that were not valid UTF-8 (Python keeps them as lone surrogates)
    written as ``\\xNN``: valid Unicode for JSON, HTML and CSV files, and still telling which file it was."""
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:
        pass
    try:
        return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    except UnicodeEncodeError:  # a surrogate that stands for no byte: escape it as it is
        return text.encode("utf-8", "backslashreplace").decode("utf-8")


def safe_stem(text: str, suffixes: Sequence[str] = (), limit: int = 40) -> str:
    """A short file-name stem for ``text`` (a path or a label): its last part without one of ``suffixes``, every
    character but letters, digits, ``-`` and ``_`` replaced by ``_`` (undecodable bytes too), at most ``limit`` long."""
    name = Path(text).name or text
    stem = Path(name).stem if Path(name).suffix.lower() in suffixes else name
    clean = "".join(ch if (ch.isalnum() and ch.isprintable() and not "\ud800" <= ch <= "\udfff") or ch in "-_"
                    else "_" for ch in stem)
    return clean[:limit] or "image"


def json_safe(obj: Any) -> Any:
    """``obj`` with every non-finite float replaced by None (tuples become lists) and undecodable bytes of file
    names escaped (:func:`printable`), ready for strict JSON."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, str):
        return printable(obj)
    if isinstance(obj, Mapping):
        return {printable(str(k)): json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    if hasattr(obj, "item") and callable(obj.item) and getattr(obj, "ndim", 1) == 0:  # numpy / torch scalars
        return json_safe(obj.item())
    if isinstance(obj, os.PathLike):
        return printable(os.fspath(obj))
    return obj


def dumps_json(obj: Any, indent: Optional[int] = 2) -> str:
    """Strict JSON text of ``obj`` (non-finite floats as null)."""
    return json.dumps(json_safe(obj), indent=indent, allow_nan=False)


def write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically (temporary file in the same folder, then rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, _new_file_mode(path))  # mkstemp's 0600 would survive the rename
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with _ignore_os_errors():
            os.unlink(tmp)
        raise
    return path


def _new_file_mode(path: Path) -> int:
    """The permissions ``open(path, "w")`` would give: the existing file's, else 0666 less the process's umask."""
    try:
        return path.stat().st_mode & 0o7777
    except OSError:
        return 0o666 & ~_umask()


def _umask() -> int:
    """The process's umask, read without changing it where Linux tells it (else set and restored at once)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def write_text(path: str | os.PathLike, text: str) -> Path:
    """Write UTF-8 ``text`` to ``path`` atomically (undecodable file-name bytes escaped, see :func:`printable`)."""
    return write_bytes(path, printable(text).encode("utf-8"))


def write_json(path: str | os.PathLike, obj: Any) -> Path:
    """Write ``obj`` as strict, indented JSON to ``path`` atomically."""
    return write_text(path, dumps_json(obj) + "\n")


def write_result_json(path: str | os.PathLike, data: Mapping[str, Any]) -> Path:
    """A result's JSON file: ``data`` after the package's ``schema_version``, strict and atomic."""
    return write_json(path, {"schema_version": SCHEMA_VERSION, **data})


def write_rows_csv(path: str | os.PathLike, rows: Sequence[Mapping[str, Any]]) -> Path:
    """A result's rows as CSV (atomic; an empty file when there are none)."""
    return write_csv(path, rows) if rows else write_text(path, "")


def out_dir(path: str | os.PathLike) -> Path:
    """The output folder ``path``, created when missing."""
    out = Path(path)
    out.mkdir(parents=True, exist_ok=True)
    return out


def write_csv(path: str | os.PathLike, rows: Iterable[Mapping[str, Any]] | Iterable[Sequence[Any]],
              header: Optional[Sequence[str]] = None) -> Path:
    """Write rows (dicts, or sequences after ``header``) as CSV to ``path`` atomically; NaN/inf cells are empty."""
    buffer = io.StringIO()
    rows = list(rows)
    if rows and isinstance(rows[0], Mapping):
        fieldnames = list(header) if header is not None else list(rows[0])
        writer: Any = csv.DictWriter(buffer, fieldnames=fieldnames)
        writer.writeheader()
        writer.writerows({k: _csv_cell(v) for k, v in r.items()} for r in rows)  # type: ignore[union-attr]
    else:
        writer = csv.writer(buffer)
        if header is not None:
            writer.writerow(header)
        writer.writerows([_csv_cell(v) for v in r] for r in rows)
    return write_text(path, buffer.getvalue())


def _csv_cell(value: Any) -> Any:
    return "" if isinstance(value, float) and not math.isfinite(value) else value


@contextmanager
def output_lock(folder: str | os.PathLike) -> Iterator[Path]:
    """Hold the folder's lock file while writing results into it; a second process fails at once.

    Re-entrant within one process (a command that locks its ``--out`` can call ``save()``, which locks it too).
    """
    from filelock import FileLock, Timeout

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    lock = FileLock(str(folder / LOCK_NAME), timeout=0, is_singleton=True, thread_local=False)
    try:
        lock.acquire()
    except Timeout:
        raise OutputBusyError(
            f"another bagnet process is writing results into {folder} (it holds {folder / LOCK_NAME}); wait for it "
            f"to finish or choose another output folder"
        ) from None
    try:
        yield folder
    finally:
        lock.release()


@contextmanager
def _ignore_os_errors() -> Iterator[None]:
    try:
        yield
    except OSError:
        pass


# ---------------------------------------------------------------------------------------------------- results
class Result:
    """The convention every result follows: a frozen dataclass with ``to_dict()`` (what its JSON file holds),
    ``rows()`` (one dict per CSV row, always a method), ``figures()`` (file name → matplotlib figure) and
    ``save(dir)``, which writes ``<stem>.json`` (with the schema version), ``<csv_stem>.csv`` and the figures as PNG,
    each file atomically, under the folder's lock. Subclasses set ``stem`` and override what they have."""

    stem: ClassVar[str] = "result"
    csv_stem: ClassVar[Optional[str]] = None  # default: stem

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)  # type: ignore[call-overload]

    def rows(self) -> list[dict[str, Any]]:
        return []

    def figures(self) -> dict[str, Any]:
        return {}

    def save(self, out: str | os.PathLike) -> Path:
        """Write the result's files into ``out`` (created if missing) under the folder's lock; returns the folder."""
        out = out_dir(out)
        with output_lock(out):
            self.write(out)
        return out

    def write(self, out: Path) -> None:
        """The files themselves (the lock is held): JSON, CSV and PNGs; results with other files override this."""
        write_result_json(out / f"{self.stem}.json", self.to_dict())
        write_rows_csv(out / f"{self.csv_stem or self.stem}.csv", self.rows())
        for name, fig in self.figures().items():
            write_bytes(out / name, figure_png(fig))


def figure_png(fig: Any, dpi: int = 120) -> bytes:
    """A matplotlib figure as PNG bytes; the figure is closed (freed) afterwards."""
    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    try:
        fig.savefig(buffer, format="png", dpi=dpi)
    finally:
        plt.close(fig)
    return buffer.getvalue()

