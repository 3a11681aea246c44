"""Errors raised by the model code; each message says what is wrong and what to do about it."""

from __future__ import annotations


class ModelError(Exception):
    """Base class of the errors below."""


class WeightsError(ModelError):
    """A weights file exists but cannot be used: not HDF5, corrupt, or another architecture."""


class WeightsUnavailable(ModelError):
    """Pretrained weights cannot be had (no file, no download); the message names where to put them.

    Training reports the model as ``skipped`` with this message and goes on with the others.
    """


class UnknownModelError(ModelError, ValueError):
    """A model name that is not in the registry; the message lists the valid names."""
