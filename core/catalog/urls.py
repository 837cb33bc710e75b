"""Database URLs without their passwords: for messages, and for the settings saved beside an index."""

from __future__ import annotations

import logging

from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import SQLAlchemyError

logger = logging.getLogger(__name__)


def error_without_password(error: SQLAlchemyError, parsed: URL) -> str:
    """The driver's message, with the password cut out should a driver ever quote its connection string."""
    text = str(error.args[0]) if error.args else str(error)
    if parsed.password:
        text = text.replace(str(parsed.password), "***")
    return text


def url_without_password(url: str) -> str:
    """A database URL that can be written to disk: the password left out (libpq finds it in ~/.pgpass or
    PGPASSWORD when the URL has none)."""
    try:
        parsed = make_url(url)
        bare = URL.create(
            parsed.drivername, parsed.username, None, parsed.host, parsed.port, parsed.database, parsed.query
        )
        return bare.render_as_string(hide_password=False)
    except (SQLAlchemyError, ValueError):
        return "<unparseable url>"


def redact_url(url: str) -> str:
    """A database URL without its password, for messages."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except (SQLAlchemyError, ValueError):
        return "<unparseable url>"
