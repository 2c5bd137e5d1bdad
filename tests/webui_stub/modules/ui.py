"""Stand-in of modules/ui.py: create_ui() renders every on_ui_tabs tab the way v1.10.1 does.

Each extension tab is `interface.render()`ed inside `gr.TabItem(label, id=ifid,
elem_id=f"tab_{ifid}")` under `gr.Tabs(elem_id="tabs")`, after the built-in tabs (here one
placeholder txt2img tab, so an extension tab is never the first one shown)."""
from __future__ import annotations

import gradio as gr

from modules import script_callbacks, shared


def create_ui():
    with gr.Blocks(analytics_enabled=False) as txt2img_interface:
        gr.Markdown("txt2img (stand-in)", elem_id="txt2img_placeholder")
    interfaces = [(txt2img_interface, "txt2img", "txt2img")]
    interfaces += script_callbacks.ui_tabs_callback()
    with gr.Blocks(analytics_enabled=False, title="Stable Diffusion") as demo:
        with gr.Tabs(elem_id="tabs"):
            for interface, label, ifid in interfaces:
                if label in shared.opts.hidden_tabs:
                    continue
                with gr.TabItem(label, id=ifid, elem_id=f"tab_{ifid}"):
                    interface.render()
    return demo
