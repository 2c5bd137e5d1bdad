"""Stand-in of modules/lowvram.py: the part interrogators call before loading their models."""
from __future__ import annotations

from modules import devices

module_in_gpu = None
cpu = devices.cpu
sent_to_cpu = 0        # stand-in only: how often everything was sent to the CPU


def send_everything_to_cpu():
    global module_in_gpu, sent_to_cpu
    sent_to_cpu += 1
    if module_in_gpu is not None:
        module_in_gpu.to(cpu)
    module_in_gpu = None


def is_enabled(sd_model):
    return sd_model.lowvram
