"""The machinery behind the typed configs: declared options, validation, TOML, overrides.

`opt()` declares one option with its help text, allowed values and the hosts it
applies to; `validate()` checks every option of a config and names the field,
the bad value and the allowed range; `to_dict()/from_dict()` and
`load_toml()/dump_toml()` move configs in and out of files; `apply_overrides()`
takes `section.key=value` strings from the command line. The WebUI form binds
components by the same dotted field paths (`flatten()` / `unflatten()`), and the
command line's flags are generated from the same declarations
(`add_arguments()` / `from_namespace()`), so each option is declared once.
"""
from __future__ import annotations

import argparse
import dataclasses
import sys
import typing
from collections.abc import Iterable
from typing import Any

from .errors import ConfigError, LoraError

if sys.version_info >= (3, 11):
    import tomllib
else:  # the WebUI runs Python 3.10: install.py provides tomli there
    import tomli as tomllib


# Where an option can be set: the command line and scripts (headless), the tab inside the WebUI
# (webui), the tab served by `python -m lib_lora ui` (standalone). The WebUI trains on its own
# loaded model, device and Lora folder, so options naming those are not shown there.
HOSTS = ("headless", "webui", "standalone")


def opt(default: Any, help: str, *, choices: tuple | None = None, min: float | None = None,
        max: float | None = None, label: str = "", hosts: tuple[str, ...] = HOSTS) -> Any:
    """Declare one option: default, help text (shown in the tab and in --help), allowed values,
    and the hosts where it means something (default: all)."""
    unknown = set(hosts) - set(HOSTS)
    if unknown:
        raise ValueError(f"unknown hosts {sorted(unknown)}; known: {HOSTS}")
    meta = {"help": help, "choices": choices, "min": min, "max": max, "label": label, "hosts": tuple(hosts)}
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


def shown_on(meta: dict, host: str) -> bool:
    """Whether an option (its metadata) applies to `host`, one of HOSTS."""
    return host in meta.get("hosts", HOSTS)


def check_value(path: str, value: Any, meta: dict) -> None:
    """One option's value against its declared choices and range; ConfigError naming `path` if not."""
    if meta.get("choices") and value not in meta["choices"]:
        raise ConfigError(path, value, _allowed_text(meta))
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        lo, hi = meta.get("min"), meta.get("max")
        if value != value:     # NaN compares false with every bound
            raise ConfigError(path, value, "a finite number" if lo is None and hi is None else _allowed_text(meta))
        if (lo is not None and value < lo) or (hi is not None and value > hi):
            raise ConfigError(path, value, _allowed_text(meta))


def validate(cfg: Any, prefix: str = "") -> None:
    """Check every option against its declared choices and range; raise ConfigError on the first bad one."""
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        path = f"{prefix}{f.name}"
        if dataclasses.is_dataclass(value):
            validate(value, path + ".")
            continue
        check_value(path, value, f.metadata)
    check = getattr(cfg, "check", None)
    if callable(check):
        check()


def coerce_value(value: Any, typ: Any, path: str) -> Any:
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
            return [coerce_value(v, item_type, path) for v in value]
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
    for key, value in _renamed_keys(cls, data, prefix).items():
        if key in getattr(cls, "retired_options", ()):
            continue
        if key not in known:
            raise ConfigError(f"{prefix}{key}", value, "one of the known options: " + ", ".join(sorted(known)))
        f = known[key]
        typ = _field_type(cls, f)
        if dataclasses.is_dataclass(typ):
            kwargs[key] = from_dict(typ, value, f"{prefix}{key}.")
        else:
            kwargs[key] = coerce_value(value, typ, f"{prefix}{key}")
    return cls(**kwargs)


def _renamed_keys(cls: type, data: dict, prefix: str) -> dict:
    """`data` with the old names of renamed options (the class's `renamed_options`, old -> new) under
    their new names, so configs written before a rename still load; both names at once is an error."""
    renamed = getattr(cls, "renamed_options", {})
    out = {}
    for key, value in data.items():
        new = renamed.get(key, key)
        if new in out:
            raise ConfigError(f"{prefix}{key}", value, f"only one of {prefix}{key} and {prefix}{new} "
                              f"(the new name of {key})")
        out[new] = value
    return out


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


# --- command-line flags generated from the same declarations ---------------------------------------
# One flag per field: `decode_workers` -> `--decode-workers`, bools as `--x/--no-x`, lists repeatable.
# The parser's default is None ("not given"), so a flag overrides a config only when it is given; the
# declared default is shown in --help instead.
CLI_HOST = "headless"


