"""What the UI loads once per process: the config, the search engine and the collection status.

``streamlit run ui/app.py -- --data-dir DIR [--db-url URL] [--config FILE]``; without flags they come from
``LOUPE_DATA_DIR`` / ``LOUPE_DB_URL`` / ``LOUPE_CONFIG`` in the environment (which keeps a database
password out of the process list), then the config file, then the defaults, as for every command
(:mod:`core.settings`).
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Any

import streamlit as st

from core.config import LoupeConfig
from core.errors import LoupeError
from core.report import collection_status
from core.settings import Requested, resolve_settings
from search.engine import SearchEngine

logger = logging.getLogger(__name__)


def resolve_config() -> LoupeConfig:
    """The collection to show: flags after ``--``, else the environment, else the config file, else the
    defaults (:func:`core.settings.resolve_settings`)."""
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("--data-dir", type=Path)
    parser.add_argument("--config", type=Path)
    parser.add_argument("--db-url")
    args, _ = parser.parse_known_args(sys.argv[1:])
    settings = resolve_settings(Requested(args.config, args.data_dir, args.db_url))
    for line in settings.origins.notices(settings.config):
        logger.warning("%s", line)
    return settings.config


@st.cache_resource(show_spinner="Opening the collection and loading the model...")
def open_engine(config: LoupeConfig) -> SearchEngine:
    """One engine per process and collection, shared by every browser session (it is thread-safe).
    The model loads here, once, rather than on somebody's first query."""
    engine = SearchEngine.open(config)
    try:
        engine.load_model()
    except LoupeError as error:
        # "More like this" and duplicates still work; image queries will show this error.
        logger.warning("model not loaded: %s", error)
    return engine


def engine_or_none(config: LoupeConfig) -> tuple[SearchEngine | None, str | None]:
    """The engine, or why there is none (no index yet, unreadable catalog) as a message for people."""
    try:
        return open_engine(config), None
    except LoupeError as error:
        return None, str(error)


def status(config: LoupeConfig) -> dict[str, Any]:
    """The collection header's facts (cheap: a few catalog counts and the index pointer files)."""
    return collection_status(config)


BUILD_HELP = """No index to show yet. Build one, then reload this page:

```
python -m indexer build /path/to/photos --data-dir {data_dir}
```
"""


def require_engine() -> SearchEngine:
    """The engine of the configured collection, or a how-to-build message and the end of this run."""
    config = resolve_config()
    engine, problem = engine_or_none(config)
    if engine is None:
        st.info(BUILD_HELP.format(data_dir=config.data_dir))
        if problem:
            st.caption(problem)
        st.stop()
    assert engine is not None
    return engine
