"""The Train form is remembered by ONE save of the whole form (not one listener per field).

The browser tests check that the values really survive a page reload; here: the wiring and
what a save keeps when the user is in the middle of typing."""
from __future__ import annotations

import json

from lib_lora.config import TrainConfig
from lib_lora.ui import form
from lib_lora.ui.tab_train import STEP_INPUTS, merge_form_values


def _built_tab(tmp_path):
    from lib_lora.ui.backend import standalone_backend
    from lib_lora.ui.tab import build_tab
    backend = standalone_backend(tmp_path)
    return build_tab(backend), backend


def _by_elem_id(blocks, elem_id):
    return next(b for b in blocks.blocks.values() if getattr(b, "elem_id", None) == elem_id)


def test_one_save_handler_takes_the_whole_form(tmp_path):
    blocks, backend = _built_tab(tmp_path)
    specs = form.field_specs(TrainConfig, "standalone")
    option_ids = {_by_elem_id(blocks, s.elem_id())._id for s in specs}
    deps = blocks.config["dependencies"]
    steps_id = _by_elem_id(blocks, "train_lora_steps")._id
    listeners = [d for d in deps if option_ids & set(d["targets"]) and d["trigger"] in ("input", "change", "blur")]
    assert all(d["outputs"] == [steps_id] for d in listeners)        # only the live steps calculator
    assert len(listeners) == len(STEP_INPUTS)
    save_button = _by_elem_id(blocks, "train_lora_form_save")
    [index] = [i for i, d in enumerate(deps) if d["targets"] == [save_button._id]]
    assert set(deps[index]["inputs"]) == option_ids and deps[index]["outputs"] == []

    values = form.values_from_config(TrainConfig(), specs)
    values[[s.name for s in specs].index("output.output_name")] = "remembered_näme"
    blocks.fns[index].fn(*values)
    saved = json.loads(backend.form_file.read_text(encoding="utf-8"))
    assert saved["output.output_name"] == "remembered_näme" and len(saved) == len(specs)
    stamp = backend.form_file.stat().st_mtime_ns
    blocks.fns[index].fn(*values)               # nothing changed: nothing written
    assert backend.form_file.stat().st_mtime_ns == stamp


def test_half_typed_number_keeps_its_last_good_value():
    specs = form.field_specs(TrainConfig, "standalone")
    names = [s.name for s in specs]
    values = form.values_from_config(TrainConfig(), specs)
    values[names.index("training.epochs")] = ""          # the user cleared the box to type a new number
    values[names.index("network.dim")] = 32
    merged = merge_form_values({"training.epochs": 7, "unknown.key": 1}, specs, values)
    assert merged["training.epochs"] == 7 and merged["network.dim"] == 32
    assert merged["unknown.key"] == 1          # keys of other versions are left alone
