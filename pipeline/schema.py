"""Typed config sections with OmegaConf: one validation path for every part of the config.

OmegaConf merges a plain mapping into a dataclass (types, unknown and missing keys); the
dataclass then checks its own values in `__post_init__` with `positive` and `one_of`. Every
problem becomes one `ValueError` that names the key.
"""

from __future__ import annotations

import dataclasses
import typing
from collections.abc import Mapping, Sequence
from typing import Any


def positive(key: str, value: float, allow_zero: bool = False) -> None:
    """Refuse a value below 0 (or equal to 0 unless `allow_zero`), naming the key."""
    if value < 0 or (value == 0 and not allow_zero):
        raise ValueError(f"{key} must be {'>= 0' if allow_zero else '> 0'}, got {value!r}")


def one_of(key: str, value: Any, allowed: Sequence[Any]) -> None:
    """Refuse a value that is not in `allowed`, listing the valid ones."""
    if value not in allowed:
        raise ValueError(f"{key}: unknown value {value!r}; valid: "
                         f"{', '.join(map(str, allowed))}")


def c_identifier(key: str, value: str) -> str:
    """Refuse a name that is not a C identifier (it prefixes generated C names), naming the
    key."""
    import re

    if not isinstance(value, str) or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", value):
        raise ValueError(f"{key} must be a C identifier (letters, digits and _, not "
                         f"starting with a digit), got {value!r}")
    return value


def all_of(key: str, values: Sequence[Any], allowed: Sequence[Any]) -> None:
    """Refuse a list with a value that is not in `allowed`."""
    for value in values:
        one_of(key, value, allowed)


def _schema_at(schema: Any, parts: Sequence[str]) -> Any:
    """The dataclass at a dotted path below `schema`, or None past a non-dataclass field."""
    node = schema
    for part in parts:
        hints = typing.get_type_hints(node) if dataclasses.is_dataclass(node) else {}
        node = hints.get(part)
    return node if dataclasses.is_dataclass(node) else None


def _required(key: str) -> str:
    """The message for a key with no value. `conf/` holds every value (the schema none): the
    key is missing from its `conf/` file, or it is one the user gives (`???` there)."""
    group, dot, _ = key.partition(".")
    home = f"the conf/{group}/ file you use" if dot else "conf/config.yaml"
    return f"config key {key} is required: set it in {home}, or give it ({key}=...)"


def typed(schema: type, raw: Any, where: str = "") -> Any:
    """Merge a plain mapping into a dataclass schema with OmegaConf and build the object,
    which runs its `__post_init__` value checks.

    Args:
        schema: The dataclass.
        raw: The mapping (None: empty; every required key is then missing).
        where: Dotted key of the mapping in the whole config, for error messages.

    Raises:
        ValueError: `config key <key>: <what is wrong>` for wrong types, `config key <key> is
            required: ...` for a missing value, `unknown config key ...` listing the valid
            keys, or the dataclass's own message.
    """
    from omegaconf import OmegaConf
    from omegaconf.errors import ConfigKeyError, MissingMandatoryValue, OmegaConfBaseException

    if raw is not None and not isinstance(raw, Mapping):
        raise ValueError(f"config key {where or 'config'} must be a mapping, got {raw!r}")
    try:
        return OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(schema),
                                                   dict(raw or {})))
    except OmegaConfBaseException as exc:
        inner = str(getattr(exc, "full_key", "") or "")
        key = ".".join(p for p in (where, inner) if p) or "config"
        if isinstance(exc, ConfigKeyError):
            parent = _schema_at(schema, inner.split(".")[:-1])
            valid = ", ".join(f.name for f in dataclasses.fields(parent)) if parent else "?"
            raise ValueError(f"unknown config key {key!r}; valid keys in "
                             f"{key.rpartition('.')[0] or 'the top level'}: {valid}") from None
        if isinstance(exc, MissingMandatoryValue):
            raise ValueError(_required(key)) from None
        raise ValueError(f"config key {key}: {str(exc).splitlines()[0]}") from None
