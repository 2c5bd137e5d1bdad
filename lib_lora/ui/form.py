"""Gradio components bound to config fields by dotted name, and the way back to a config.

Every option of a config dataclass gets one component whose elem_id is
`train_lora_<section>_<key>`; the tab keeps the (name, component) pairs in one
ordered list, so handlers receive values in that order and `config_from_values`
turns them back into a validated config. Lists are edited as text: prompts one
per line, numbers comma-separated. Nothing here imports gradio at module level.
"""
from __future__ import annotations

import typing
from dataclasses import dataclass
from typing import Any

from lib_lora import options
from lib_lora.errors import ConfigError

ELEM_PREFIX = "train_lora_"
# free text that may contain commas: one entry per line. Matched on the field's own name, so the
# Train form's sample.prompts and the grid form's prompts (SampleConfig on its own) agree; a merge's
# block_weights are one comma-separated list per LoRA.
LINE_LIST_FIELDS = {"prompts", "block_weights"}


@dataclass
class FieldSpec:
    name: str
    typ: Any
    meta: dict

    def elem_id(self, prefix: str = ELEM_PREFIX) -> str:
        return prefix + self.name.replace(".", "_")

    @property
    def label(self) -> str:
        return self.meta.get("label") or self.name.split(".")[-1].replace("_", " ").capitalize()

    @property
    def is_list(self) -> bool:
        return typing.get_origin(self.typ) is list

    @property
    def one_per_line(self) -> bool:
        return self.name.split(".")[-1] in LINE_LIST_FIELDS


def field_specs(cls: type, host: str) -> list[FieldSpec]:
    """The options of `cls` a form on `host` (options.HOSTS: webui or standalone) shows: the WebUI's
    form leaves out what the WebUI overrides (its loaded model, its device, its Lora folder)."""
    return [FieldSpec(name, typ, meta) for name, (typ, meta) in options.field_info(cls).items()
            if options.shown_on(meta, host)]


def to_component_value(spec: FieldSpec, value: Any) -> Any:
    if spec.is_list:
        sep = "\n" if spec.one_per_line else ", "
        return sep.join(_plain(v) for v in value)
    if spec.meta.get("choices") and not isinstance(value, str):
        return str(value)                 # dropdowns hold strings (max_token_length 75/150/225)
    return value


def _plain(value: Any) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def from_component_value(spec: FieldSpec, value: Any) -> Any:
    """Component value -> the field's type; raises ConfigError naming the field."""
    if spec.is_list:
        text = "" if value is None else str(value)
        parts = text.splitlines() if spec.one_per_line else text.replace("\n", ",").split(",")
        return options.coerce_value([p.strip() for p in parts if p.strip()], spec.typ, spec.name)
    if value is None or (isinstance(value, str) and not value.strip() and spec.typ in (int, float)):
        raise ConfigError(spec.name, value, "a number")
    return options.coerce_value(value, spec.typ, spec.name)


def flat_from_values(specs: list[FieldSpec], values: list[Any]) -> dict[str, Any]:
    if len(specs) != len(values):
        raise ValueError(f"{len(values)} form values for {len(specs)} fields")
    return {spec.name: from_component_value(spec, value) for spec, value in zip(specs, values)}


def config_from_values(cls: type, specs: list[FieldSpec], values: list[Any]) -> Any:
    """The validated config the form describes; options missing from the form keep defaults."""
    cfg = options.from_dict(cls, options.unflatten(flat_from_values(specs, values)))
    options.validate(cfg)
    return cfg


def values_from_config(cfg: Any, specs: list[FieldSpec]) -> list[Any]:
    flat = options.flatten(cfg)
    return [to_component_value(spec, flat[spec.name]) for spec in specs]


def values_from_flat(flat: dict[str, Any], specs: list[FieldSpec], fallback: Any) -> list[Any]:
    """Saved form values (may be partial or stale) -> component values; unknown or bad ones use `fallback`."""
    base = options.flatten(fallback)
    out = []
    for spec in specs:
        value = flat.get(spec.name, base[spec.name])
        try:
            value = from_component_value(spec, to_component_value(spec, value) if spec.is_list else value)
        except ConfigError:
            value = base[spec.name]
        out.append(to_component_value(spec, value))
    return out


def make_component(spec: FieldSpec, value: Any, prefix: str = ELEM_PREFIX):
    """One gradio component for one option, with its help text as the info line."""
    import gradio as gr
    common = dict(label=spec.label, info=spec.meta.get("help", ""), elem_id=spec.elem_id(prefix))
    shown = to_component_value(spec, value)
    if spec.typ is bool:
        return gr.Checkbox(value=bool(shown), **common)
    if spec.meta.get("choices"):
        return gr.Dropdown(choices=[str(c) for c in spec.meta["choices"]], value=shown, **common)
    if spec.is_list:
        lines = 3 if spec.one_per_line else 1
        return gr.Textbox(value=shown, lines=lines, **common)
    if spec.typ is int:
        return gr.Number(value=shown, precision=0, **common)
    if spec.typ is float:
        return gr.Number(value=shown, **common)
    return gr.Textbox(value=shown, **common)
