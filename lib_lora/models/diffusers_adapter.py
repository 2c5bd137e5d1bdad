"""The headless backend: a diffusers pipeline behind the trainer's protocol.

Loads a diffusers folder, or a single-file checkpoint converted with a LOCAL
config (never a hub download at run time), or wraps the built-in tiny model.
SD1/SD2 use one CLIP text encoder; SDXL two (CLIP-L penultimate + bigG
penultimate and its pooled projection) plus size/crop "time ids".
"""
from __future__ import annotations

import hashlib
from pathlib import Path

import torch

from ..errors import ModelError
from ..networks.target import NetworkTarget
from .protocol import Conditioning
from .text_chunks import chunk_token_ids, encode_hf_clip


def skip_bitsandbytes_probe() -> None:
    """Stop diffusers from importing bitsandbytes when its model classes load.

    diffusers imports bitsandbytes whenever it is installed (for quantized loading,
    which we never use), costing about a second of start-up and printing a warning
    about a missing 'kernels' package. The 8-bit optimizers import it themselves
    when chosen (training/optim.py). Leaves diffusers alone if bitsandbytes is
    already imported or the diffusers models are already loaded."""
    import sys

    if "bitsandbytes" in sys.modules or "diffusers.models" in sys.modules:
        return
    try:
        import diffusers.utils.import_utils as diffusers_imports
    except ImportError:
        return
    diffusers_imports._bitsandbytes_available = False


skip_bitsandbytes_probe()


def ddpm_alphas_cumprod(beta_start: float = 0.00085, beta_end: float = 0.012, steps: int = 1000,
                        schedule: str = "scaled_linear") -> torch.Tensor:
    """The DDPM schedule SD was trained with (fp32, (steps,))."""
    if schedule == "scaled_linear":
        betas = torch.linspace(beta_start ** 0.5, beta_end ** 0.5, steps, dtype=torch.float64) ** 2
    else:
        betas = torch.linspace(beta_start, beta_end, steps, dtype=torch.float64)
    return torch.cumprod(1.0 - betas, dim=0).float()


