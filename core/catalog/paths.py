"""File system paths as database text: the codecs, and the column types that apply them.

File names are bytes on POSIX; Python shows undecodable bytes as lone surrogates (U+DC80-U+DCFF),
which no database can store as text. They are kept as code points U+10FF80-U+10FFFF of the last
private-use plane instead: reversible, still text, and prefix queries on folders keep working.
"""

from __future__ import annotations

import logging

from sqlalchemy import Text, TypeDecorator
from sqlalchemy.engine import Dialect

logger = logging.getLogger(__name__)

_SURROGATE_TO_PRIVATE = {code: code - 0xDC80 + 0x10FF80 for code in range(0xDC80, 0xDD00)}
_PRIVATE_TO_SURROGATE = {private: surrogate for surrogate, private in _SURROGATE_TO_PRIVATE.items()}


def path_to_db(path: str) -> str:
    """A file system path as storable text (see the module docstring)."""
    return path.translate(_SURROGATE_TO_PRIVATE)


def path_from_db(text: str) -> str:
    """The file system path back from :func:`path_to_db`."""
    return text.translate(_PRIVATE_TO_SURROGATE)


class FsPath(TypeDecorator[str]):
    """Text column holding a file system path, undecodable bytes included."""

    impl = Text
    cache_ok = True

    def process_bind_param(self, value: str | None, dialect: Dialect) -> str | None:
        return None if value is None else path_to_db(value)

    def process_result_value(self, value: str | None, dialect: Dialect) -> str | None:
        return None if value is None else path_from_db(value)


class MessageText(TypeDecorator[str]):
    """Text column holding a message for people, which may quote an undecodable file name or a NUL byte
    (PostgreSQL text rejects both): names are kept as :class:`FsPath` keeps them, NUL becomes U+FFFD."""

    impl = Text
    cache_ok = True

    def process_bind_param(self, value: str | None, dialect: Dialect) -> str | None:
        return None if value is None else path_to_db(value).replace("\x00", "\ufffd")

    def process_result_value(self, value: str | None, dialect: Dialect) -> str | None:
        return None if value is None else path_from_db(value)
