"""Random-weight models in the published shapes, built from the diffusers configs we ship (no download).

SD1.5 (runwayml) and SDXL base 1.0: UNet, VAE and text encoders built from
lib_lora/models/configs/<name>/, every part held in `dtype` as the WebUI holds a
half-precision checkpoint. For the WebUI path, the parts of SD1.5 as the WebUI holds
it: ldm's UNetModel and AutoencoderKL from the WebUI's v1-inference.yaml values and
the ViT-L/14 text transformer (webui/bench_session.py puts them into a LatentDiffusion). Inside a FakeTensorMode the same code builds fake
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


# configs/v1-inference.yaml of the WebUI (SD1.x): UNet and first stage, as ldm builds them
SD15_UNET = {"target": "ldm.modules.diffusionmodules.openaimodel.UNetModel", "params": dict(
    image_size=32, in_channels=4, out_channels=4, model_channels=320, attention_resolutions=[4, 2, 1],
    num_res_blocks=2, channel_mult=[1, 2, 4, 4], num_heads=8, use_spatial_transformer=True, transformer_depth=1,
    context_dim=768, use_checkpoint=True, legacy=False)}
SD15_VAE = {"target": "ldm.models.autoencoder.AutoencoderKL", "params": {
    "embed_dim": 4, "lossconfig": {"target": "torch.nn.Identity"},
    "ddconfig": {"double_z": True, "z_channels": 4, "resolution": 256, "in_channels": 3, "out_ch": 3, "ch": 128,
                 "ch_mult": [1, 2, 4, 4], "num_res_blocks": 2, "attn_resolutions": [], "dropout": 0.0}}}


def build_sd15_ldm_parts(dtype: torch.dtype, fake_mode=None) -> tuple[torch.nn.Module, ...]:
    """(UNet, VAE, CLIP text transformer) of SD1.5 as the WebUI's ldm holds them, random weights in
    `dtype` (fake under fake_mode). The bench passes this to the WebUI path, which builds no model itself."""
    from ldm.util import instantiate_from_config
    from transformers import CLIPTextConfig, CLIPTextModel

    with (fake_mode or contextlib.nullcontext()), default_dtype(dtype):
        unet = instantiate_from_config(SD15_UNET)
        vae = instantiate_from_config(SD15_VAE)
        text_transformer = CLIPTextModel(CLIPTextConfig(**_config("sd15", "text_encoder"))).eval()
        if fake_mode is None:
            _reinit_zero_modules(unet)
    return unet, vae, text_transformer


def _reinit_zero_modules(root: torch.nn.Module) -> None:
    """ldm starts out-projections at zero (zero_module); with random weights the UNet's output would
    then ignore its inputs and no LoRA could change it, so they get fresh random weights."""
    for module in root.modules():
        weight = getattr(module, "weight", None)
        if isinstance(module, (torch.nn.Conv2d, torch.nn.Linear)) and weight is not None and not weight.any():
            module.reset_parameters()


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
