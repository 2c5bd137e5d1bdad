"""Stand-in of modules/interrogate.py: `InterrogateModels` (BLIP caption + CLIP ranking).

Same methods as the WebUI's: load() puts BLIP and CLIP on devices.device_interrogate,
generate_caption(pil) is BLIP only and needs load() first, interrogate(pil) wraps
it in shared.state.begin()/end() and appends CLIP categories, send_blip_to_ram /
send_clip_to_ram / unload move them back to the CPU unless
interrogate_keep_models_in_memory. The "BLIP" here names the dominant colour.
"""
from __future__ import annotations

import torch

from modules import devices, lowvram, shared
from modules.deepbooru_model import PlacedModule

blip_image_eval_size = 384
clip_model_name = 'ViT-L/14'
COLOURS = ("red", "green", "blue")


class _StandInBlip(PlacedModule):
    def generate(self, image, sample=False, num_beams=1, min_length=24, max_length=48):
        colour = COLOURS[int(image.mean(dim=(0, 2, 3)).argmax())]
        return [f"a picture of a {colour} square"]


class InterrogateModels:
    blip_model = None
    clip_model = None
    clip_preprocess = None
    dtype = None
    running_on_cpu = None

    def __init__(self, content_dir):
        self.loaded_categories = None
        self.skip_categories = []
        self.content_dir = content_dir
        self.running_on_cpu = devices.device_interrogate == torch.device("cpu")

    def categories(self):
        return []

    def load_blip_model(self):
        return _StandInBlip().eval()

    def load_clip_model(self):
        return PlacedModule().eval(), None

    def load(self):
        if self.blip_model is None:
            self.blip_model = self.load_blip_model()
        self.blip_model = self.blip_model.to(devices.device_interrogate)
        if self.clip_model is None:
            self.clip_model, self.clip_preprocess = self.load_clip_model()
        self.clip_model = self.clip_model.to(devices.device_interrogate)
        self.dtype = torch.float32

    def send_clip_to_ram(self):
        if not shared.opts.interrogate_keep_models_in_memory:
            if self.clip_model is not None:
                self.clip_model = self.clip_model.to(devices.cpu)

    def send_blip_to_ram(self):
        if not shared.opts.interrogate_keep_models_in_memory:
            if self.blip_model is not None:
                self.blip_model = self.blip_model.to(devices.cpu)

    def unload(self):
        self.send_clip_to_ram()
        self.send_blip_to_ram()
        devices.torch_gc()

    def generate_caption(self, pil_image):
        if self.dtype is None:       # the WebUI fails here too: .type(None) before load()
            raise TypeError("type() missing dtype: call load() first")
        pixels = torch.tensor(list(pil_image.convert("RGB").resize((8, 8)).getdata()), dtype=self.dtype)
        gpu_image = pixels.T.reshape(1, 3, 8, 8)
        with torch.no_grad():
            caption = self.blip_model.generate(gpu_image, sample=False, num_beams=shared.opts.interrogate_clip_num_beams,
                                               min_length=shared.opts.interrogate_clip_min_length,
                                               max_length=shared.opts.interrogate_clip_max_length)
        return caption[0]

    def interrogate(self, pil_image):
        res = ""
        shared.state.begin(job="interrogate")
        try:
            if shared.cmd_opts.lowvram or shared.cmd_opts.medvram:
                lowvram.send_everything_to_cpu()
                devices.torch_gc()
            self.load()
            res = self.generate_caption(pil_image)
            self.send_blip_to_ram()
            devices.torch_gc()
        except Exception:
            res += "<error>"
        self.unload()
        shared.state.end()
        return res
