"""Where Loupe keeps things when nobody says: the user's own folders, and the folders of earlier versions.

The per-user folders are the platform's conventional ones, as ``platformdirs`` names them (Linux: the
XDG base directories; macOS: ``~/Library``; Windows: ``%LOCALAPPDATA%``):

- data (catalog, index files, thumbnails): ``platformdirs.user_data_path("loupe")``;
- downloaded model weights: ``models`` in ``platformdirs.user_cache_path("loupe")`` (they can be fetched
  again, so they belong in the cache);
- the per-user config file: ``config.yaml`` in ``platformdirs.user_config_path("loupe")``.

Earlier versions kept the data in ``./loupe-data`` and the weights in ``./models`` of the working directory;
:func:`legacy_data_dir` and :func:`legacy_models_dir` find those, so an existing index keeps working.
Nothing here creates a folder: the writer that needs one does.
"""

from __future__ import annotations

from pathlib import Path

import platformdirs

APP_NAME = "loupe"
CONFIG_FILE_NAME = "config.yaml"
LEGACY_DATA_DIR = Path("loupe-data")
LEGACY_MODELS_DIR = Path("models")


def user_data_dir() -> Path:
    """The per-user data dir (Linux: ``$XDG_DATA_HOME/loupe``, by default ``~/.local/share/loupe``)."""
    return platformdirs.user_data_path(APP_NAME, appauthor=False)


def user_models_dir() -> Path:
    """Where pretrained weights are looked for and downloaded (Linux: ``~/.cache/loupe/models``)."""
    return platformdirs.user_cache_path(APP_NAME, appauthor=False) / "models"


def user_config_file() -> Path:
    """The per-user config file (Linux: ``$XDG_CONFIG_HOME/loupe/config.yaml``); it may not exist."""
    return platformdirs.user_config_path(APP_NAME, appauthor=False) / CONFIG_FILE_NAME


def working_dir_config_file(cwd: Path) -> Path | None:
    """``./config.yaml`` when the working directory has one."""
    path = cwd / CONFIG_FILE_NAME
    return path if path.is_file() else None


def existing_user_config_file() -> Path | None:
    """The per-user config file when it exists."""
    path = user_config_file()
    return path if path.is_file() else None


def legacy_data_dir(cwd: Path) -> Path | None:
    """``./loupe-data`` when the working directory has that folder (the default data dir before
    per-user folders): an index built there must not disappear because the default moved."""
    path = cwd / LEGACY_DATA_DIR
    return path if path.is_dir() else None


def legacy_models_dir(cwd: Path, weights_file_name: str) -> Path | None:
    """``./models`` when it holds the pretrained weights file (the default models dir before per-user
    folders), so nobody downloads 84 MB again or copies the file by hand."""
    path = cwd / LEGACY_MODELS_DIR
    return path if (path / weights_file_name).is_file() else None
