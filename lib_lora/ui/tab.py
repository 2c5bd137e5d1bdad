"""The Train LoRA tab: Dataset -> Tagging -> Train -> Tools -> Evaluate, in the order users work.

`build_tab(backend)` returns a gr.Blocks that the WebUI renders as its tab
(`on_ui_tabs`) and the standalone server renders inside its own page
(standalone.py), so both serve the same tab. Gradio is imported only inside
functions: the library must import without the WebUI.
"""
from __future__ import annotations

from pathlib import Path

from lib_lora.ui.tab_common import TabContext

EXTENSION_ROOT = Path(__file__).resolve().parents[2]
TAB_TITLE, TAB_ID = "Train LoRA", "train_lora"


def build_tab(backend):
    import gradio as gr

    from lib_lora.ui.tab_dataset import build_dataset_section
    from lib_lora.ui.tab_evaluate import build_evaluate_section
    from lib_lora.ui.tab_tagging import build_tagging_section
    from lib_lora.ui.tab_tools import build_tools_section
    from lib_lora.ui.tab_train import build_train_section, load_saved_form
    ctx = TabContext(backend, saved_form=load_saved_form(backend.form_file))
    with gr.Blocks(analytics_enabled=False) as blocks:
        with gr.Tabs(elem_id="train_lora_sections"):
            with gr.Tab("Dataset", elem_id="train_lora_tab_dataset"):
                build_dataset_section(ctx)
            with gr.Tab("Tagging", elem_id="train_lora_tab_tagging"):
                build_tagging_section(ctx)
            with gr.Tab("Train", elem_id="train_lora_tab_train"):
                build_train_section(ctx)
            with gr.Tab("Tools", elem_id="train_lora_tab_tools"):
                build_tools_section(ctx)
            with gr.Tab("Evaluate", elem_id="train_lora_tab_evaluate"):
                build_evaluate_section(ctx)
        for fn, outputs in ctx.load_outputs:
            blocks.load(fn, None, outputs, queue=False)
    return blocks


def script_text() -> str:
    """Every file of javascript/, as the WebUI loads them (the standalone page has no loader of its own)."""
    files = sorted((EXTENSION_ROOT / "javascript").glob("*.js"))
    return "\n".join(f.read_text(encoding="utf-8") for f in files)


def style_text() -> str:
    return (EXTENSION_ROOT / "style.css").read_text(encoding="utf-8")
