"""The machinery behind the typed configs: declared options, validation, TOML, overrides.

`opt()` declares one option with its help text and allowed values; `validate()`
checks every option of a config and names the field, the bad value and the
allowed range; `to_dict()/from_dict()` and `load_toml()/dump_toml()` move
configs in and out of files; `apply_overrides()` takes `section.key=value`
strings from the command line. The WebUI form binds components by the same
dotted field paths (`flatten()` / `unflatten()`).
"""
from __future__ import annotations

import dataclasses
import sys
import typing
from typing import Any

from .errors import ConfigError, LoraError

if sys.version_info >= (3, 11):
    import tomllib
else:  # the WebUI runs Python 3.10: install.py provides tomli there
    import tomli as tomllib


def opt(default: Any, help: str, *, choices: tuple | None = None, min: float | None = None,
        max: float | None = None, label: str = "") -> Any:
    """Declare one option: default, help text (shown in the tab and in --help) and allowed values."""
    meta = {"help": help, "choices": choices, "min": min, "max": max, "label": label}
    if isinstance(default, (list, dict)):
        return dataclasses.field(default_factory=lambda: type(default)(default), metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


def _field_type(cls: type, f: dataclasses.Field) -> Any:
    return typing.get_type_hints(cls)[f.name]


def _allowed_text(meta: dict) -> str:
    if meta.get("choices"):
        return "one of " + ", ".join(repr(c) for c in meta["choices"])
    lo, hi = meta.get("min"), meta.get("max")
    if lo is not None and hi is not None:
        return f"a value from {lo} to {hi}"
    if lo is not None:
        return f"a value of at least {lo}"
    if hi is not None:
        return f"a value of at most {hi}"
    return "a valid value"


def validate(cfg: Any, prefix: str = "") -> None:
    """Check every option against its declared choices and range; raise ConfigError on the first bad one."""
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        path = f"{prefix}{f.name}"
        if dataclasses.is_dataclass(value):
            validate(value, path + ".")
            continue
        meta = f.metadata
        if meta.get("choices") and value not in meta["choices"]:
            raise ConfigError(path, value, _allowed_text(meta))
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            lo, hi = meta.get("min"), meta.get("max")
            if (lo is not None and value < lo) or (hi is not None and value > hi) or value != value:
                raise ConfigError(path, value, _allowed_text(meta))
    check = getattr(cfg, "check", None)
    if callable(check):
        check()


def _coerce(value: Any, typ: Any, path: str) -> Any:
    """Turn a TOML or command-line value into the declared type, or say what was expected."""
    origin = typing.get_origin(typ)
    try:
        if typ is bool:
            if isinstance(value, str):
                low = value.strip().lower()
                if low in ("true", "1", "yes", "on"):
                    return True
                if low in ("false", "0", "no", "off"):
                    return False
                raise ValueError(value)
            if isinstance(value, (bool, int)):
                return bool(value)
            raise ValueError(value)
        if typ is int:
            if isinstance(value, bool):
                raise ValueError(value)
            if isinstance(value, float) and not value.is_integer():
                raise ValueError(value)
            return int(value)
        if typ is float:
            if isinstance(value, bool):
                raise ValueError(value)
            return float(value)
        if typ is str:
            return str(value)
        if origin is list:
            (item_type,) = typing.get_args(typ) or (str,)
            if isinstance(value, str):
                value = [v.strip() for v in value.split(",") if v.strip()] if value.strip() else []
            return [_coerce(v, item_type, path) for v in value]
    except (TypeError, ValueError):
        name = getattr(typ, "__name__", str(typ))
        raise ConfigError(path, value, f"a value of type {name}") from None
    return value


def from_dict(cls: type, data: dict, prefix: str = "") -> Any:
    """Build a config of type `cls` from nested dicts; unknown keys are errors, missing keys keep defaults."""
    if not isinstance(data, dict):
        raise ConfigError(prefix.rstrip(".") or "config", data, "a table of options")
    known = {f.name: f for f in dataclasses.fields(cls)}
    kwargs = {}
    for key, value in data.items():
        if key in getattr(cls, "retired_options", ()):
            continue
        if key not in known:
            raise ConfigError(f"{prefix}{key}", value, "one of the known options: " + ", ".join(sorted(known)))
        f = known[key]
        typ = _field_type(cls, f)
        if dataclasses.is_dataclass(typ):
            kwargs[key] = from_dict(typ, value, f"{prefix}{key}.")
        else:
            kwargs[key] = _coerce(value, typ, f"{prefix}{key}")
    return cls(**kwargs)


def to_dict(cfg: Any) -> dict:
    return dataclasses.asdict(cfg)


def flatten(cfg: Any, prefix: str = "") -> dict[str, Any]:
    """{'network.dim': 16, ...}: the names the WebUI form binds components to."""
    out: dict[str, Any] = {}
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        if dataclasses.is_dataclass(value):
            out.update(flatten(value, f"{prefix}{f.name}."))
        else:
            out[f"{prefix}{f.name}"] = value
    return out


def field_info(cls: type, prefix: str = "") -> dict[str, tuple[Any, dict]]:
    """{'network.dim': (type, metadata)} for every option, for building forms and --help."""
    out: dict[str, tuple[Any, dict]] = {}
    for f in dataclasses.fields(cls):
        typ = _field_type(cls, f)
        if dataclasses.is_dataclass(typ):
            out.update(field_info(typ, f"{prefix}{f.name}."))
        else:
            out[f"{prefix}{f.name}"] = (typ, dict(f.metadata))
    return out


def unflatten(flat: dict[str, Any]) -> dict:
    nested: dict = {}
    for path, value in flat.items():
        node = nested
        *parents, leaf = path.split(".")
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = value
    return nested


def merge_dicts(base: dict, update: dict) -> dict:
    out = dict(base)
    for k, v in update.items():
        out[k] = merge_dicts(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def apply_overrides(cls: type, cfg: Any, overrides: list[str]) -> Any:
    """Apply `section.key=value` strings (the CLI's --set) and validate the result."""
    flat = {}
    for item in overrides:
        if "=" not in item:
            raise LoraError(f"--set {item!r} has no '='", where="command line",
                            fix="Write it as section.key=value, e.g. network.dim=16")
        key, value = item.split("=", 1)
        flat[key.strip()] = value.strip()
    merged = merge_dicts(to_dict(cfg), unflatten(flat))
    new = from_dict(cls, merged)
    validate(new)
    return new


def loads_toml(text: str, source: str = "config") -> dict:
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise LoraError(f"The TOML file cannot be read: {e}", where=source,
                        fix="Fix the syntax on that line (strings need quotes, sections [name])") from None
    except RecursionError:     # arrays or tables nested thousands deep: no config looks like that
        raise LoraError("The TOML file nests arrays or tables too deeply to read", where=source,
                        fix="Give the run's config; a template is written by `python -m lib_lora config --out run.toml`") from None


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    text = str(value).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return f'"{text}"'


def dumps_toml(data: dict, comments: dict[str, str] | None = None) -> str:
    """Write nested dicts (scalars and lists inside sections) as TOML, with help text as comments."""
    comments = comments or {}
    lines: list[str] = []
    top = {k: v for k, v in data.items() if not isinstance(v, dict)}
    for k, v in top.items():
        lines.append(f"{k} = {_toml_value(v)}")
    for section, table in data.items():
        if not isinstance(table, dict):
            continue
        lines.append(f"\n[{section}]")
        for k, v in table.items():
            if isinstance(v, dict):
                raise LoraError(f"Nested table {section}.{k} cannot be written", where="TOML writer")
            help_text = comments.get(f"{section}.{k}")
            if help_text:
                lines.append(f"# {help_text}")
            lines.append(f"{k} = {_toml_value(v)}")
    return "\n".join(lines).lstrip("\n") + "\n"
