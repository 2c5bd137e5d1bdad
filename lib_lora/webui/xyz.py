"""Name scripts/train_lora.py imports the X/Y/Z axes under; the axes live in xyz_axes.py."""
from __future__ import annotations

from lib_lora.webui.xyz_axes import add_axes  # noqa: F401
