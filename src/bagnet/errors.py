"""Errors the package raises on purpose, each with a message that names the problem (stdlib only)."""

from __future__ import annotations


class ConfigError(ValueError):
    """A setting is invalid: wrong type, out of range, unknown, or missing (the command line's exit code 2).

    The message names the setting (and the file and line when it came from a file) and the allowed values;
    ``field`` is the setting's name when there is one.
    """

    def __init__(self, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field


class NotABagNetError(ConfigError, TypeError):
    """A function that exists only for BagNets (exact heatmaps, explanations, certificates) got another model.

    A usage error (exit code 2 on the command line); a ``TypeError`` and a ``ValueError`` for code that caught
    either before there was one type for it."""


class RunFolderError(ValueError):
    """A training run's folder cannot be used as asked (a damaged, foreign or missing checkpoint for ``--resume``);
    the message names the file and says what to do. Nothing in the folder was changed. (A changed setting on
    ``--resume`` is a :class:`ConfigError`: a usage error.)"""


class TrainingDiverged(RuntimeError):
    """Training produced a non-finite loss or non-finite weights; the run's last finite checkpoint is kept."""


class PatchIndexError(ValueError):
    """A patch index folder that cannot be used as asked (missing, damaged, incomplete, or built for another model
    or dataset); the message names the folder or file and what to do. Nothing in it was changed."""
