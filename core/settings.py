"""Which config file, data dir, models dir and catalog a command uses, and why.

Every command (``indexer``, ``search``, the UI, the benchmarks) calls :func:`resolve_settings`, so they all
agree. Precedence, first match wins:

- config file: ``--config`` > ``LOUPE_CONFIG`` > ``./config.yaml`` > the per-user ``config.yaml`` > none
  (built-in defaults). A file named by the flag or the environment must exist.
- data dir: ``--data-dir`` > ``LOUPE_DATA_DIR`` > the config file's ``data_dir`` > ``./loupe-data`` when
  that folder exists (the default of earlier versions) > the per-user data dir.
- catalog: ``--db-url`` > ``LOUPE_DB_URL`` > the config file's ``db_url`` > SQLite in the data dir.
- models dir: the config file's ``model.models_dir`` > ``./models`` when it holds the pretrained weights
  file > the per-user cache dir.

Relative paths in a config file (``data_dir``, ``model.models_dir``, a ``model.weights`` file,
``search.reference_folders``) are taken from the folder of that file, so a file means the same from any
working directory. One exception keeps old set-ups working: when the file's relative ``data_dir`` does
not exist there but does under the working directory (the rule of earlier versions), that one is used and
the command says so.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

from core.config import LoupeConfig, config_from_mapping, read_config_mapping, with_overrides
from core.errors import ConfigError
from core.locations import (
    existing_user_config_file,
    legacy_data_dir,
    legacy_models_dir,
    user_data_dir,
    user_models_dir,
    working_dir_config_file,
)
from core.weights import pretrained_file_name

logger = logging.getLogger(__name__)

ENV_CONFIG = "LOUPE_CONFIG"
ENV_DATA_DIR = "LOUPE_DATA_DIR"
ENV_DB_URL = "LOUPE_DB_URL"
ENVIRONMENT_VARIABLES = (ENV_CONFIG, ENV_DATA_DIR, ENV_DB_URL)


class Source(StrEnum):
    """Where a setting came from, as ``status`` shows it."""

    FLAG = "flag"
    ENVIRONMENT = "environment"
    CONFIG_FILE = "config file"
    WORKING_DIR = "working directory"
    LEGACY = "legacy folder"
    USER_DEFAULT = "per-user default"
    DEFAULT = "default"


@dataclass(frozen=True)
class Requested:
    """What the command line named (None: not named)."""

    config_file: Path | None = None
    data_dir: Path | None = None
    db_url: str | None = None


@dataclass(frozen=True)
class Origins:
    """Where the config file, the data dir, the models dir and the catalog URL came from."""

    config_file: Path | None
    config_file_source: Source
    data_dir_source: Source
    models_dir_source: Source
    db_url_source: Source

    def notices(self, config: LoupeConfig) -> list[str]:
        """One line per folder found by an earlier version's rule, for the command to print."""
        lines: list[str] = []
        if self.data_dir_source is Source.LEGACY:
            lines.append(
                f"note: using the data dir {config.data_dir.resolve()}, found where earlier versions of Loupe "
                f"looked (the default is now {user_data_dir()}); name one with --data-dir, {ENV_DATA_DIR} "
                "or data_dir in the config file to silence this note"
            )
        if self.models_dir_source is Source.LEGACY:
            lines.append(
                f"note: using the weights in {config.model.models_dir.resolve()}, found where earlier versions "
                f"of Loupe looked (the default is now {user_models_dir()})"
            )
        return lines


@dataclass(frozen=True)
class ResolvedSettings:
    """The config a command runs with, and where its locations came from."""

    config: LoupeConfig
    origins: Origins


def _from_environment(environ: Mapping[str, str], name: str) -> str | None:
    value = environ.get(name, "")
    return value or None  # an empty variable counts as unset, as in most tools


def _find_config_file(requested: Path | None, environ: Mapping[str, str], cwd: Path) -> tuple[Path | None, Source]:
    if requested is not None:
        return cwd / requested.expanduser(), Source.FLAG
    named = _from_environment(environ, ENV_CONFIG)
    if named is not None:
        return cwd / Path(named).expanduser(), Source.ENVIRONMENT
    local = working_dir_config_file(cwd)
    if local is not None:
        return local, Source.WORKING_DIR
    personal = existing_user_config_file()
    if personal is not None:
        return personal, Source.USER_DEFAULT
    return None, Source.DEFAULT


def _relative_to(base: Path, value: Any) -> Any:
    """``value`` made absolute against ``base`` when it is a relative path string (other values are left
    for validation to judge)."""
    if not isinstance(value, str) or value == "":
        return value
    path = Path(value).expanduser()
    return value if path.is_absolute() else str(base / path)


