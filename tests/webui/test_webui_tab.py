"""The tab builds inside the WebUI stand-in (on_ui_tabs), with the WebUI backend."""
from __future__ import annotations




def test_on_ui_tabs_returns_the_tab(webui):  # noqa: F811
    from lib_lora.webui.backend import on_ui_tabs
    [(blocks, title, elem_id)] = on_ui_tabs()
    assert (title, elem_id) == ("Train LoRA", "train_lora")
    ids = [getattr(b, "elem_id", None) for b in blocks.blocks.values()]
    ids = [i for i in ids if i]
    assert "train_lora_start" in ids and "train_lora_grid_button" in ids
    assert all(i.startswith("train_lora_") for i in ids)
    assert len(ids) == len(set(ids))
