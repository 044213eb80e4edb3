"""Reading, checking and writing weights files: verified downloads, local .pth and .safetensors files (the named
weights themselves are data, in :mod:`bagnet.models.pretrained`)."""

from __future__ import annotations

import hashlib
import json
import os
import re
import urllib.error
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Optional

import torch
from torch import Tensor, nn

from .bagnet import BagNetConfig


def git_blob_sha1(path: Path) -> str:
    """The id git gives a file's content: SHA-1 of ``b"blob <size>\\0"`` followed by the bytes."""
    return _digest(path, hashlib.sha1(f"blob {path.stat().st_size}\0".encode()))


class WeightsError(ValueError):
    """A weights file cannot be read or does not fit the model; the message names the file and the problem."""


class WeightsUnavailableError(WeightsError, OSError):
    """The official weights are neither cached nor downloadable (for example, no network)."""


# ---------------------------------------------------------------------------------------------------- downloads
_HASH_IN_NAME = re.compile(r"-([a-f0-9]{6,})\.")


def fetch_verified(url: str, progress: bool = True, what: str = "weights", cache_name: Optional[str] = None,
                   blob_sha1: Optional[str] = None) -> Path:
    """The file at ``url`` in torch.hub's cache (downloaded there once, as ``cache_name`` if given), checked every
    time it is used: its SHA-256 against the hash prefix in its file name (``name-<hex>.pth``, the torchvision and
    torch.hub convention), or its git blob id against ``blob_sha1`` (files published in a git repository)."""
    filename = url.rsplit("/", 1)[-1]
    path = Path(torch.hub.get_dir()) / "checkpoints" / (cache_name or filename)
    match = _HASH_IN_NAME.search(filename)
    prefix = match.group(1) if match else None
    fresh = not path.exists()
    if fresh:
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            torch.hub.download_url_to_file(url, str(path), hash_prefix=prefix, progress=progress)
        except (urllib.error.URLError, OSError, TimeoutError) as err:
            raise WeightsUnavailableError(
                f"could not download {what} from {url} ({err}). "
                f"Without network, download that file elsewhere and put it by hand at {path}"
            ) from err
        except RuntimeError as err:  # torch.hub reports a hash mismatch as RuntimeError
            raise WeightsError(f"download of {url} failed its hash check: {err}") from err
    if prefix:
        _check_hash(path, prefix)
    if blob_sha1:
        found = git_blob_sha1(path)
        if found != blob_sha1:
            if fresh:  # never keep a download that is not the published file
                path.unlink()
            raise WeightsError(f"{path} has git blob id {found[:16]}…, expected {blob_sha1} (the file at {url}); the "
                               f"file is corrupt or not the published one. Delete it and try again")
    return path


def _check_hash(path: Path, sha256_prefix: str) -> None:
    digest = _sha256(path)
    if not digest.startswith(sha256_prefix):
        raise WeightsError(
            f"{path} has SHA-256 {digest[:16]}…, expected a hash starting with {sha256_prefix}; "
            f"the file is corrupt or not the released checkpoint. Delete it and try again"
        )


def _sha256(path: Path) -> str:
    return _digest(path, hashlib.sha256())


def _digest(path: Path, h: Any) -> str:
    """The hex digest of ``h`` (a hashlib object, maybe already fed a header) over the file's bytes."""
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


# ---------------------------------------------------------------------------------------------------- files
@dataclass
class Checkpoint:
    """What a weights file holds: the state dict and, when recorded, the architecture and metadata."""

    state_dict: dict[str, Tensor]
    config: Optional[BagNetConfig]
    metadata: dict[str, Any]


def read_header(path: str | os.PathLike) -> dict[str, Any]:
    """The metadata of a ``.safetensors`` file (JSON values decoded), without reading its tensors."""
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            raw = f.metadata() or {}
    except (SafetensorError, OSError, ValueError) as err:
        raise WeightsError(f"could not read weights file {path}: {err}") from err
    return {k: _maybe_json(v) for k, v in raw.items()}