def _file_data_dir(raw: Any, base: Path, cwd: Path) -> tuple[Any, Source]:
    """The config file's ``data_dir`` taken from the file's folder; or, when that folder does not exist
    and the same relative path under the working directory does (earlier versions' rule), that one, so
    nobody's index disappears."""
    anchored = _relative_to(base, raw)
    if anchored is raw:
        return raw, Source.CONFIG_FILE
    old = cwd / Path(raw).expanduser()
    if not Path(anchored).exists() and old.is_dir():
        return str(old), Source.LEGACY
    return anchored, Source.CONFIG_FILE


def resolve_settings(
    requested: Requested | None = None,
    overrides: Mapping[str, Any] | None = None,
    *,
    environ: Mapping[str, str] | None = None,
    cwd: Path | None = None,
) -> ResolvedSettings:
    """The config for a command: ``requested`` (its location flags), then ``environ`` (default:
    ``os.environ``), then the config file, then the defaults; ``overrides`` are the command's other flags,
    as dotted keys (None values ignored). Relative names in flags and variables are taken from ``cwd``
    (default: the working directory). Raises :class:`ConfigError` for a bad or missing named file."""
    requested = requested or Requested()
    environ = os.environ if environ is None else environ
    cwd = Path.cwd() if cwd is None else cwd

    config_file, config_source = _find_config_file(requested.config_file, environ, cwd)
    data: dict[str, Any] = {}
    data_dir_source = models_dir_source = db_url_source = Source.DEFAULT
    if config_file is not None:
        data = read_config_mapping(config_file)
        base = config_file.parent
        if data.get("data_dir") is not None:
            data["data_dir"], data_dir_source = _file_data_dir(data["data_dir"], base, cwd)
        model = data.get("model")
        if isinstance(model, dict):
            if model.get("models_dir") is not None:
                model["models_dir"] = _relative_to(base, model["models_dir"])
                models_dir_source = Source.CONFIG_FILE
            if model.get("weights") not in (None, "pretrained", "random"):
                model["weights"] = _relative_to(base, model["weights"])
        search = data.get("search")
        if isinstance(search, dict) and isinstance(search.get("reference_folders"), list):
            search["reference_folders"] = [_relative_to(base, folder) for folder in search["reference_folders"]]
        if data.get("db_url") is not None:
            db_url_source = Source.CONFIG_FILE
        try:
            config = config_from_mapping(data)
        except ConfigError as error:
            raise ConfigError(f"{config_file}: {error}") from error
    else:
        config = LoupeConfig()

    locations: dict[str, Any] = {}
    env_data_dir = _from_environment(environ, ENV_DATA_DIR)
    if requested.data_dir is not None:
        locations["data_dir"], data_dir_source = cwd / requested.data_dir.expanduser(), Source.FLAG
    elif env_data_dir is not None:
        locations["data_dir"], data_dir_source = cwd / Path(env_data_dir).expanduser(), Source.ENVIRONMENT
    elif data_dir_source is Source.DEFAULT:
        legacy = legacy_data_dir(cwd)
        if legacy is not None:
            locations["data_dir"], data_dir_source = legacy, Source.LEGACY
        else:
            locations["data_dir"], data_dir_source = user_data_dir(), Source.USER_DEFAULT

    env_db_url = _from_environment(environ, ENV_DB_URL)
    if requested.db_url is not None:
        locations["db_url"], db_url_source = requested.db_url, Source.FLAG
    elif env_db_url is not None:
        locations["db_url"], db_url_source = env_db_url, Source.ENVIRONMENT

    if models_dir_source is Source.DEFAULT:
        legacy = legacy_models_dir(cwd, pretrained_file_name(config.model))
        if legacy is not None:
            locations["model.models_dir"], models_dir_source = legacy, Source.LEGACY
        else:
            locations["model.models_dir"], models_dir_source = user_models_dir(), Source.USER_DEFAULT

    config = with_overrides(config, {**locations, **(overrides or {})})
    origins = Origins(
        config_file=config_file,
        config_file_source=config_source,
        data_dir_source=data_dir_source,
        models_dir_source=models_dir_source,
        db_url_source=db_url_source,
    )
    logger.info(
        "config file %s (%s), data dir %s (%s), models dir %s (%s)",
        origins.config_file or "none",
        config_source,
        config.data_dir,
        data_dir_source,
        config.model.models_dir,
        models_dir_source,
    )
    return ResolvedSettings(config=config, origins=origins)


def origins_to_dict(config: LoupeConfig, origins: Origins) -> dict[str, Any]:
    """The locations block of ``status --json``."""
    return {
        "data_dir_source": str(origins.data_dir_source),
        "models_dir": str(config.model.models_dir.resolve()),
        "models_dir_source": str(origins.models_dir_source),
        "config_file": None if origins.config_file is None else str(origins.config_file),
        "config_file_source": str(origins.config_file_source),
        "catalog_source": str(origins.db_url_source),
    }
