"""The WebUI's upscalers (shared.sd_upscalers: ESRGAN, SwinIR, DAT, ...) as preprocessing's upscale hook.

Prep asks the hook for `(img, scale)` with scale 2 at most and resizes the
result to the exact size it wants (lib_lora/dataset/resize.py). "Lanczos" and
"Nearest" are plain resizes and "None" means no upscaling, so the tab offers
"Lanczos" (our own, also headless) and every model upscaler the WebUI lists.
"""
from __future__ import annotations

from typing import Callable

from PIL import Image

from lib_lora.errors import ConfigError

PLAIN = ("none", "lanczos", "nearest")


def upscaler_names() -> list[str]:
    """Choices for PrepConfig.upscaler inside the WebUI: Lanczos first, then the model upscalers."""
    from modules import shared
    return ["Lanczos"] + [u.name for u in shared.sd_upscalers if u.name and u.name.lower() not in PLAIN]


def upscale_hook(name: str) -> Callable[[Image.Image, int], Image.Image] | None:
    """The hook for `run_prep(upscaler=...)`; None for Lanczos (prep's own resize)."""
    from modules import shared
    if (name or "").strip().lower() in ("", "lanczos"):
        return None
    match = [u for u in shared.sd_upscalers if u.name == name]
    if not match:
        raise ConfigError("prep.upscaler", name, "one of the WebUI's upscalers: " + ", ".join(upscaler_names()))
    data = match[0]

    def upscale(img: Image.Image, scale: int) -> Image.Image:
        # Model upscalers take RGB; a kept alpha channel is enlarged with Lanczos beside them.
        result = data.scaler.upscale(img.convert("RGB"), scale, data.data_path)
        if "A" in img.getbands():
            result.putalpha(img.getchannel("A").resize(result.size, Image.LANCZOS))
        return result.convert("L") if img.mode == "L" else result
    return upscale
