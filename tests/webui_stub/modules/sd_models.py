"""Stand-in of modules/sd_models.py: the loaded model and checkpoint bookkeeping.

The "checkpoint" is a tiny real ldm model from tests/fixtures (seeded, built in code);
`set_model_family` chooses SD1, SD2-v or SDXL for the next load."""
from __future__ import annotations

import enum
import json
import os
import threading

import torch

from modules import devices, paths, script_callbacks, sd_hijack

model_dir = "Stable-diffusion"
model_path = os.path.join(paths.models_path, model_dir)
checkpoints_list = {}
checkpoint_aliases = {}
checkpoint_alisases = checkpoint_aliases  # the WebUI's own misspelt alias
checkpoints_loaded = {}
model_family = "sd1"


class ModelType(enum.Enum):
    SD1 = 1
    SD2 = 2
    SDXL = 3
    SSD = 4
    SD3 = 5


class CheckpointInfo:
    def __init__(self, filename):
        self.filename = filename
        self.is_safetensors = filename.lower().endswith(".safetensors")
        self.name = os.path.basename(filename)
        self.name_for_extra = os.path.splitext(self.name)[0]
        self.model_name = self.name_for_extra
        self.hash = self.sha256 = None
        self.shorthash = "0123456789"
        self.title = f"{self.name} [{self.shorthash}]"
        self.short_title = f"{self.name_for_extra} [{self.shorthash}]"
        self.ids = [self.title, self.name, self.model_name]
        self.metadata = {}

    def register(self):
        checkpoints_list[self.title] = self
        for alias in self.ids:
            checkpoint_aliases[alias] = self

    def calculate_shorthash(self):
        return self.shorthash


def list_models():
    checkpoints_list.clear()
    checkpoint_aliases.clear()
    for family in ("sd1", "sd2", "sdxl"):
        CheckpointInfo(os.path.join(model_path, f"tiny-{family}.safetensors")).register()


def checkpoint_tiles(use_short=False):
    return [x.short_title if use_short else x.title for x in checkpoints_list.values()]


def get_closet_checkpoint_match(search_string):
    return next((info for title, info in checkpoints_list.items() if search_string in title), None)


def select_checkpoint():
    return CheckpointInfo(os.path.join(model_path, f"tiny-{model_family}.safetensors"))


def set_model_family(family: str):
    """Stand-in only: which tiny model the next load builds; unloads the current one."""
    global model_family
    model_family = family
    model_data.sd_model = None
    model_data.was_loaded_at_least_once = False


def build_tiny_model(family: str):
    """Stand-in only: the tiny model of `family` as built, before load_model's bookkeeping (the bench's
    WebUI path puts real-size parts into it, so the library never imports tests/fixtures itself)."""
    from tests.fixtures import tiny_ldm
    builders = {"sd1": tiny_ldm.build_sd1, "sd2": tiny_ldm.build_sd2_v, "sdxl": tiny_ldm.build_sdxl}
    return builders[family]()


def load_model(checkpoint_info=None, already_loaded_state_dict=None):
    sd_model = build_tiny_model(model_family)
    # As the WebUI holds it: ldm/sgm freeze only the VAE and the text encoders when they build a
    # model, and load_model freezes nothing more, so the UNet's parameters require grad.
    sd_model.model.requires_grad_(True)
    sd_model.sd_checkpoint_info = checkpoint_info or select_checkpoint()
    sd_model.sd_model_checkpoint = sd_model.sd_checkpoint_info.filename
    sd_model.sd_model_hash = sd_model.sd_checkpoint_info.shorthash
    sd_model.model_type = {"sd1": ModelType.SD1, "sd2": ModelType.SD2, "sdxl": ModelType.SDXL}[model_family]
    if not hasattr(sd_model, "alphas_cumprod_original"):
        sd_model.alphas_cumprod_original = None
    send_model_to_device(sd_model)
    sd_hijack.model_hijack.hijack(sd_model)
    model_data.set_sd_model(sd_model)
    model_data.was_loaded_at_least_once = True
    script_callbacks.model_loaded_callback(sd_model)
    return sd_model


def reload_model_weights(sd_model=None, info=None, forced_reload=False):
    """No-op when the selected checkpoint is already loaded (the usual case in tests)."""
    return model_data.sd_model


def unload_model_weights(sd_model=None, info=None):
    send_model_to_cpu(sd_model or model_data.sd_model)


def send_model_to_cpu(m):
    if m is not None:
        m.to(devices.cpu)
    devices.torch_gc()


def send_model_to_device(m):
    m.to(devices.device)


def send_model_to_trash(m):
    m.to(device="meta")
    devices.torch_gc()


def model_target_device(m):
    return devices.device


def read_metadata_from_safetensors(filename):
    with open(filename, mode="rb") as file:
        header_len = int.from_bytes(file.read(8), "little")
        header = file.read(header_len)
    assert header.startswith(b'{"') or header.startswith(b"{'"), f"{filename} is not a safetensors file"
    metadata = json.loads(header).get("__metadata__", {})
    return {k: (json.loads(v) if isinstance(v, str) and v[:1] == '{' else v) for k, v in metadata.items()}


def read_state_dict(checkpoint_file, print_global_state=False, map_location=None):
    import safetensors.torch
    return safetensors.torch.load_file(checkpoint_file, device=map_location or "cpu")


class SdModelData:
    def __init__(self):
        self.sd_model = None
        self.loaded_sd_models = []
        self.was_loaded_at_least_once = False
        self.lock = threading.Lock()

    def get_sd_model(self):
        if self.was_loaded_at_least_once:
            return self.sd_model
        if self.sd_model is None:
            with self.lock:
                if self.sd_model is None and not self.was_loaded_at_least_once:
                    load_model()
        return self.sd_model

    def set_sd_model(self, v, already_loaded=False):
        self.sd_model = v
        if v is not None and v not in self.loaded_sd_models:
            self.loaded_sd_models.insert(0, v)


model_data = SdModelData()
torch_dtype = torch.float32
