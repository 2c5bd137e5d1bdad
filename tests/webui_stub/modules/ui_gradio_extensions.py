"""Stand-in of modules/ui_gradio_extensions.py: every javascript/*.js into <head>, every style.css
before </body>, by wrapping Gradio's page template the way v1.10.1 does (`file=` URLs)."""
from __future__ import annotations

import os

import gradio as gr

from modules import scripts, shared


def webpath(fn):
    cwd = os.getcwd()
    web_path = os.path.relpath(fn, cwd) if os.path.abspath(fn).startswith(cwd) else os.path.abspath(fn)
    return f"file={web_path}?{os.path.getmtime(fn)}"


def javascript_html():
    head = ""
    script_js = os.path.join(scripts.webui_files_dir, "script.js")
    head += f'<script type="text/javascript" src="{webpath(script_js)}"></script>\n'
    for script in scripts.list_scripts("javascript", ".js"):
        head += f'<script type="text/javascript" src="{webpath(script.path)}"></script>\n'
    for script in scripts.list_scripts("javascript", ".mjs"):
        head += f'<script type="module" src="{webpath(script.path)}"></script>\n'
    return head


def css_html():
    return "".join(f'<link rel="stylesheet" property="stylesheet" href="{webpath(fn)}">'
                   for fn in scripts.list_files_with_name("style.css"))


def reload_javascript():
    js = javascript_html()
    css = css_html()

    def template_response(*args, **kwargs):
        res = shared.GradioTemplateResponseOriginal(*args, **kwargs)
        res.body = res.body.replace(b"</head>", f"{js}</head>".encode("utf8"))
        res.body = res.body.replace(b"</body>", f"{css}</body>".encode("utf8"))
        res.init_headers()
        return res

    gr.routes.templates.TemplateResponse = template_response


if not hasattr(shared, "GradioTemplateResponseOriginal"):
    shared.GradioTemplateResponseOriginal = gr.routes.templates.TemplateResponse
