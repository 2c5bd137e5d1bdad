"""Stand-in of modules/ui_common.py: refresh button, output panel, plaintext_to_html."""
from __future__ import annotations

import html
from dataclasses import dataclass

import gradio as gr

from modules.ui_components import ToolButton

folder_symbol = '\U0001f4c2'
refresh_symbol = '\U0001f504'


def plaintext_to_html(text, classname=None):
    content = "<br>\n".join(html.escape(x) for x in text.split('\n'))
    return f"<p class='{classname}'>{content}</p>" if classname else f"<p>{content}</p>"


def create_refresh_button(refresh_component, refresh_method, refreshed_args, elem_id):
    components = refresh_component if isinstance(refresh_component, list) else [refresh_component]

    def refresh():
        refresh_method()
        args = refreshed_args() if callable(refreshed_args) else refreshed_args
        for comp in components:
            for k, v in args.items():
                setattr(comp, k, v)
        return [gr.update(**(args or {})) for _ in components] if len(components) > 1 else gr.update(**(args or {}))

    button = ToolButton(value=refresh_symbol, elem_id=elem_id, tooltip="Refresh")
    button.click(fn=refresh, inputs=[], outputs=components)
    return button


@dataclass
class OutputPanel:
    gallery: object = None
    generation_info: object = None
    infotext: object = None
    html_log: object = None
    button_upscale: object = None


def create_output_panel(tabname, outdir, toprow=None):
    panel = OutputPanel()
    with gr.Column(elem_id=f"{tabname}_results"):
        panel.gallery = gr.Gallery(label='Output', show_label=False, elem_id=f"{tabname}_gallery", columns=4)
        panel.generation_info = gr.Textbox(visible=False, elem_id=f'generation_info_{tabname}')
        panel.infotext = gr.HTML(elem_id=f'html_info_{tabname}', elem_classes="infotext")
        panel.html_log = gr.HTML(elem_id=f'html_log_{tabname}', elem_classes="html-log")
    return panel
