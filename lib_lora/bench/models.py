"""Random-weight models in the published shapes, built from the diffusers configs we ship (no download).

SD1.5 (runwayml) and SDXL base 1.0: UNet, VAE and text encoders built from
lib_lora/models/configs/<name>/, every part held in `dtype` as the WebUI holds a
half-precision checkpoint. Inside a FakeTensorMode the same code builds fake
weights (shapes and dtypes only, no memory, no arithmetic) for runs too slow to do
for real on a CPU; the scheduler is built outside it (it computes with numpy).
"""
from __future__ import annotations

import contextlib
import json

import torch

from ..models.model_configs import SHIPPED

CONFIG_NAMES = {"sd15": "sd15", "sdxl": "sdxl_base"}
_MODULE_APPLY = torch.nn.Module._apply


@contextlib.contextmanager
def default_dtype(dtype: torch.dtype):
    """Build modules straight in `dtype` (no full fp32 copy first: an SDXL is 10 GiB in fp32)."""
    before = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        yield
    finally:
        torch.set_default_dtype(before)


def _config(name: str, part: str) -> dict:
    text = (SHIPPED / CONFIG_NAMES[name] / part / "config.json").read_text(encoding="utf-8")
    return {k: v for k, v in json.loads(text).items() if not k.startswith("_")}


def _scheduler(name: str):
    from diffusers import EulerDiscreteScheduler

    path = SHIPPED / CONFIG_NAMES[name] / "scheduler" / "scheduler_config.json"
    return EulerDiscreteScheduler.from_config(json.loads(path.read_text(encoding="utf-8")))


def build_pipeline(name: str, dtype: torch.dtype, fake_mode=None, seed: int = 0):
    """The StableDiffusion(XL)Pipeline of `name` ('sd15' | 'sdxl') with random weights in `dtype`;
    fake weights when `fake_mode` (a FakeTensorMode) is given."""
    from diffusers import AutoencoderKL, StableDiffusionPipeline, StableDiffusionXLPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    from ..models.tiny import build_clip_tokenizer

    tokenizer = build_clip_tokenizer()
    scheduler = _scheduler(name)
    torch.manual_seed(seed)
    with (fake_mode or contextlib.nullcontext()), default_dtype(dtype):
        unet = UNet2DConditionModel.from_config(_config(name, "unet"))
        vae = AutoencoderKL.from_config(_config(name, "vae"))
        text_encoder = CLIPTextModel(CLIPTextConfig(**_config(name, "text_encoder")))
        if name == "sdxl":
            text_encoder_2 = CLIPTextModelWithProjection(CLIPTextConfig(**_config(name, "text_encoder_2")))
    if name == "sdxl":
        pipe = StableDiffusionXLPipeline(vae=vae, text_encoder=text_encoder, text_encoder_2=text_encoder_2,
                                         tokenizer=tokenizer, tokenizer_2=tokenizer, unet=unet, scheduler=scheduler)
    else:
        pipe = StableDiffusionPipeline(vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet,
                                       scheduler=scheduler, safety_checker=None, feature_extractor=None,
                                       requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def _apply_keeping_fake_params(original):
    """Module._apply for fake weights: torch swaps a FakeTensor parameter with its converted self,
    which fails (the fake mode holds weak references to it); a move that changes nothing keeps
    the parameter, a real conversion (a dtype change while building) gets a new Parameter."""
    from torch._subclasses.fake_tensor import FakeTensor

    def _apply(self, fn, recurse=True):
        if not any(isinstance(p, FakeTensor) for p in self._parameters.values()):
            return original(self, fn, recurse)
        if recurse:
            for child in self.children():
                child._apply(fn)
        for key, param in self._parameters.items():
            if param is None:
                continue
            with torch.no_grad():
                applied = fn(param)
            if applied is not param:
                self._parameters[key] = torch.nn.Parameter(applied, requires_grad=param.requires_grad)
        for key, buffer in self._buffers.items():
            if buffer is not None:
                self._buffers[key] = fn(buffer)
        return self

    return _apply


def ShapeOnlyMode():
    """A FakeTensorMode for whole training runs: where our code reads a number back (`.item()`:
    the loss for the log, Adam's step count), it gets 1 instead of an error, and modules holding
    fake weights can be moved (see _apply_keeping_fake_params). Memory and shapes are those of
    the real run; values are meaningless and are never reported."""
    from torch._subclasses.fake_tensor import FakeTensorMode

    class _Mode(FakeTensorMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            if func is torch.ops.aten._local_scalar_dense.default:
                tensor = args[0]
                return True if tensor.dtype == torch.bool else (1.0 if tensor.is_floating_point() else 1)
            return super().__torch_dispatch__(func, types, args, kwargs)

        depth = 0

        def __enter__(self):
            if self.depth == 0:
                torch.nn.Module._apply = _apply_keeping_fake_params(_MODULE_APPLY)
            self.depth += 1
            return super().__enter__()

        def __exit__(self, *exc):
            self.depth -= 1
            if self.depth == 0:
                torch.nn.Module._apply = _MODULE_APPLY
            return super().__exit__(*exc)

    return _Mode(allow_non_fake_inputs=True)
