"""Path checks of the tab's fields and uploads, under the policy of the tab's backend.

The policy (lib_lora/path_policy.py) is the backend's: the WebUI's own, or the standalone
server's. Gradio 3 copies whatever server file the page names as "uploaded", so uploads are
checked too.
"""
from __future__ import annotations

import os
import tempfile
from typing import Any, Iterable

from lib_lora.path_policy import PathPolicy
from lib_lora.ui import gradio_compat


def policy_for(backend: Any) -> PathPolicy:
    """The policy of the tab's backend (no confinement when it has none)."""
    return backend.current_path_policy()


def check_paths(backend: Any, fields: Iterable[tuple[str, Any, bool]]) -> list[str]:
    """Check several (field label, path, read recursively) at once; empty fields stay empty."""
    policy = policy_for(backend)
    return [policy.check_optional(path, field, tree=tree) for field, path, tree in fields]


def gradio_upload_dir() -> str:
    """Where Gradio (3.x and 4.x) keeps uploaded files."""
    return os.environ.get("GRADIO_TEMP_DIR") or os.path.join(tempfile.gettempdir(), "gradio")


def check_uploads(backend: Any, *values: Any) -> None:
    """Gradio 3 copies whatever server file the page names as "uploaded" (orig_name) before our
    handler runs; a real upload names a file in Gradio's upload folder, so while confined any other
    source outside the roots is refused (else a remote page could import the server's files)."""
    policy = policy_for(backend)
    if not policy.confined:
        return
    uploads = PathPolicy(policy.roots + (gradio_upload_dir(),), True, policy.reason)
    for value in values:
        for item in value if isinstance(value, (list, tuple)) else [value]:
            if item:
                uploads.check(getattr(item, "orig_name", None) or gradio_compat.uploaded_path(item), "Upload")


