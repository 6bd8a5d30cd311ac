"""The errors a user's input can cause, in one module that imports nothing heavy: the CLI
catches them (one ``error:`` line, exit status 2) without importing torch first."""

from __future__ import annotations

from .config import ConfigError


class ImageReadError(ValueError):
    """An image file could not be read; the message names the file."""


class ImageTooLargeError(ImageReadError):
    """An image declares more pixels than the reader's limit (checked before decoding)."""


class ModelFileError(ValueError):
    """A model file is unreadable, truncated, foreign or does not match its method."""


class OptionError(ValueError):
    """An upscale option out of its range, unknown, or a tile plan that makes no sense."""


class NonFiniteOutputError(ValueError):
    """A model produced NaN or infinite values: nothing is written."""


class DeployError(RuntimeError):
    """The deploy extra is missing, or a model cannot be exported; the message says what to do."""


class UsageError(Exception):
    """A bad argument found after parsing (a path, two flags together)."""


USER_ERRORS = (ModelFileError, ImageReadError, ConfigError, FileNotFoundError, DeployError,
               OptionError, UsageError, NonFiniteOutputError)
