"""One loader for every YAML config: nested dataclasses, and errors that name the bad key.

    cell = load_config(Path("firmware_config/sim.yaml"), "sim", SimCellConfig)

Dataclass fields give the schema: a key the dataclass lacks, a missing
required key or a value of the wrong type is a ``ConfigError`` naming the
file and the dotted key path. Tuples accept YAML lists; floats accept ints.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

import yaml

T = TypeVar("T")


class ConfigError(ValueError):
    """A config file that does not match its schema; the message names file and key."""


def load_yaml(path: Path) -> dict:
    """Read a YAML mapping, with errors naming the file."""
    try:
        data = yaml.safe_load(Path(path).read_text())
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror or exc}") from exc
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level")
    return data


def load_config(path: Path, section: str | None, schema: type[T]) -> T:
    """Build ``schema`` from the file (or one top-level section of it)."""
    data = load_yaml(path)
    if section is not None:
        if section not in data:
            raise ConfigError(f"{path}: no '{section}' section")
        data = data[section]
    return from_dict(schema, data, f"{path}: {section or ''}".rstrip(": "))


def from_dict(schema: type[T], data: Any, where: str) -> T:
    """Build a dataclass from a mapping, recursively; ``where`` prefixes error messages."""
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: expected a mapping, got {type(data).__name__}")
    fields = {f.name: f for f in dataclasses.fields(schema)}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise ConfigError(f"{where}.{unknown[0]}: unknown key (known: {', '.join(sorted(fields))})")
    hints = typing.get_type_hints(schema)
    values = {}
    for name, value in data.items():
        values[name] = _convert(hints[name], value, f"{where}.{name}")
    missing = [
        n
        for n, f in fields.items()
        if n not in values and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
    ]
    if missing:
        raise ConfigError(f"{where}.{missing[0]}: required key is missing")
    try:
        return schema(**values)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{where}: {exc}") from exc


def _convert(hint: Any, value: Any, where: str) -> Any:
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for option in (a for a in args if a is not type(None)):
            try:
                return _convert(option, value, where)
            except ConfigError as exc:
                errors.append(str(exc))
        raise ConfigError(errors[0] if errors else f"{where}: invalid value {value!r}")
    if dataclasses.is_dataclass(hint):
        return from_dict(hint, value, where)
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_convert(args[0], v, f"{where}[{i}]") for i, v in enumerate(value))
        if len(value) != len(args):
            raise ConfigError(f"{where}: expected {len(args)} values, got {len(value)}")
        return tuple(_convert(a, v, f"{where}[{i}]") for i, (a, v) in enumerate(zip(args, value)))
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {value!r}")
        return {k: _convert(args[1], v, f"{where}.{k}") for k, v in value.items()}
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{where}: expected a number, got {value!r}")
        return float(value)
    if hint in (int, str, bool):
        if not isinstance(value, hint) or (hint is int and isinstance(value, bool)):
            raise ConfigError(f"{where}: expected {hint.__name__}, got {value!r}")
        return value
    if hint is Path:
        if not isinstance(value, str):
            raise ConfigError(f"{where}: expected a path, got {value!r}")
        return Path(value)
    if hint is Any:
        return value
    raise ConfigError(f"{where}: unsupported config type {hint}")
