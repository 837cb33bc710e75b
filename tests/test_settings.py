"""Which config file, data dir, models dir and catalog a command uses: flags > environment > config file >
folders of earlier versions > per-user defaults (core/settings.py, core/locations.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from core.config import LoupeConfig, ModelConfig
from core.errors import ConfigError
from core.locations import user_config_file, user_data_dir, user_models_dir
from core.settings import Requested, Source, resolve_settings
from core.weights import pretrained_file_name

FLAG_DIR, ENV_DIR, FILE_DIR = Path("/flag/data"), Path("/env/data"), Path("/file/data")
FLAG_URL, ENV_URL, FILE_URL = "sqlite:////flag.db", "sqlite:////env.db", "sqlite:////file.db"


def _write_config(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


@pytest.mark.parametrize(
    ("flag", "env", "file", "expected", "source"),
    [
        (True, True, True, FLAG_DIR, Source.FLAG),
        (True, False, True, FLAG_DIR, Source.FLAG),
        (False, True, True, ENV_DIR, Source.ENVIRONMENT),
        (False, True, False, ENV_DIR, Source.ENVIRONMENT),
        (False, False, True, FILE_DIR, Source.CONFIG_FILE),
        (True, True, False, FLAG_DIR, Source.FLAG),
    ],
)
def test_data_dir_and_catalog_precedence(
    tmp_path: Path, flag: bool, env: bool, file: bool, expected: Path, source: Source
) -> None:
    config_file = _write_config(
        tmp_path / "elsewhere" / "loupe.yaml",
        f"data_dir: {FILE_DIR}\ndb_url: {FILE_URL}\n" if file else "data_dir: null\n",
    )
    environ = {"LOUPE_CONFIG": str(config_file)}
    if env:
        environ |= {"LOUPE_DATA_DIR": str(ENV_DIR), "LOUPE_DB_URL": ENV_URL}
    requested = Requested(data_dir=FLAG_DIR, db_url=FLAG_URL) if flag else Requested()
    settings = resolve_settings(requested, environ=environ, cwd=tmp_path)
    assert settings.config.data_dir == expected
    assert settings.origins.data_dir_source is source
    # The catalog URL follows the same order, from the same places.
    urls = {FLAG_DIR: FLAG_URL, ENV_DIR: ENV_URL, FILE_DIR: FILE_URL}
    assert settings.config.db_url == urls[expected]
    assert settings.origins.db_url_source is source


def test_config_file_lookup_order(tmp_path: Path) -> None:
    def picked(requested: Requested, environ: dict[str, str]) -> tuple[Path | None, Source]:
        origins = resolve_settings(requested, environ=environ, cwd=tmp_path).origins
        return origins.config_file, origins.config_file_source

    assert picked(Requested(), {}) == (None, Source.DEFAULT)
    personal = _write_config(user_config_file(), "search:\n  default_k: 4\n")
    assert picked(Requested(), {}) == (personal, Source.USER_DEFAULT)
    local = _write_config(tmp_path / "config.yaml", "search:\n  default_k: 3\n")
    assert picked(Requested(), {}) == (local, Source.WORKING_DIR)
    named = _write_config(tmp_path / "env.yaml", "search:\n  default_k: 2\n")
    assert picked(Requested(), {"LOUPE_CONFIG": str(named)}) == (named, Source.ENVIRONMENT)
    flagged = _write_config(tmp_path / "flag.yaml", "search:\n  default_k: 1\n")
    assert picked(Requested(config_file=flagged), {"LOUPE_CONFIG": str(named)}) == (flagged, Source.FLAG)
    # The settings come from the file that was picked.
    assert resolve_settings(Requested(config_file=flagged), cwd=tmp_path).config.search.default_k == 1
    assert resolve_settings(cwd=tmp_path).config.search.default_k == 3
    # An empty variable counts as unset.
    assert picked(Requested(), {"LOUPE_CONFIG": ""}) == (local, Source.WORKING_DIR)


@pytest.mark.parametrize("how", ["flag", "environment"])
def test_a_named_config_file_that_is_missing_is_an_error(tmp_path: Path, how: str) -> None:
    missing = tmp_path / "missing.yaml"
    _write_config(tmp_path / "config.yaml", "")  # present, but never a stand-in for a named file
    requested = Requested(config_file=missing) if how == "flag" else Requested()
    environ = {"LOUPE_CONFIG": str(missing)} if how == "environment" else {}
    with pytest.raises(ConfigError, match=r"cannot read config file .*missing\.yaml"):
        resolve_settings(requested, environ=environ, cwd=tmp_path)


def test_per_user_defaults_follow_the_platform_dirs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "share"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "etc"))
    assert user_data_dir() == tmp_path / "share" / "loupe"
    assert user_models_dir() == tmp_path / "cache" / "loupe" / "models"
    assert user_config_file() == tmp_path / "etc" / "loupe" / "config.yaml"
    work = tmp_path / "work"
    work.mkdir()
    settings = resolve_settings(environ={}, cwd=work)
    assert settings.config.data_dir == tmp_path / "share" / "loupe"
    assert settings.config.model.models_dir == tmp_path / "cache" / "loupe" / "models"
    assert settings.origins.data_dir_source is Source.USER_DEFAULT
    assert settings.origins.models_dir_source is Source.USER_DEFAULT
    assert settings.origins.notices(settings.config) == []
    # The library's own defaults are the same folders, and nothing was created by looking them up.
    assert LoupeConfig().data_dir == settings.config.data_dir
    assert LoupeConfig().model.models_dir == settings.config.model.models_dir
    assert not (tmp_path / "share").exists() and not (tmp_path / "cache").exists()


def test_null_in_a_config_file_means_the_per_user_default(tmp_path: Path) -> None:
    path = _write_config(tmp_path / "c.yaml", "data_dir: null\nmodel:\n  models_dir: null\n")
    settings = resolve_settings(Requested(config_file=path), environ={}, cwd=tmp_path)
    assert settings.config.data_dir == user_data_dir()
    assert settings.config.model.models_dir == user_models_dir()
    assert settings.origins.data_dir_source is Source.USER_DEFAULT


def test_an_existing_loupe_data_folder_keeps_being_used(tmp_path: Path) -> None:
    (tmp_path / "loupe-data").mkdir()
    (tmp_path / "loupe-data" / "catalog.sqlite").write_bytes(b"")
    settings = resolve_settings(environ={}, cwd=tmp_path)
    assert settings.config.data_dir == tmp_path / "loupe-data"
    assert settings.origins.data_dir_source is Source.LEGACY
    (notice,) = settings.origins.notices(settings.config)
    assert str(tmp_path / "loupe-data") in notice and str(user_data_dir()) in notice
    # Anything that names a data dir wins over it.
    assert resolve_settings(Requested(data_dir=FLAG_DIR), environ={}, cwd=tmp_path).config.data_dir == FLAG_DIR
    named = resolve_settings(environ={"LOUPE_DATA_DIR": str(ENV_DIR)}, cwd=tmp_path)
    assert named.config.data_dir == ENV_DIR and named.origins.notices(named.config) == []


def test_weights_in_an_existing_models_folder_keep_being_found(tmp_path: Path) -> None:
    (tmp_path / "models").mkdir()
    assert resolve_settings(environ={}, cwd=tmp_path).config.model.models_dir == user_models_dir()
    (tmp_path / "models" / pretrained_file_name(ModelConfig())).write_bytes(b"weights")
    settings = resolve_settings(environ={}, cwd=tmp_path)
    assert settings.config.model.models_dir == tmp_path / "models"
    assert settings.origins.models_dir_source is Source.LEGACY
    assert settings.origins.notices(settings.config) == [
        f"note: using the weights in {tmp_path / 'models'}, found where earlier versions of Loupe looked "
        f"(the default is now {user_models_dir()})"
    ]
    named = _write_config(tmp_path / "c.yaml", "model:\n  models_dir: /opt/weights\n")
    from_file = resolve_settings(Requested(config_file=named), environ={}, cwd=tmp_path)
    assert from_file.config.model.models_dir == Path("/opt/weights")
    assert from_file.origins.models_dir_source is Source.CONFIG_FILE


def test_relative_paths_in_a_config_file_are_taken_from_its_folder(tmp_path: Path) -> None:
    path = _write_config(
        tmp_path / "conf" / "loupe.yaml",
        "data_dir: index\nmodel:\n  models_dir: weights\n  weights: nets/mine.pt\n"
        "search:\n  reference_folders: [originals, /mnt/archive]\n",
    )
    elsewhere = tmp_path / "work"
    elsewhere.mkdir()
    config = resolve_settings(environ={"LOUPE_CONFIG": str(path)}, cwd=elsewhere).config
    assert config.data_dir == tmp_path / "conf" / "index"
    assert config.model.models_dir == tmp_path / "conf" / "weights"
    assert config.model.weights == str(tmp_path / "conf" / "nets" / "mine.pt")
    assert config.search.reference_folders == (tmp_path / "conf" / "originals", Path("/mnt/archive"))
    # A file named relative to the working directory: its folder, still.
    relative = resolve_settings(Requested(config_file=Path("conf/loupe.yaml")), environ={}, cwd=tmp_path).config
    assert relative.data_dir == tmp_path / "conf" / "index"


def test_a_relative_data_dir_that_only_exists_under_the_working_dir_is_still_found(tmp_path: Path) -> None:
    # Earlier versions took a config file's relative paths from the working directory: an index built
    # that way must not disappear.
    path = _write_config(tmp_path / "conf" / "loupe.yaml", "data_dir: my-index\n")
    (tmp_path / "my-index").mkdir()
    settings = resolve_settings(environ={"LOUPE_CONFIG": str(path)}, cwd=tmp_path)
    assert settings.config.data_dir == tmp_path / "my-index"
    assert settings.origins.data_dir_source is Source.LEGACY
    (tmp_path / "conf" / "my-index").mkdir()
    settings = resolve_settings(environ={"LOUPE_CONFIG": str(path)}, cwd=tmp_path)
    assert settings.config.data_dir == tmp_path / "conf" / "my-index"
    assert settings.origins.data_dir_source is Source.CONFIG_FILE


def test_other_flags_override_the_file_and_a_bad_file_names_itself(tmp_path: Path) -> None:
    path = _write_config(tmp_path / "c.yaml", "runtime:\n  batch_size: 8\n")
    settings = resolve_settings(Requested(config_file=path), {"runtime.batch_size": 2}, environ={}, cwd=tmp_path)
    assert settings.config.runtime.batch_size == 2
    _write_config(path, "runtime:\n  batch_size: -3\n")
    with pytest.raises(ConfigError, match=r"c\.yaml: runtime\.batch_size"):
        resolve_settings(Requested(config_file=path), environ={}, cwd=tmp_path)


def test_the_suite_never_sees_the_developers_settings(hermetic_user_dirs: Path) -> None:
    # The autouse fixture in conftest.py: per-user folders under a temporary folder, no LOUPE_* settings.
    assert hermetic_user_dirs in user_data_dir().parents
    assert hermetic_user_dirs in user_config_file().parents
    settings = resolve_settings(cwd=hermetic_user_dirs)
    assert settings.origins.config_file is None
    assert settings.origins.data_dir_source is Source.USER_DEFAULT
