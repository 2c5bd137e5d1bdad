"""`python -m lib_lora ui [--port N] [--host 127.0.0.1] [--data-dir DIR]`: the tab on its own.

Serves the same tab as the WebUI, inside a page laid out like the WebUI's
(a tab with elem_id tab_train_lora, so style.css applies unchanged), with the
tiny or a diffusers model, its own job registry and training host instead of the WebUI's
queue. Binds to 127.0.0.1 unless told otherwise: the tab reads and writes files
on the server.
"""
from __future__ import annotations

import argparse
import logging
import os
import socket
from pathlib import Path

DEFAULT_PORT = 7870


def add_ui_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"port to serve on (default {DEFAULT_PORT})")
    parser.add_argument("--host", default="127.0.0.1",
                        help="address to bind (default 127.0.0.1; 0.0.0.0 exposes your files to the network)")
    parser.add_argument("--data-dir", default=os.environ.get("TRAIN_LORA_DATA_DIR", "train_lora_data"),
                        help="folder for datasets, runs, presets, grids and the remembered form")


def build_app(data_dir: str | Path):
    """The standalone page: the tab plus its script and styles."""
    import gradio as gr

    from lib_lora.ui import gradio_compat
    from lib_lora.ui.backend import standalone_backend
    from lib_lora.ui.tab import TAB_TITLE, build_tab, script_text, style_text
    backend = standalone_backend(data_dir)
    for folder in (backend.data_dir, backend.lora_dir, backend.datasets_root, backend.tagger_models_dir):
        folder.mkdir(parents=True, exist_ok=True)
    tab = build_tab(backend)
    with gr.Blocks(analytics_enabled=False, css=style_text(), title=TAB_TITLE) as app:
        with gr.Tabs(elem_id="tabs"):
            with gr.TabItem(TAB_TITLE, id="train_lora", elem_id="tab_train_lora"):
                tab.render()
        app.load(None, None, None, **gradio_compat.js_kwargs("() => {" + script_text() + "}"))
    return app, backend


def run_ui(args: argparse.Namespace) -> int:
    from lib_lora.ui import gradio_compat
    from lib_lora.errors import LoraError
    from lib_lora.path_policy import standalone_policy
    if not 1 <= args.port <= 65535:      # checked before the data folder is made and the server starts
        raise LoraError(f"--port {args.port} is not a TCP port", where="command line",
                        fix=f"Give a port from 1 to 65535 (default {DEFAULT_PORT})")
    try:      # a name that does not resolve would fail inside the server's thread, as a traceback
        socket.getaddrinfo(args.host, args.port)
    except (OSError, UnicodeError):
        raise LoraError("The address to serve on is not known to this machine", where=f"--host {args.host}",
                        fix="Give 127.0.0.1 (this machine only) or one of this machine's addresses") from None
    if Path(args.data_dir).exists() and not Path(args.data_dir).is_dir():
        raise LoraError("The data folder is a file, not a folder", where=str(args.data_dir),
                        fix="Give --data-dir a folder (it is created when missing)")
    app, backend = build_app(args.data_dir)
    backend.path_policy = standalone_policy(args.host, backend.data_dir)   # read by the tab's path checks
    print(f"Train LoRA: serving on http://{args.host}:{args.port} (data in {backend.data_dir}); Ctrl+C stops")
    try:
        app.queue(**gradio_compat.queue_kwargs(4)).launch(**gradio_compat.launch_kwargs(
            server_name=args.host, server_port=args.port, show_api=False, inbrowser=False,
            prevent_thread_lock=False, quiet=True))
    except OSError as e:       # gradio says "Cannot find empty port" for a port in use and an address not ours
        logging.getLogger(__name__).debug("launch failed: %s", e)
        raise LoraError("Cannot serve there: the port is in use or the address is not this machine's",
                        where=f"{args.host}:{args.port}",
                        fix="Choose a free --port, and a --host that is an address of this machine") from None
    return 0
