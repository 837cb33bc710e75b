"""Typed exceptions raised by Loupe's library code (core, indexer, search).

Library code raises these; only the CLIs (:mod:`core.command_line`) and the UI turn them into messages and
exit codes.
"""

from __future__ import annotations


class LoupeError(Exception):
    """Base class of every error Loupe raises on purpose."""


class ConfigError(LoupeError):
    """A config file or a CLI override names an unknown key or holds a bad value."""


class EngineError(LoupeError):
    """The execution engine (Ray) failed while running the build; committed batches stay committed."""


class EngineUnavailableError(EngineError):
    """The configured execution engine cannot run here (for example Ray is not installed)."""


class WeightsUnavailableError(LoupeError):
    """The model weights are not on this machine and cannot be downloaded."""


class WeightsError(LoupeError):
    """A weights file exists but cannot be used (wrong hash, wrong format, wrong model)."""


class ProvenanceMismatchError(LoupeError):
    """The catalog was built with another model, weights or image size than the one asked for."""


class CatalogError(LoupeError):
    """The catalog database cannot be opened or is not a Loupe catalog."""


class IndexFileError(LoupeError):
    """A FAISS index file is missing, unreadable or does not belong to this catalog."""


class DecodeError(LoupeError):
    """A file could not be turned into an RGB image.

    ``reason`` is a short, stable slug (for example ``"truncated"`` or ``"too-many-pixels"``) that
    summaries group failures by; the message says what happened to this file.
    """

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason

    def __str__(self) -> str:
        return f"{self.reason}: {self.args[0]}"
