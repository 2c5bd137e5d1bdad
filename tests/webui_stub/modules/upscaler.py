"""Stand-in of modules/upscaler.py: Upscaler, UpscalerData and the built-in None/Lanczos/Nearest.

Behaves like the WebUI's `Upscaler.upscale(img, scale, selected_model)`: the
target is the scaled size rounded down to a multiple of 8; `do_upscale` runs
until the image reaches it (three passes at most, stopping when a pass changes
nothing), and a Lanczos resize lands on the exact target. Model upscalers
(ESRGAN, SwinIR, ...) subclass Upscaler and override do_upscale; tests add their own.
"""
from __future__ import annotations

import os

from PIL import Image

from modules import shared

LANCZOS = Image.Resampling.LANCZOS
NEAREST = Image.Resampling.NEAREST


class Upscaler:
    name = None
    model_path = None
    model_name = None
    model_url = None
    enable = True
    filter = None
    model = None
    user_path = None
    scalers: list = []
    tile = True

    def __init__(self, create_dirs=False):
        self.tile_size, self.tile_pad = shared.opts.ESRGAN_tile, shared.opts.ESRGAN_tile_overlap
        self.device, self.half = shared.device, not shared.cmd_opts.no_half
        self.img = self.output = self.mod_pad_h = self.mod_scale = self.model_download_path = None
        self.scale, self.pre_pad = 1, 0
        if self.model_path is None and self.name:
            self.model_path = os.path.join(shared.models_path, self.name)
        if self.model_path and create_dirs:
            os.makedirs(self.model_path, exist_ok=True)

    def do_upscale(self, img, selected_model: str):
        return img

    def upscale(self, img, scale, selected_model: str = None):
        self.scale = scale
        target = (int(img.width * scale // 8 * 8), int(img.height * scale // 8 * 8))
        for _ in range(3):
            before = img.size
            img = self.do_upscale(img, selected_model)
            if img.size == before or (img.width >= target[0] and img.height >= target[1]):
                break
        return img if img.size == target else img.resize(target, resample=LANCZOS)

    def load_model(self, path: str):
        pass

    def find_models(self, ext_filter=None) -> list:
        return []


class UpscalerData:
    name = None
    data_path = None
    scale: int = 4
    scaler: Upscaler = None
    model: None

    def __init__(self, name: str, path: str, upscaler: Upscaler = None, scale: int = 4, model=None):
        self.name, self.data_path, self.local_data_path = name, path, path
        self.scaler, self.scale, self.model = upscaler, scale, model


class _Resampling(Upscaler):
    """The built-in upscalers that are plain PIL resizes."""
    resample = None

    def __init__(self, dirname=None):
        super().__init__(False)
        self.scalers = [UpscalerData(self.name, None, self)]

    def do_upscale(self, img, selected_model=None):
        if self.resample is None:
            return img
        return img.resize((int(img.width * self.scale), int(img.height * self.scale)), resample=self.resample)


class UpscalerNone(_Resampling):
    name = "None"


class UpscalerLanczos(_Resampling):
    name, resample = "Lanczos", LANCZOS


class UpscalerNearest(_Resampling):
    name, resample = "Nearest", NEAREST
