"""Stand-in of the WebUI's webui.py: serve the UI the way `webui()` does, for the browser tests.

    python tests/webui_stub/webui.py --port N [--extension DIR]

Loads the extension's scripts/ (DIR, default the repository) like the WebUI's script loader,
runs on_before_ui, builds the page with modules.ui.create_ui() (every on_ui_tabs tab),
injects the WebUI's and the extension's javascript/*.js and style.css, launches Gradio with
the queue, then adds /internal/progress (modules.progress.setup_progress_api) and runs
on_app_started with the app, in that order. The loaded checkpoint is the tiny ldm model of
tests/fixtures. One route is the stand-in's own: GET /stand-in/processed lists the prompts
that went through modules.processing, so a test can see what the WebUI was asked to render.
"""
from __future__ import annotations

import argparse
import os
import sys
import time

STUB_DIR = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(STUB_DIR))


def load_model():
    """Build the tiny checkpoint. The repository is on sys.path only while its fixture module
    imports: afterwards the extension is importable only the way the WebUI makes it so."""
    sys.path.append(REPO)
    try:
        import tests.fixtures.tiny_ldm  # noqa: F401
    finally:
        sys.path.remove(REPO)
    from modules import sd_models
    return sd_models.load_model()


def webui(port: int, extension_root: str):
    from modules import processing, progress, script_callbacks, scripts, shared, ui, ui_gradio_extensions
    import lora_script  # noqa: F401  (built-in extensions load first; this one patches torch.nn class-wide)
    load_model()
    scripts.load_scripts_from(extension_root)
    shared.cmd_opts.port = port
    script_callbacks.before_ui_callback()
    ui_gradio_extensions.reload_javascript()
    shared.demo = ui.create_ui()
    shared.demo.queue(64)
    app, _local_url, _share_url = shared.demo.launch(
        server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True,
        allowed_paths=[scripts.webui_files_dir] + scripts.extension_roots)
    progress.setup_progress_api(app)
    app.add_api_route("/stand-in/processed", lambda: {"prompts": list(processing.processed_prompts)},
                      methods=["GET"])
    script_callbacks.app_started_callback(shared.demo, app)
    print(f"stand-in WebUI on http://127.0.0.1:{port}", flush=True)
    while True:
        time.sleep(0.5)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--extension", default=REPO, help="extension root whose scripts/ are loaded")
    args = parser.parse_args()
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    webui(args.port, os.path.abspath(args.extension))


if __name__ == "__main__":
    main()