def flag_for(name: str, prefix: str = "") -> str:
    """The flag of field `name`: `decode_workers` -> `--decode-workers`."""
    return "--" + (prefix + name).replace("_", "-")


def _dest(name: str, prefix: str) -> str:
    return (prefix + name).replace("-", "_")


def default_text(value: Any) -> str:
    """A default as --help shows it."""
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, list):
        return ", ".join(str(v) for v in value) if value else "none"
    return str(value) if value != "" else "empty"


def flag_help(meta: dict, default: Any) -> str:
    """The opt() help, then the default and the allowed range, as --help shows them (choices are in
    the flag's metavar)."""
    extras = [f"default: {default_text(default)}"]
    if not meta.get("choices") and (meta.get("min") is not None or meta.get("max") is not None):
        extras.append(_allowed_text(meta).removeprefix("a value ").removeprefix("of "))
    return f"{meta['help']} ({'; '.join(extras)})".replace("%", "%%")   # argparse %-formats help


def _flag_parser(flag: str, typ: Any, meta: dict):
    """argparse `type=`: the text as the field's type, within its choices and range; a bad value is
    argparse's own one-line error naming the flag (exit status 2)."""
    is_text_list = typing.get_origin(typ) is list and (typing.get_args(typ) or (str,))[0] is str

    def parse(text: str) -> Any:
        try:      # a text item may hold commas (a prompt, 17 block weights); numbers may come as 0.5,1
            value = [text] if is_text_list else coerce_value(text, typ, flag)
            for item in value if isinstance(value, list) else [value]:
                check_value(flag, item, meta)
        except ConfigError as e:
            raise argparse.ArgumentTypeError(f"{text!r} is not allowed; use {e.allowed}") from None
        return value
    parse.__name__ = getattr(typ, "__name__", "value")      # what argparse calls the type in its messages
    return parse


def _field_default(f: dataclasses.Field) -> Any:
    return f.default_factory() if f.default is dataclasses.MISSING else f.default


def add_arguments(parser: Any, cls: type, *, prefix: str = "", skip: Iterable[str] = (),
                  only: Iterable[str] = ()) -> None:
    """One flag per option of `cls` that applies on the command line (not `skip`, and only `only` when
    given), with its help, default, choices and range; `prefix` goes before each flag and dest.
    Read the values back with `from_namespace(cls, args, prefix=prefix)`."""
    skip, only = set(skip), set(only)
    for f in dataclasses.fields(cls):
        typ, meta = _field_type(cls, f), dict(f.metadata)
        if f.name in skip or (only and f.name not in only) or not shown_on(meta, CLI_HOST):
            continue
        if dataclasses.is_dataclass(typ):
            raise TypeError(f"{cls.__name__}.{f.name} is a section: add its class with a prefix")
        flag, default = flag_for(f.name, prefix), _field_default(f)
        kwargs: dict[str, Any] = {"dest": _dest(f.name, prefix), "default": None,
                                  "help": flag_help(meta, default)}
        if typ is bool:
            kwargs["action"] = argparse.BooleanOptionalAction
        elif typing.get_origin(typ) is list:
            item = (typing.get_args(typ) or (str,))[0]
            kwargs.update(action="append", type=_flag_parser(flag, typ, meta),
                          metavar=_metavar(f.name.removesuffix("s"), item, meta))
        else:
            kwargs.update(type=_flag_parser(flag, typ, meta), metavar=_metavar(f.name, typ, meta))
        action = parser.add_argument(flag, **kwargs)
        action.config_field = f"{cls.__name__}.{f.name}"     # lets tests tell generated flags from written ones


def _metavar(name: str, typ: Any, meta: dict) -> str:
    if meta.get("choices"):
        return "{" + ",".join(str(c) or "''" for c in meta["choices"]) + "}"
    return {int: "N", float: "X"}.get(typ, name.upper())


def from_namespace(cls: type, args: Any, *, prefix: str = "", base: Any = None) -> Any:
    """The validated config of type `cls`: `base` (or the defaults) with every flag that was given."""
    changes: dict[str, Any] = {}
    for f in dataclasses.fields(cls):
        value = getattr(args, _dest(f.name, prefix), None)
        if value is None:
            continue
        if typing.get_origin(_field_type(cls, f)) is list:   # each repeat of a list flag is a list
            value = [item for given in value for item in given]
        changes[f.name] = value
    cfg = dataclasses.replace(base if base is not None else cls(), **changes)
    validate(cfg)
    return cfg
