"""Stand-in of modules/devices.py: device/dtype globals and the helpers extensions call."""
from __future__ import annotations

import contextlib

import torch

cpu = torch.device("cpu")
fp8 = False
force_fp16 = False
unet_needs_upcast = False
torch_gc_calls = 0          # stand-in only: lets tests see that VRAM was released


def get_optimal_device_name():
    return "cuda" if torch.cuda.is_available() else "cpu"


def get_optimal_device():
    return torch.device(get_optimal_device_name())


def get_device_for(task):
    return get_optimal_device()


device = device_interrogate = device_gfpgan = device_esrgan = device_codeformer = cpu
dtype = dtype_vae = dtype_unet = dtype_inference = torch.float32   # --no-half on CPU


def torch_gc():
    global torch_gc_calls
    torch_gc_calls += 1
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
        torch.cuda.ipc_collect()


def autocast(disable=False):
    if disable or dtype == torch.float32 or dtype_inference == torch.float32:
        return contextlib.nullcontext()
    return torch.autocast("cuda")


def without_autocast(disable=False):
    return contextlib.nullcontext()


def cond_cast_unet(x):
    return x.to(dtype_unet) if unet_needs_upcast else x


def cond_cast_float(x):
    return x.float() if unet_needs_upcast else x


class NansException(Exception):
    pass


def test_for_nans(x, where):
    if torch.isnan(x[(0,) * x.dim()]).all() if x.numel() else False:
        raise NansException(f"A tensor with all NaNs was produced in {where}.")