def read_checkpoint(path: str | os.PathLike) -> Checkpoint:
    """Read a .safetensors, .pth, .pt or .pth.tar file (a plain state dict or a dict holding one)."""
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"weights file {path} does not exist")
    if path.suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        metadata = read_header(path)
        try:
            state = load_file(str(path))
        except (SafetensorError, OSError, ValueError) as err:
            raise WeightsError(f"could not read weights file {path}: {err}") from err
        config = metadata.pop("config", None)
        return Checkpoint(state, parse_bagnet_config(config, path) if config else None, metadata)
    if path.stat().st_size == 0:
        raise WeightsError(f"could not read weights file {path}: it is empty (0 bytes)")
    try:
        obj = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises many types for a broken file (pickle, zip, EOF, runtime)
        raise WeightsError(f"could not read weights file {path}: it {describe_load_error(err)}") from None
    if not isinstance(obj, Mapping):
        raise WeightsError(f"{path} holds a {type(obj).__name__}, expected a state dict (a mapping of tensors)")
    metadata: dict[str, Any] = {}
    config = None
    for key in ("state_dict", "model", "model_state_dict"):
        if key in obj and isinstance(obj[key], Mapping):
            metadata = {k: v for k, v in obj.items() if k != key and not isinstance(v, (Mapping, Tensor))}
            if isinstance(obj.get("config"), Mapping):
                config = parse_bagnet_config(dict(obj["config"]), path)
            if isinstance(obj.get("metadata"), Mapping):
                metadata.update(obj["metadata"])
            obj = obj[key]
            break
    state = {_strip_prefix(k): v for k, v in obj.items()}
    bad = [k for k, v in state.items() if not isinstance(v, Tensor)]
    if bad:
        raise WeightsError(f"{path}: entries {bad[:5]} are not tensors; expected a state dict")
    return Checkpoint(state, config, metadata)


#: Bounds on the numbers a BagNet config in a file's metadata may hold (checked before anything is built).
_CONFIG_BOUNDS: dict[str, tuple[int, int]] = {"width": (1, 4096), "num_classes": (1, 100_000), "in_channels": (1, 64)}


def parse_bagnet_config(data: Any, path: Path) -> BagNetConfig:
    """The BagNet config stored in a file's metadata, validated (known keys, integer values, bounds)."""
    if not isinstance(data, Mapping):
        raise WeightsError(f"{path}: its metadata 'config' must be a mapping, got {type(data).__name__}")
    known = set(BagNetConfig.__dataclass_fields__)
    unknown = sorted(set(data) - known)
    if unknown:
        raise WeightsError(f"{path}: its metadata 'config' has unknown keys {unknown}; known: {sorted(known)}")
    choices = {"stem": ("paper", "v2"), "align": ("corner", "centre"), "padding": (True, False)}
    for key, value in data.items():
        if key in choices:
            if value not in choices[key] or (key == "padding") != isinstance(value, bool):
                raise WeightsError(f"{path}: metadata config {key} must be one of {choices[key]}, got {value!r}")
            continue
        values = value if isinstance(value, (list, tuple)) else [value]
        if key in ("layers", "kernel3", "strides") and (not isinstance(value, (list, tuple)) or len(value) > 16):
            raise WeightsError(f"{path}: metadata config {key} must be a list of at most 16 integers, got {value!r}")
        if not all(isinstance(v, int) and not isinstance(v, bool) for v in values):
            raise WeightsError(f"{path}: metadata config {key} must hold integers, got {value!r}")
        low, high = _CONFIG_BOUNDS.get(key, (0, 64))
        if not all(low <= v <= high for v in values):
            raise WeightsError(f"{path}: metadata config {key}={value!r} is out of range [{low}, {high}]")
    try:
        return BagNetConfig.from_dict(dict(data))
    except (TypeError, ValueError) as err:
        raise WeightsError(f"{path}: its metadata 'config' is invalid: {err}") from err


