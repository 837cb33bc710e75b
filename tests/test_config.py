from __future__ import annotations

from pathlib import Path

import pytest

from core.config import LoupeConfig, config_from_mapping, dump_config, load_config, with_overrides
from core.errors import ConfigError

ROOT = Path(__file__).resolve().parent.parent


def test_shipped_config_yaml_equals_the_defaults() -> None:
    # config.yaml documents every setting with its default; the two must never drift apart.
    assert load_config(ROOT / "config.yaml") == LoupeConfig()


def test_missing_default_file_gives_defaults(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert load_config() == LoupeConfig()


def test_explicit_missing_file_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read config file"):
        load_config(tmp_path / "nope.yaml")


def test_unknown_key_is_named(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("index:\n  nprob: 4\n")
    with pytest.raises(ConfigError, match=r"unknown setting index\.nprob"):
        load_config(path)


@pytest.mark.parametrize(
    ("data", "key"),
    [
        ({"runtime": {"batch_size": -1}}, "runtime.batch_size"),
        ({"runtime": {"compile": "sometimes"}}, "runtime.compile"),
        ({"runtime": {"gpu_jpeg": True}}, "runtime.gpu_jpeg"),
        ({"runtime": {"batch_size": "8"}}, "runtime.batch_size"),
        ({"runtime": {"workers": True}}, "runtime.workers"),
        ({"runtime": {"device": "tpu"}}, "runtime.device"),
        ({"model": {"image_size": 100}}, "model.image_size"),
        ({"model": "x"}, "model"),
        ({"decode": {"follow_symlinks": "yes"}}, "decode.follow_symlinks"),
        ({"index": {"lists_per_sqrt": 0}}, "index.lists_per_sqrt"),
        ({"scan": {"exclude": "*.jpg"}}, "scan.exclude"),
        ({"scan": {"exclude": [3]}}, r"scan.exclude\[0\]"),
        ({"scan": {"exclude": ["thumbnails/*"]}}, "scan.exclude"),
        ({"search": {"region_query_scales": [0.5]}}, "search.region_query_scales"),
        ({"search": {"region_query_scales": [1.414, 8]}}, "search.region_query_scales"),
    ],
)
def test_bad_values_name_their_key(data: dict[str, object], key: str) -> None:
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        config_from_mapping(data)


def test_exclude_patterns_and_mps_are_accepted_and_round_trip(tmp_path: Path) -> None:
    config = config_from_mapping(
        {"scan": {"exclude": ["*/thumbnails/*", "/photos/raw/"]}, "runtime": {"device": "mps"}}
    )
    assert config.scan.exclude == ("*/thumbnails/*", "/photos/raw/")
    assert config.runtime.device == "mps"
    path = tmp_path / "resolved.yaml"
    path.write_text(dump_config(config))
    assert load_config(path) == config
    assert with_overrides(config, {"scan.exclude": ["*.tmp.jpg"]}).scan.exclude == ("*.tmp.jpg",)


def test_overrides_replace_and_validate() -> None:
    config = with_overrides(LoupeConfig(), {"runtime.batch_size": 3, "data_dir": Path("/x"), "db_url": None})
    assert config.runtime.batch_size == 3
    assert config.data_dir == Path("/x")
    assert config.model == LoupeConfig().model
    with pytest.raises(ConfigError, match=r"runtime\.batch_size"):
        with_overrides(config, {"runtime.batch_size": -1})
    with pytest.raises(ConfigError, match=r"unknown setting runtime\.nope"):
        with_overrides(config, {"runtime.nope": 1})


def test_resolved_config_round_trips_through_yaml(tmp_path: Path) -> None:
    config = with_overrides(LoupeConfig(), {"model.weights": "random", "index.nprobe": 7})
    path = tmp_path / "resolved.yaml"
    path.write_text(dump_config(config))
    assert load_config(path) == config


def test_default_db_url_is_sqlite_in_the_data_dir(tmp_path: Path) -> None:
    config = with_overrides(LoupeConfig(), {"data_dir": tmp_path})
    assert config.resolved_db_url == f"sqlite:///{tmp_path.resolve()}/catalog.sqlite"
    assert with_overrides(config, {"db_url": "sqlite:///x.db"}).resolved_db_url == "sqlite:///x.db"


def test_region_query_scales_can_be_turned_off() -> None:
    assert config_from_mapping({}).search.region_query_scales == (1.189, 1.414, 1.682)
    assert config_from_mapping({"search": {"region_query_scales": []}}).search.region_query_scales == ()
