"""What every part of :class:`core.catalog.Catalog` stands on: its engine and a session per call.

The reads, vector reads and writes are mixins on this base (:mod:`core.catalog.reads`,
:mod:`core.catalog.vectors`, :mod:`core.catalog.writes`), each with one job; :mod:`core.catalog.store`
composes them and opens the engine.
"""

from __future__ import annotations

import logging

from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session, sessionmaker

logger = logging.getLogger(__name__)


class CatalogSessions:
    """An engine and its sessions: thread-safe, as every call takes a session of its own."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._sessions = sessionmaker(engine, expire_on_commit=False)

    def session(self) -> Session:
        return self._sessions()