def describe_load_error(err: BaseException) -> str:
    """Why ``torch.load(..., weights_only=True)`` refused a file, in one line, without torch's advice to turn the
    safety off (``weights_only=False`` would execute whatever the file holds)."""
    text = str(err)
    if "weights_only" in text or "Unsupported global" in text or "GLOBAL" in text:
        found = re.search(r"(Unsupported global: GLOBAL [\w.]+|unsupported [\w ]+ [\w.]+)", text, re.IGNORECASE)
        detail = f" ({found.group(0)})" if found else ""
        return f"holds objects other than tensors and plain data{detail}; bagnet never unpickles those"
    first = text.strip().splitlines()[0][:200] if text.strip() else ""
    return f"cannot be read ({type(err).__name__}{': ' + first if first else ''}); it is damaged or not a PyTorch file"


def read_state_dict(path: str | os.PathLike) -> dict[str, Tensor]:
    """Just the state dict of a weights file."""
    return read_checkpoint(path).state_dict


def save_weights(model: nn.Module, path: str | os.PathLike, metadata: Optional[Mapping[str, Any]] = None) -> Path:
    """Write ``model``'s parameters and buffers to ``path`` (.safetensors, with the config in the metadata; the
    name, class names and preprocessing of its :class:`ModelMeta` unless ``metadata`` gives them).

    Written to a temporary file first and renamed, so an interrupted save never leaves a broken file.
    """
    from safetensors.torch import save_file

    path = Path(path)
    if path.suffix != ".safetensors":
        raise ValueError(f"save_weights writes .safetensors files, got {path}")
    from ..plumbing import dumps_json

    meta = {}
    for key, value in (metadata or {}).items():
        try:
            meta[str(key)] = dumps_json(value, indent=None)
        except (TypeError, ValueError) as err:
            raise ValueError(f"save_weights: metadata {key!r} cannot be stored as JSON ({err}); give lists, "
                             f"numbers, strings and mappings of them") from None
    if getattr(model, "name", None) or getattr(model, "meta", None) is not None:
        # what the model's metadata knows and ``metadata`` does not say travels with the weights
        from .meta import model_meta

        own = model_meta(model)
        defaults = {"name": own.name, "preprocess": {k: v for k, v in own.preprocess.to_dict().items()}}
        if own.categories is not None:
            defaults["categories"] = list(own.categories)
        for key, value in defaults.items():
            meta.setdefault(key, json.dumps(value))
    config = getattr(model, "config", None)
    if isinstance(config, BagNetConfig):
        meta["config"] = json.dumps(config.to_dict())
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    broken = [k for k, v in state.items() if v.is_floating_point() and not bool(torch.isfinite(v).all())]
    if broken:
        raise WeightsError(f"save_weights: refusing to write {path}: {_abbrev(broken)} hold NaN or inf")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    save_file(state, str(tmp), metadata=meta)
    os.replace(tmp, path)
    return path


def _maybe_json(value: str) -> Any:
    try:
        return json.loads(value)
    except (json.JSONDecodeError, TypeError):
        return value


def _strip_prefix(key: str) -> str:
    for prefix in ("module.", "_orig_mod."):
        while key.startswith(prefix):
            key = key[len(prefix):]
    return key


