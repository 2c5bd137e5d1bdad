"""X/Y/Z plot axes register into a stand-in of the built-in xyz_grid script and rewrite the prompt."""
from __future__ import annotations

import types
from collections import namedtuple

import pytest

from lib_lora.webui import xyz_axes
from lib_lora.webui.grid import lora_prompt


class AxisOption:       # the built-in script's signature (scripts/xyz_grid.py)
    def __init__(self, label, type, apply, format_value=None, confirm=None, cost=0.0, choices=None, prepare=None):
        self.label, self.type, self.apply, self.format_value = label, type, apply, format_value
        self.confirm, self.cost, self.choices, self.prepare = confirm, cost, choices, prepare


def _xyz_stand_in():
    module = types.ModuleType("xyz_grid.py")
    module.AxisOption = AxisOption
    module.format_value_add_label = lambda p, opt, x: f"{opt.label}: {x}"
    module.axis_options = [AxisOption("Nothing", str, lambda p, x, xs: None)]
    script_class = type("Script", (), {"__module__": "xyz_grid.py"})
    Data = namedtuple("ScriptClassData", ["script_class", "path", "basedir", "module"])
    return module, [Data(object, "/w/scripts/other.py", "/w", None),
                    Data(script_class, "/w/scripts/xyz_grid.py", "/w", module)]


def test_axes_register_once():
    module, scripts_data = _xyz_stand_in()
    assert xyz_axes.add_axes(scripts_data) and xyz_axes.add_axes(scripts_data)
    labels = [o.label for o in module.axis_options]
    assert labels.count("LoRA epoch") == 1 and labels.count("LoRA weight") == 1
    assert xyz_axes.add_axes([]) is False


def test_axes_apply_epoch_and_weight_to_the_prompt():
    module, scripts_data = _xyz_stand_in()
    xyz_axes.add_axes(scripts_data)
    epoch_axis, weight_axis = module.axis_options[-2:]
    p = types.SimpleNamespace(prompt="trig, smile <lora:my char-000001:1>", hr_prompt="<lora:my char-000001:1>")
    epoch_axis.apply(p, "4", ["1", "4"])
    weight_axis.apply(p, 0.7, [0.7, 1.0])
    assert p.prompt == "trig, smile <lora:my char-000004:0.7>"
    assert p.hr_prompt == "<lora:my char-000004:0.7>"
    epoch_axis.apply(p, "other-000002", [])
    assert "<lora:other-000002:0.7>" in p.prompt
    assert epoch_axis.format_value(p, epoch_axis, "3") == "epoch 3"


def test_axis_without_a_lora_tag_explains():
    p = types.SimpleNamespace(prompt="no tag here", hr_prompt="")
    with pytest.raises(RuntimeError, match="<lora:my_lora-000001:1>"):
        xyz_axes.apply_weight(p, 0.5, [])


def test_webui_grid_prompt():
    from pathlib import Path
    assert lora_prompt("trig", Path("/l/run-000002.safetensors"), 0.8) == "trig <lora:run-000002:0.8>"
    assert lora_prompt("trig", None, 1.0) == "trig"