class DiffusersModel:
    """TrainableModel over a StableDiffusion(XL)Pipeline."""

    def __init__(self, pipe, name: str = "tiny", device: str | torch.device = "cpu",
                 dtype: torch.dtype = torch.float32):
        self.pipe = pipe
        self.name = name
        self.device = torch.device(device)
        self.dtype = dtype
        self.family = "sdxl" if hasattr(pipe, "text_encoder_2") and pipe.text_encoder_2 is not None else \
            ("sd2" if pipe.text_encoder.config.hidden_size == 1024 else "sd1")
        pred = getattr(pipe.scheduler.config, "prediction_type", "epsilon")
        self.parameterization = "v" if pred == "v_prediction" else "eps"
        # Base weights in the run's half precision before the move, so no fp32 copy ever sits on the
        # GPU whole: the UNet and the text encoders (SDXL's two hold 1.4 GB more in fp32; they run
        # under autocast like the UNet). The VAE keeps its dtype: SDXL's overflows in fp16.
        for module in [pipe.unet] + self._modules()[2:]:
            if module.dtype != dtype:
                module.to(dtype=dtype)
        for module in self._modules():
            module.requires_grad_(False)
            module.to(self.device)
        if self.device.type == "cpu":
            # oneDNN convolutions run about a third faster on channels-last tensors: this is
            # most of the latent-caching time before the first step on CPU.
            pipe.vae.to(memory_format=torch.channels_last)

    # -- structure -------------------------------------------------------
    def _modules(self):
        mods = [self.pipe.unet, self.pipe.vae, self.pipe.text_encoder]
        if self.family == "sdxl":
            mods.append(self.pipe.text_encoder_2)
        return mods

    @property
    def unet(self):
        return self.pipe.unet

    def offload_parts(self) -> dict[str, list]:
        """The parts training needs no more once latents and text-encoder outputs are cached
        (training/offload.py moves them to the CPU and back)."""
        return {"vae": [self.pipe.vae], "text_encoder": self._modules()[2:]}

    def network_targets(self, train_unet: bool, train_text_encoder: bool) -> list[NetworkTarget]:
        targets = []
        if train_unet:
            targets.append(NetworkTarget("lora_unet", self.pipe.unet, "diffusers", "unet"))
        if train_text_encoder:
            if self.family == "sdxl":
                targets.append(NetworkTarget("lora_te1", self.pipe.text_encoder, "hf_clip", "text_encoder"))
                targets.append(NetworkTarget("lora_te2", self.pipe.text_encoder_2, "hf_clip", "text_encoder"))
            else:
                targets.append(NetworkTarget("lora_te", self.pipe.text_encoder, "hf_clip", "text_encoder"))
        return targets

    def alphas_cumprod(self) -> torch.Tensor:
        cfg = self.pipe.scheduler.config
        return ddpm_alphas_cumprod(cfg.beta_start, cfg.beta_end, cfg.num_train_timesteps, cfg.beta_schedule)

    # -- images ----------------------------------------------------------
    @torch.no_grad()
    def encode_images(self, pixels: torch.Tensor) -> torch.Tensor:
        vae = self.pipe.vae
        if self.device.type == "cpu":
            pixels = pixels.contiguous(memory_format=torch.channels_last)
        dist = vae.encode(pixels.to(self.device, vae.dtype)).latent_dist
        return dist.sample() * vae.config.scaling_factor

    @torch.no_grad()
    def decode_latents(self, latents: torch.Tensor) -> torch.Tensor:
        vae = self.pipe.vae
        return vae.decode(latents.to(self.device, vae.dtype) / vae.config.scaling_factor).sample

    def vae_fingerprint(self) -> str:
        h = hashlib.sha1()
        for name, tensor in sorted(self.pipe.vae.encoder.state_dict().items()):
            h.update(name.encode())
            # the first 1024 values (4096 bytes in fp32), without converting the whole tensor
            h.update(tensor.detach().reshape(-1)[:1024].float().cpu().numpy().tobytes())
        return h.hexdigest()[:16]

    # -- text ------------------------------------------------------------
    def encode_text(self, captions: list[str], clip_skip: int, max_token_length: int,
                    sizes: list[tuple[int, int]] | None = None) -> Conditioning:
        # each tokenizer's own pad id after the first EOS: OpenCLIP encoders (SD2, SDXL's bigG; their
        # tokenizers pad with "!") are fed 0s there, as the WebUI does
        tok = self.pipe.tokenizer
        ids = chunk_token_ids(tok, captions, max_token_length, pad_id=tok.pad_token_id)
        if self.family != "sdxl":
            context, _ = encode_hf_clip(self.pipe.text_encoder, ids, clip_skip)
            return Conditioning(context.to(self.dtype))
        # SDXL: both encoders at their penultimate layer, hidden states side by side; pooled from bigG.
        tok2 = self.pipe.tokenizer_2 or tok
        ids2 = ids if tok2.pad_token_id == tok.pad_token_id else \
            chunk_token_ids(tok2, captions, max_token_length, pad_id=tok2.pad_token_id)
        ctx1, _ = encode_hf_clip(self.pipe.text_encoder, ids, 1, hidden_layer=-2)
        ctx2, pooled = encode_hf_clip(self.pipe.text_encoder_2, ids2, 1, hidden_layer=-2)
        sizes = sizes or [(1024, 1024)] * len(captions)
        time_ids = torch.tensor([[h, w, 0, 0, h, w] for h, w in sizes], dtype=torch.float32)
        return Conditioning(torch.cat([ctx1, ctx2], dim=-1).to(self.dtype), pooled.to(self.dtype),
                            {"time_ids": time_ids.to(self.device, self.dtype)})

    # -- denoiser ----------------------------------------------------------
    def predict(self, noisy_latents: torch.Tensor, timesteps: torch.Tensor, cond: Conditioning) -> torch.Tensor:
        added = None
        if self.family == "sdxl":
            time_ids = cond.extra["time_ids"][: noisy_latents.shape[0]]
            added = {"text_embeds": cond.vector, "time_ids": time_ids}
        return self.pipe.unet(noisy_latents.to(self.dtype), timesteps, encoder_hidden_states=cond.context,
                              added_cond_kwargs=added).sample

    def set_gradient_checkpointing(self, enabled: bool) -> None:
        # diffusers checkpoints with use_reentrant=False, so LoRA params inside a block get gradients
        # even though the block's input does not require grad.
        if enabled:
            self.pipe.unet.enable_gradient_checkpointing()
        else:
            self.pipe.unet.disable_gradient_checkpointing()

    def set_attention(self, sdpa: bool) -> str:
        """UNet attention through torch's scaled_dot_product_attention (flash/memory-efficient: no
        tokens x tokens map per head kept for backward), or diffusers' plain AttnProcessor (the
        reference math, which materialises that map). Returns a note for the user ('' when none)."""
        from diffusers.models.attention_processor import AttnProcessor, AttnProcessor2_0

        self.pipe.unet.set_attn_processor(AttnProcessor2_0() if sdpa else AttnProcessor())
        return ""


def load_diffusers_model(path: str | Path, device: str = "cpu", dtype: torch.dtype = torch.float32,
                         config_dir: str | Path | None = None, v_parameterization: bool = False) -> DiffusersModel:
    """A diffusers folder, or a single-file checkpoint (.safetensors/.ckpt) converted with a local
    config: `config_dir` when given, else the shipped config of its detected family (SD1.x, SD2.x,
    SDXL base). `v_parameterization` makes the scheduler predict v: a single file cannot tell."""
    from diffusers import StableDiffusionPipeline, StableDiffusionXLPipeline

    path = Path(path)
    if not path.exists():
        raise ModelError("The base model does not exist", where=str(path),
                         fix="Give a diffusers folder or a .safetensors/.ckpt checkpoint (model.pretrained)")
    if path.is_file():
        from .single_file import load_single_file_pipeline

        pipe = load_single_file_pipeline(path, config_dir, v_parameterization)
    else:
        is_xl = (path / "text_encoder_2").exists()
        try:
            pipe = StableDiffusionXLPipeline.from_pretrained(str(path), local_files_only=True) if is_xl else \
                StableDiffusionPipeline.from_pretrained(str(path), local_files_only=True, safety_checker=None)
        except (OSError, ValueError, EnvironmentError) as e:
            raise ModelError(f"The base model cannot be loaded: {e}", where=str(path),
                             fix="Check that it is a complete diffusers folder (model_index.json, unet/, vae/, ...)"
                             ) from None
    if v_parameterization and pipe.scheduler.config.get("prediction_type") != "v_prediction":
        pipe.scheduler = type(pipe.scheduler).from_config(pipe.scheduler.config, prediction_type="v_prediction")
    pipe.set_progress_bar_config(disable=True)
    return DiffusersModel(pipe, name=path.name, device=device, dtype=dtype)