# ---------------------------------------------------------------------------------------------------- checking
def infer_config(state_dict: Mapping[str, Tensor], strides: tuple[int, ...] | None = None) -> BagNetConfig:
    """The BagNet architecture a state dict was saved from (strides cannot be seen in weights: default 2,2,2,1)."""
    if "conv1.weight" not in state_dict or "fc.weight" not in state_dict:
        raise WeightsError("the state dict has no 'conv1.weight' or 'fc.weight': it is not a BagNet checkpoint")
    width = int(state_dict["conv1.weight"].shape[0])
    # BagNets v2: one 3×3 stem convolution and no conv2; their layers are same-padded (not visible in the weights)
    v2 = "conv2.weight" not in state_dict and state_dict["conv1.weight"].shape[-1] == 3
    layers: list[int] = []
    kernel3: list[int] = []
    stage = 1
    while any(k.startswith(f"layer{stage}.") for k in state_dict):
        blocks = 0
        while f"layer{stage}.{blocks}.conv2.weight" in state_dict:
            blocks += 1
        kernels = [int(state_dict[f"layer{stage}.{i}.conv2.weight"].shape[-1]) for i in range(blocks)]
        k3 = sum(1 for k in kernels if k == 3)
        if kernels != [3] * k3 + [1] * (blocks - k3):
            raise WeightsError(f"stage layer{stage} has conv2 kernels {kernels}; a BagNet has its 3×3 blocks first")
        layers.append(blocks)
        kernel3.append(k3)
        stage += 1
    if not layers:
        raise WeightsError("the state dict has no residual stages (layer1, layer2, …): it is not a BagNet checkpoint")
    if strides is None:
        strides = (2, 2, 2, 1) if len(layers) == 4 else tuple([2] * (len(layers) - 1) + [1])
    return BagNetConfig(
        layers=tuple(layers),
        kernel3=tuple(kernel3),
        strides=tuple(strides),
        width=width,
        num_classes=int(state_dict["fc.weight"].shape[0]),
        **(BagNetConfig.V2_LAYOUT if v2 else {}),
    )


def load_into(model: nn.Module, state_dict: Mapping[str, Tensor], source: str = "the checkpoint") -> None:
    """``model.load_state_dict(strict=True)`` with an error that lists missing, unexpected and mis-shaped keys."""
    state_dict = check_fits(model, state_dict, source)
    bad = [k for k, v in state_dict.items() if v.is_floating_point() and not bool(torch.isfinite(v).all())]
    if bad:
        raise WeightsError(f"{source} holds non-finite values (NaN or inf) in {_abbrev(bad)}: the weights are "
                           f"broken (a diverged training run?)")
    model.load_state_dict(state_dict, strict=True)


def check_fits(model: nn.Module, state_dict: Mapping[str, Tensor], source: str = "the checkpoint"
               ) -> dict[str, Tensor]:
    """The state dict completed with BatchNorm step counters, or a :class:`WeightsError` listing missing, unexpected
    and mis-shaped keys. Works on a model built on the ``meta`` device (nothing allocated)."""
    expected = model.state_dict()
    state_dict = dict(state_dict)
    for key, value in expected.items():
        # Checkpoints from PyTorch < 0.4.1 have no BatchNorm step counters; they carry no information.
        if key.endswith("num_batches_tracked") and key not in state_dict:
            state_dict[key] = torch.zeros_like(value)
    missing = [k for k in expected if k not in state_dict]
    unexpected = [k for k in state_dict if k not in expected]
    mismatched = [
        (k, tuple(state_dict[k].shape), tuple(v.shape))
        for k, v in expected.items()
        if k in state_dict and tuple(state_dict[k].shape) != tuple(v.shape)
    ]
    if missing or unexpected or mismatched:
        lines = [f"{source} does not fit {getattr(model, 'name', type(model).__name__)}:"]
        if missing:
            lines.append(f"  missing keys ({len(missing)}): {_abbrev(missing)}")
        if unexpected:
            lines.append(f"  unexpected keys ({len(unexpected)}): {_abbrev(unexpected)}")
        for key, got, want in mismatched[:10]:
            lines.append(f"  {key}: checkpoint has shape {list(got)}, model expects {list(want)}")
        if len(mismatched) > 10:
            lines.append(f"  … and {len(mismatched) - 10} more shape mismatches")
        fc = [m for m in mismatched if m[0] == "fc.weight"]
        if fc:
            lines.append(
                f"  hint: the checkpoint has {fc[0][1][0]} classes and the model {fc[0][2][0]}; "
                f"pass num_classes={fc[0][1][0]}"
            )
        raise WeightsError("\n".join(lines))
    return state_dict


def _abbrev(keys: list[str], n: int = 8) -> str:
    return ", ".join(keys[:n]) + (f", … (+{len(keys) - n} more)" if len(keys) > n else "")
