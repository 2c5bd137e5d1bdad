"""Placeholder Train LoRA tab (the UI engineer replaces this with the real tab)."""
from __future__ import annotations


def on_ui_tabs():
    import gradio as gr
    with gr.Blocks(analytics_enabled=False) as blocks:
        gr.HTML("<p>Train LoRA</p>", elem_id="train_lora_placeholder")
    return [(blocks, "Train LoRA", "train_lora")]
