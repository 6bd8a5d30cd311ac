"""Typed frozen dataclass configs from TOML: unknown keys are errors, nested tables recurse.

A field declared with ``metadata=PATH`` holds a file or folder path; ``from_dict`` with a
``base`` folder (the config file's) resolves a relative path written in the table against it.

Model configs bound every number they hold (``check_ranges`` with the class's ``RANGES``): a
model file cannot ask for a billion blocks before anything is built.
"""

from __future__ import annotations

import dataclasses
import math
import os
import types
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypeVar

import tomllib

T = TypeVar("T")

PATH = {"path": True}  # dataclass field metadata: the value is a path


class ConfigError(ValueError):
    """A config file or table does not match its dataclass."""


def check_ranges(cfg: Any, ranges: Mapping[str, tuple[float, float]]) -> None:
    """ValueError naming the first field of ``cfg`` outside its [lo, hi] (each element of a
    tuple field); booleans, NaN and non-numbers are outside every range."""
    for name, (lo, hi) in ranges.items():
        value = getattr(cfg, name)
        for v in value if isinstance(value, tuple) else (value,):
            number = isinstance(v, int | float) and not isinstance(v, bool)
            if not number or not math.isfinite(v) or not lo <= v <= hi:
                raise ValueError(f"{type(cfg).__name__}.{name} = {value!r} is outside "
                                 f"[{lo:g}, {hi:g}]")


def from_dict(cls: type[T], data: dict[str, Any], where: str = "", base: Path | None = None
              ) -> T:
    """Build dataclass ``cls`` from ``data``; nested dataclass fields take nested tables.
    With ``base``, relative paths in ``PATH`` fields resolve against that folder."""
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise ConfigError(f"unknown key(s) {unknown} in [{where or cls.__name__}]")
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for name, value in data.items():
        key = f"{where}.{name}" if where else name
        value = _convert(hints[name], value, key, base)
        if base is not None and fields[name].metadata.get("path") and isinstance(value, str):
            value = os.path.normpath(base / value)  # an absolute value stays as it is
        kwargs[name] = value
    try:
        return cls(**kwargs)
    except TypeError as e:
        raise ConfigError(f"[{where or cls.__name__}]: {e}") from e


def _convert(hint: Any, value: Any, where: str, base: Path | None) -> Any:
    if dataclasses.is_dataclass(hint):
        if not isinstance(value, dict):
            raise ConfigError(f"{where} must be a table")
        return from_dict(hint, value, where, base)
    origin = typing.get_origin(hint)
    if origin is tuple:
        return tuple(value)
    if origin in (typing.Union, types.UnionType) and isinstance(value, list):
        return tuple(value)
    if hint is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if hint in (int, float, bool, str) and type(value) is not hint:
        raise ConfigError(f"{where} must be {hint.__name__}, got {value!r}")
    return value


def apply_overrides(data: dict[str, Any], overrides: typing.Sequence[str]) -> dict[str, Any]:
    """``data`` with each ``"a.b.key=value"`` set (value read as TOML, else as a string), e.g.
    ``model.conditioning=concat`` or ``teacher_x2.iterations=400``; the tables must exist."""
    for item in overrides:
        key, sep, text = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"override {item!r} is not KEY=VALUE")
        *tables, name = key.strip().split(".")
        table = data
        for t in tables:
            if not isinstance(table.get(t), dict):
                raise ConfigError(f"override {item!r}: no table [{t}]")
            table = table[t]
        try:
            table[name] = tomllib.loads(f"v = {text}")["v"]
        except tomllib.TOMLDecodeError:
            table[name] = text
    return data


def to_dict(cfg: Any) -> dict[str, Any]:
    """Dataclass -> plain dict (tuples become lists) suitable for JSON or TOML."""
    return dataclasses.asdict(cfg)


def load_toml(path: str | Path) -> dict[str, Any]:
    """Parse a TOML file, naming the file in any error."""
    path = Path(path)
    try:
        with path.open("rb") as f:
            return tomllib.load(f)
    except (OSError, tomllib.TOMLDecodeError) as e:
        raise ConfigError(f"cannot read config {path}: {e}") from e
