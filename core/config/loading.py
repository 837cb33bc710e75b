"""Load the settings tree from YAML, override it with dotted keys, and write it back.

Loading is strict: an unknown key, a value of the wrong type or a value out of range raises
:class:`ConfigError` naming the dotted key, so a typo never silently falls back to a default.
"""

from __future__ import annotations

import dataclasses
import types
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypeVar, Union, get_args, get_origin, get_type_hints

import yaml

from core.config.tree import DEFAULT_CONFIG_FILE, Check, LoupeConfig
from core.errors import ConfigError

T = TypeVar("T")


def _coerce(annotation: Any, value: Any, key: str) -> Any:
    origin = get_origin(annotation)
    if origin in (Union, types.UnionType):
        options = get_args(annotation)
        if value is None and type(None) in options:
            return None
        inner = [option for option in options if option is not type(None)]
        return _coerce(inner[0], value, key)
    if dataclasses.is_dataclass(annotation) and isinstance(annotation, type):
        if not isinstance(value, Mapping):
            raise ConfigError(f"{key}: expected a mapping of settings, got {value!r}")
        return _from_mapping(annotation, value, f"{key}.")
    if annotation is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{key}: expected true or false, got {value!r}")
        return value
    if annotation is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{key}: expected an integer, got {value!r}")
        return value
    if annotation is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(f"{key}: expected a number, got {value!r}")
        return float(value)
    if annotation is str:
        if not isinstance(value, str):
            raise ConfigError(f"{key}: expected a string, got {value!r}")
        return value
    if origin is tuple and get_args(annotation)[1:] == (Ellipsis,):
        if not isinstance(value, list | tuple):
            raise ConfigError(f"{key}: expected a list, got {value!r}")
        return tuple(_coerce(get_args(annotation)[0], item, f"{key}[{i}]") for i, item in enumerate(value))
    if annotation is Path:
        if not isinstance(value, str | Path) or str(value) == "":
            raise ConfigError(f"{key}: expected a path, got {value!r}")
        return Path(value).expanduser()
    raise ConfigError(f"{key}: unsupported setting type {annotation!r}")  # pragma: no cover


def _from_mapping(cls: type[T], data: Mapping[str, Any], prefix: str) -> T:
    known = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    for key in data:
        if key not in known:
            raise ConfigError(f"unknown setting {prefix}{key} (known: {', '.join(sorted(known))})")
    hints = get_type_hints(cls)
    values: dict[str, Any] = {}
    for name, spec in known.items():
        if name not in data or (data[name] is None and spec.metadata.get("null_is_default")):
            continue
        value = _coerce(hints[name], data[name], f"{prefix}{name}")
        check: Check | None = spec.metadata.get("check")
        if check is not None and value is not None:
            problem = check(value)
            if problem is not None:
                shown = list(value) if isinstance(value, tuple) else value  # as written in YAML
                raise ConfigError(f"{prefix}{name}: {shown!r} {problem}")
        values[name] = value
    return cls(**values)


def config_from_mapping(data: Mapping[str, Any]) -> LoupeConfig:
    """Build a validated config from a parsed YAML mapping (missing keys take their defaults)."""
    return _from_mapping(LoupeConfig, data, "")


def load_config(path: Path | None = None) -> LoupeConfig:
    """Load ``path``, or ``config.yaml`` in the working directory, or the defaults when neither exists.

    An explicitly named file that does not exist is an error. Relative paths in the file are taken as they
    are (from the working directory); :func:`core.settings.resolve_settings`, which the commands use,
    also looks in the environment and the per-user config dir and resolves them against the file's folder.
    """
    if path is None:
        if not DEFAULT_CONFIG_FILE.exists():
            return LoupeConfig()
        path = DEFAULT_CONFIG_FILE
    data = read_config_mapping(path)
    try:
        return config_from_mapping(data)
    except ConfigError as error:
        raise ConfigError(f"{path}: {error}") from error


def read_config_mapping(path: Path) -> dict[str, Any]:
    """The settings in the YAML file ``path`` as a plain mapping, not yet validated."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as error:
        raise ConfigError(f"cannot read config file {path}: {error.strerror or error}") from error
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as error:
        raise ConfigError(f"{path} is not valid YAML: {error}") from error
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of settings")
    return data


def with_overrides(config: LoupeConfig, overrides: Mapping[str, Any]) -> LoupeConfig:
    """Return ``config`` with dotted keys (``"runtime.batch_size"``) replaced, validated like the file."""
    data = config_to_mapping(config)
    for dotted, value in overrides.items():
        if value is None:
            continue
        node = data
        *parents, leaf = dotted.split(".")
        for part in parents:
            child = node.get(part)
            if not isinstance(child, dict):
                raise ConfigError(f"unknown setting {dotted}")
            node = child
        if leaf not in node:
            raise ConfigError(f"unknown setting {dotted}")
        node[leaf] = str(value) if isinstance(value, Path) else value
    return config_from_mapping(data)


def config_to_mapping(config: LoupeConfig) -> dict[str, Any]:
    """Plain YAML-ready data (paths as strings) for saving the resolved config beside the index."""

    def plain(value: Any) -> Any:
        if isinstance(value, Path):
            return str(value)
        if isinstance(value, tuple):  # YAML's safe dumper knows lists, not tuples
            return [plain(item) for item in value]
        if isinstance(value, dict):
            return {key: plain(item) for key, item in value.items()}
        return value

    result: dict[str, Any] = plain(dataclasses.asdict(config))
    return result


def dump_config(config: LoupeConfig) -> str:
    """The resolved config as YAML text."""
    return yaml.safe_dump(config_to_mapping(config), sort_keys=False)
