"""The one place that knows which Gradio the tab runs on.

A1111 v1.10 ships Gradio 3.41.2; Forge and reForge ship Gradio 4.x; the standalone
server runs on whatever is installed. The tab files never spell a version-specific
keyword themselves: they ask here. What differs, and what we do:

- client-side code on an event or on load: `_js=` in Gradio 3, `js=` from Gradio 4;
- queue size: `queue(concurrency_count=n)` in Gradio 3, `default_concurrency_limit=n` from 4;
- `launch(show_api=...)`: gone in Gradio 6;
- uploaded files: temp-file objects with `.name` in Gradio 3, plain path strings from 4;
- a quiet event: show_progress="hidden" is accepted by 3.41 and 4.x alike (4.x dropped booleans).

The version is read on every call (cheap), so a test can fake it with `gradio.__version__`.
"""
from __future__ import annotations

from typing import Any

HIDE_PROGRESS = "hidden"      # show_progress value every supported Gradio accepts


def gradio_major(version: str | None = None) -> int:
    """Major version of the Gradio in use (or of `version`); 3 when it cannot be told."""
    if version is None:
        import gradio
        version = getattr(gradio, "__version__", "3")
    head = str(version).split(".")[0]
    return int(head) if head.isdigit() else 3


def js_kwargs(js: str | None) -> dict[str, Any]:
    """Keyword arguments that attach client-side code to an event listener or Blocks.load."""
    if not js:
        return {}
    return {"_js": js} if gradio_major() < 4 else {"js": js}


def queue_kwargs(concurrency: int) -> dict[str, Any]:
    """Keyword arguments of Blocks.queue for `concurrency` events running at once."""
    if gradio_major() < 4:
        return {"concurrency_count": concurrency}
    return {"default_concurrency_limit": concurrency}


def launch_kwargs(**kwargs: Any) -> dict[str, Any]:
    """Blocks.launch arguments without the ones this Gradio no longer takes."""
    if gradio_major() >= 6:
        kwargs.pop("show_api", None)
    return kwargs


def uploaded_path(value: Any) -> str:
    """Path of one uploaded file, whichever Gradio made it (temp-file object or str)."""
    return str(getattr(value, "name", value))


def uploaded_paths(value: Any) -> list[str]:
    """Paths of a File component's value: None, one file, or a list of files."""
    if not value:
        return []
    items = value if isinstance(value, (list, tuple)) else [value]
    return [uploaded_path(f) for f in items if f]
