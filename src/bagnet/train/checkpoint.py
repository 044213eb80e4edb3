"""A training run's checkpoint: what it holds, and reading it back for ``--resume`` (safely, and only with the
settings it was written with)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from ..errors import ConfigError, RunFolderError
from .config import CHECKPOINT, TrainConfig


#: What a training checkpoint holds (all plain data and tensors: it is read with ``weights_only=True``).
CHECKPOINT_KEYS = ("config", "model", "optimizer", "scaler", "torch_rng", "epoch", "step_in_epoch", "history",
                   "wall_seconds")


def never_checkpointed(out: Path) -> bool:
    """A run folder that a run started in (its config.yaml is there) but that stopped before writing a checkpoint
    or a model (a full disk, an early error): ``--resume`` restarts it from the beginning."""
    return (out / "config.yaml").is_file() and not (out / CHECKPOINT).exists() and not (out / "model.safetensors").exists()


def read_run_checkpoint(path: Path, config: TrainConfig) -> dict[str, Any]:
    """A run's checkpoint for ``--resume``, read without executing anything (``weights_only``) and checked: that it
    is a bagnet training checkpoint and that it was written with the same settings as ``config``."""
    if not path.is_file():
        raise RunFolderError(f"--resume: there is no checkpoint {path}; start the run without --resume (or point "
                             f"--out at the run's folder)")
    fix = (f"it cannot be resumed: restore an intact copy of {path.name}, or start over in another --out (or delete "
           f"{path.parent})")
    if path.stat().st_size == 0:
        raise RunFolderError(f"{path} is empty (0 bytes; an interrupted copy?); {fix}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises many types for a broken or hostile file (pickle, zip, EOF, runtime)
        from ..models.weights import describe_load_error

        raise RunFolderError(f"{path} {describe_load_error(err)}; {fix}") from None
    if not isinstance(state, dict) or any(k not in state for k in CHECKPOINT_KEYS):
        missing = [k for k in CHECKPOINT_KEYS if not isinstance(state, dict) or k not in state]
        raise RunFolderError(f"{path} is not a bagnet training checkpoint (missing {missing}); {fix}")
    if not isinstance(state["config"], dict):
        raise RunFolderError(f"{path} holds no training config; {fix}")
    defaults = TrainConfig().to_dict()  # fields added since the checkpoint was written count as defaults
    saved = {k: state["config"].get(k, defaults[k]) for k in defaults}
    now = config.to_dict()
    if saved != now:
        diff = {k: (saved[k], v) for k, v in now.items() if saved[k] != v}
        raise ConfigError(f"--resume: the settings differ from those of the checkpoint {path} (checkpoint, now): "
                             f"{diff}; resume with the run's own settings (its config.yaml), or start a new run in "
                             f"another --out")
    return state
