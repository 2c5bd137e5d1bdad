""""LoRA epoch" and "LoRA weight" axes for the WebUI's built-in X/Y/Z plot script.

Registered the way sd-webui-additional-networks and ControlNet do it: find the
loaded xyz_grid module in scripts.scripts_data and extend its `axis_options`
(before the UI is built: scripts/train_lora.py calls `add_axes` from
on_before_ui). Both axes rewrite the `<lora:NAME-00000N:w>` tag the user put in
the prompt (and the hires prompt), so any of our runs can be gridded from txt2img:
write `<lora:mychar-000001:1>` in the prompt, then put epochs 1-10 on X and
weights 0.6-1.0 on Y.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from lib_lora.ui.tab_try import EPOCH_LABEL, WEIGHT_LABEL

XYZ_MODULE_NAMES = ("xyz_grid.py", "xy_grid.py", "scripts.xyz_grid", "scripts.xy_grid")
# <lora:NAME-000003:0.8> or <lora:NAME-000003:0.8:0.5>; NAME may contain anything but ':' and '>'
EPOCH_TAG = re.compile(r"<lora:(?P<name>[^:>]+?)-(?P<epoch>\d{6})(?P<rest>(?::[^>]*)?)>")
PROMPT_FIELDS = ("prompt", "hr_prompt")


def find_xyz_module(scripts_data: list) -> Any | None:
    for data in scripts_data:
        module = getattr(data, "module", None)
        if module is None:
            continue
        if (Path(getattr(data, "path", "")).name in XYZ_MODULE_NAMES
                or getattr(data.script_class, "__module__", "") in XYZ_MODULE_NAMES):
            return module
    return None


def _rewrite(p: Any, replace) -> int:
    """Apply `replace(match) -> str` to every epoch tag in p.prompt / p.hr_prompt; count the tags."""
    count = 0
    for name in PROMPT_FIELDS:
        text = getattr(p, name, None)
        if not isinstance(text, str) or not text:
            continue
        new, n = EPOCH_TAG.subn(replace, text)
        setattr(p, name, new)
        count += n if name == "prompt" else 0
    return count


def _no_tag_error(value: Any) -> RuntimeError:
    return RuntimeError(f"Train LoRA axis value {value!r}: the prompt has no <lora:NAME-00000N:weight> tag. "
                        "Add one for the run to plot, e.g. <lora:my_lora-000001:1>")


def epoch_stem(value: Any, name: str) -> str:
    """'3' -> NAME-000003; 'other-000004' is used as given."""
    text = str(value).strip()
    if text.isdigit():
        return f"{name}-{int(text):06d}"
    return text


def apply_epoch(p: Any, x: Any, xs: Any) -> None:
    def replace(m: re.Match) -> str:
        return f"<lora:{epoch_stem(x, m.group('name'))}{m.group('rest') or ':1'}>"
    if not _rewrite(p, replace):
        raise _no_tag_error(x)


def apply_weight(p: Any, x: Any, xs: Any) -> None:
    def replace(m: re.Match) -> str:
        rest = (m.group("rest") or "").split(":")[2:]      # keep a separate UNet weight if given
        return f"<lora:{m.group('name')}-{m.group('epoch')}:{float(x):g}" + "".join(f":{r}" for r in rest) + ">"
    if not _rewrite(p, replace):
        raise _no_tag_error(x)


def format_epoch(p: Any, opt: Any, x: Any) -> str:
    text = str(x).strip()
    if text.isdigit():
        return f"epoch {int(text)}"
    m = re.search(r"-(\d{6})$", text)
    return f"{text[:m.start()]} epoch {int(m.group(1))}" if m else text


def epoch_choices() -> list[str]:
    """Epoch file stems in the WebUI's Lora folder, newest run first."""
    try:
        from modules import shared
        folder = shared.cmd_opts.lora_dir
    except Exception:    # the dropdown is a convenience; typing values works without it
        return []
    from lib_lora.evaluation.epoch_grid import epoch_files, run_names
    return [p.stem for name in run_names(folder) for p in epoch_files(folder, name)]


def add_axes(scripts_data: list | None = None) -> bool:
    """Extend the built-in X/Y/Z plot's axes; idempotent. Returns False when the script is not loaded."""
    if scripts_data is None:
        from modules import scripts
        scripts_data = scripts.scripts_data
    xyz = find_xyz_module(scripts_data)
    if xyz is None:
        return False
    present = {getattr(o, "label", None) for o in xyz.axis_options}
    new = []
    if EPOCH_LABEL not in present:
        new.append(xyz.AxisOption(EPOCH_LABEL, str, apply_epoch, format_value=format_epoch, cost=0.5,
                                  choices=epoch_choices))
    if WEIGHT_LABEL not in present:
        new.append(xyz.AxisOption(WEIGHT_LABEL, float, apply_weight, format_value=xyz.format_value_add_label,
                                  cost=0.1))
    xyz.axis_options.extend(new)
    return True
