"""Stand-in of modules/lowvram.py (v1.10.1): whether the WebUI runs the model in its low-VRAM mode,
and the part interrogators call before loading their own models.

`is_needed` is the WebUI's rule, read from the command line: --lowvram or --medvram always,
--medvram-sdxl only for an SDXL model (one with a `conditioner`). The stand-in never moves
model parts between devices (no `apply`/`setup_for_low_vram`): the tiny models load whole.
"""
from __future__ import annotations

from modules import devices, shared

module_in_gpu = None
cpu = devices.cpu
sent_to_cpu = 0        # stand-in only: how often everything was sent to the CPU


def send_everything_to_cpu():
    global module_in_gpu, sent_to_cpu
    sent_to_cpu += 1
    if module_in_gpu is not None:
        module_in_gpu.to(cpu)
    module_in_gpu = None


def is_needed(sd_model):
    opts = shared.cmd_opts
    return opts.lowvram or opts.medvram or opts.medvram_sdxl and hasattr(sd_model, "conditioner")


def is_enabled(sd_model):
    return sd_model.lowvram
