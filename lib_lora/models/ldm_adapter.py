"""The TrainableModel over the ldm/sgm object the WebUI holds (`shared.sd_model`).

No copy and no reload: the adapter reads the UNet, VAE and text encoders in place
and is duck-typed over them, importing nothing from the WebUI, so tests can feed
it the tiny real ldm models. SD1.x/SD2.x are ldm LatentDiffusion (SD2-v from
`parameterization`); SDXL is sgm's DiffusionEngine (detected by `conditioner`).
Putting the model into a trainable state and back is webui/model_bridge.py's job.
"""
from __future__ import annotations

import contextlib
import hashlib

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from lib_lora.errors import ModelError
from lib_lora.models import ldm_attention, ldm_text
from lib_lora.models.protocol import Conditioning
from lib_lora.networks.target import NetworkTarget

# UNet blocks wrapped for gradient checkpointing (same names in ldm and sgm)
CHECKPOINT_BLOCKS = ("ResBlock", "BasicTransformerBlock")
CHECKPOINT_MARK = "_lib_lora_checkpointed"


def family_of_sd_model(sd_model: nn.Module) -> str:
    """The family of the WebUI's loaded model object by the WebUI's own rules
    (sd_models.set_model_type), flags first; a state dict's family is checkpoint_io.detect_family."""
    if getattr(sd_model, "is_sdxl", False) or hasattr(sd_model, "conditioner"):
        return "sdxl"
    if getattr(sd_model, "is_sd2", False) or hasattr(ldm_text.unwrap(sd_model.cond_stage_model), "model"):
        return "sd2"
    return "sd1"


class LdmModel:
    """TrainableModel for SD1/SD2(v)/SDXL as the WebUI holds them."""

    def __init__(self, sd_model: nn.Module, sdxl_clip_l_skip: bool = False):
        if sd_model is None or not hasattr(sd_model, "model"):
            raise ModelError("No Stable Diffusion model is loaded", where="shared.sd_model",
                             fix="Load a checkpoint in the WebUI first")
        self.sd_model = sd_model
        self.family = family_of_sd_model(sd_model)
        self.parameterization = "v" if getattr(sd_model, "parameterization", "eps") == "v" else "eps"
        self.unet: nn.Module = sd_model.model.diffusion_model
        first = next(self.unet.parameters())
        self.device, self.dtype = first.device, first.dtype
        info = getattr(sd_model, "sd_checkpoint_info", None)
        self.name = getattr(info, "name_for_extra", None) or getattr(info, "model_name", None) or "unknown"
        self.sdxl_clip_l_skip = sdxl_clip_l_skip
        self._encoders = self._describe_text_encoders()
        self._saved_forwards: dict[nn.Module, object] = {}
        self._attention_forwards: dict[nn.Module, object] = {}
        self._vae_fingerprint: str | None = None

    # ----- structure -------------------------------------------------------------------------
    def _text_embedders(self) -> list[nn.Module]:
        if self.family == "sdxl":
            return [ldm_text.unwrap(e) for e in self.sd_model.conditioner.embedders]
        return [ldm_text.unwrap(self.sd_model.cond_stage_model)]

    def _describe_text_encoders(self) -> list[ldm_text.TextEncoder]:
        embedders = [e for e in self._text_embedders() if getattr(e, "input_key", "txt") == "txt"]
        # SDXL's bigG embedder keeps no tokenizer; CLIP-L's uses the same BPE vocabulary
        shared = next((e.tokenizer for e in embedders if getattr(e, "tokenizer", None) is not None), None)
        return [ldm_text.describe_encoder(e, shared) for e in embedders]

    def network_targets(self, train_unet: bool, train_text_encoder: bool) -> list[NetworkTarget]:
        targets = []
        if train_unet:
            targets.append(NetworkTarget("lora_unet", self.unet, "sgm" if self.family == "sdxl" else "ldm", "unet"))
        if train_text_encoder:
            prefixes = ["lora_te1", "lora_te2"] if self.family == "sdxl" else ["lora_te"]
            for prefix, enc in zip(prefixes, self._encoders):
                root = self._open_clip_root(enc.raw) if enc.kind == "open_clip" else enc.raw.transformer
                targets.append(NetworkTarget(prefix, root, enc.kind, "text_encoder"))
        return targets

    def _open_clip_root(self, raw: nn.Module) -> nn.Module:
        """SD2's encoder stops `layer_idx` blocks before the end (penultimate layer), and sd-scripts
        loads it as a 23-layer CLIP without the last block, as does diffusers' SD2 text encoder:
        its files never hold keys for that block. Train the same layers so the keys match. The
        returned view holds the used blocks under their own indices; it copies nothing and is
        not part of the model. SDXL's bigG runs every block (its pooled output needs the last)."""
        unused = int(getattr(raw, "layer_idx", 0) or 0) if self.family == "sd2" else 0
        if not unused:
            return raw.model
        blocks = raw.model.transformer.resblocks
        view = nn.Module()
        view.transformer = nn.Module()
        view.transformer.resblocks = nn.ModuleList(list(blocks)[:len(blocks) - unused])
        return view

    def alphas_cumprod(self) -> torch.Tensor:
        # the WebUI keeps the checkpoint's schedule here when a noise-schedule option replaced it
        original = getattr(self.sd_model, "alphas_cumprod_original", None)
        values = original if original is not None else self.sd_model.alphas_cumprod
        return torch.as_tensor(values).detach().to("cpu", torch.float32).clone()

    # ----- images ----------------------------------------------------------------------------
    def _vae(self) -> nn.Module:
        return self.sd_model.first_stage_model

    @torch.no_grad()
    def encode_images(self, pixels: torch.Tensor) -> torch.Tensor:
        vae_param = next(self._vae().parameters())
        posterior = self.sd_model.encode_first_stage(pixels.to(vae_param.device, vae_param.dtype))
        return self.sd_model.get_first_stage_encoding(posterior).float()

    @torch.no_grad()
    def decode_latents(self, latents: torch.Tensor) -> torch.Tensor:
        vae_param = next(self._vae().parameters())
        return self.sd_model.decode_first_stage(latents.to(vae_param.device, vae_param.dtype)).float()

    def offload_parts(self) -> dict[str, list[nn.Module]]:
        """The parts training needs no more once latents and text-encoder outputs are cached
        (training/offload.py moves them to the CPU and back). SDXL's whole conditioner goes: its
        size embedders hold no weights."""
        encoders = self.sd_model.conditioner if self.family == "sdxl" else self.sd_model.cond_stage_model
        return {"vae": [self._vae()], "text_encoder": [encoders]}

    def vae_fingerprint(self) -> str:
        if self._vae_fingerprint is None:
            digest = hashlib.sha1()
            for name, tensor in self._vae().state_dict().items():
                flat = tensor.detach().reshape(-1)
                sample = flat[:: max(1, flat.numel() // 4096)].float().cpu()
                digest.update(f"{name}{tuple(tensor.shape)}{tensor.dtype}".encode())
                digest.update(sample.numpy().tobytes())
            self._vae_fingerprint = digest.hexdigest()[:16]
        return self._vae_fingerprint

    # ----- text ------------------------------------------------------------------------------
    def encode_text(self, captions: list[str], clip_skip: int, max_token_length: int,
                    sizes: list[tuple[int, int]] | None = None) -> Conditioning:
        if self.family != "sdxl":
            tokens = ldm_text.token_batch(captions, self._encoders[0], max_token_length)
            hidden, _ = ldm_text.run_encoder(self._encoders[0], tokens, clip_skip)
            return Conditioning(hidden)
        return self._encode_sdxl(captions, clip_skip, max_token_length, sizes)

    def _encode_sdxl(self, captions, clip_skip, max_token_length, sizes) -> Conditioning:
        """crossattn = CLIP-L and bigG hidden states side by side; vector = bigG pooled + the
        size/crop embeddings, per sample (the WebUI passes one size for a whole batch)."""
        hf_layer = "skip" if self.sdxl_clip_l_skip and clip_skip > 1 else "model"
        contexts, vectors = [], []
        for enc in self._encoders:
            tokens = ldm_text.token_batch(captions, enc, max_token_length)
            hidden, pooled = ldm_text.run_encoder(enc, tokens, clip_skip, hf_layer)
            contexts.append(hidden)
            if pooled is not None:
                vectors.append(pooled)
        sizes = sizes or [(1024, 1024)] * len(captions)
        size_values = self._size_conditions(sizes)
        for embedder in self._text_embedders():
            key = getattr(embedder, "input_key", "txt")
            if key != "txt":
                vectors.append(embedder(size_values[key]))
        device = contexts[0].device
        vector = torch.cat([v.to(device, contexts[0].dtype) for v in vectors], dim=1)
        return Conditioning(torch.cat(contexts, dim=2), vector)

    def _size_conditions(self, sizes: list[tuple[int, ...]]) -> dict[str, torch.Tensor]:
        """original and target size = the bucket's (h, w); crop = (top, left), given as the
        optional 3rd/4th entries of a size tuple, else (0, 0)."""
        hw = torch.tensor([[s[0], s[1]] for s in sizes], device=self.device)
        crop = torch.tensor([[s[2], s[3]] if len(s) >= 4 else [0, 0] for s in sizes], device=self.device)
        return {"original_size_as_tuple": hw, "crop_coords_top_left": crop, "target_size_as_tuple": hw}

    # ----- UNet ------------------------------------------------------------------------------
    def predict(self, noisy_latents: torch.Tensor, timesteps: torch.Tensor, cond: Conditioning) -> torch.Tensor:
        # the WebUI holds fp16 weights on GPU and runs them under autocast; do the same
        autocast = (torch.autocast(self.device.type, dtype=self.dtype)
                    if self.dtype in (torch.float16, torch.bfloat16) and self.device.type != "cpu"
                    else contextlib.nullcontext())
        context = cond.context.to(self.device, self.dtype)
        vector = None if cond.vector is None else cond.vector.to(self.device, self.dtype)
        with autocast:
            out = self.unet(noisy_latents.to(self.device, self.dtype), timesteps=timesteps.to(self.device),
                            context=context, y=vector)
        return out.float()

    def set_attention(self, sdpa: bool) -> str:
        """With `sdpa`, every attention module of the UNet and the VAE runs through
        scaled_dot_product_attention (models/ldm_attention.py), whatever forward its class has now;
        without, they run their class's forward (the stock ldm/sgm math once the WebUI bridge has
        undone the WebUI's optimization). Per instance, undone exactly by set_attention(False)."""
        ldm_attention.remove_sdpa_forwards(self._attention_forwards)
        if sdpa:
            ldm_attention.install_sdpa_forwards([self.unet, self._vae()], self._attention_forwards)
        return ""

    def set_gradient_checkpointing(self, enabled: bool) -> None:
        """Wrap each ResBlock/BasicTransformerBlock forward in torch's non-reentrant checkpoint,
        which (unlike ldm's own CheckpointFunction) gives LoRA parameters outside the block's
        parameter list their gradients. Per instance, and undone exactly when disabled."""
        if not enabled:
            for module, previous in self._saved_forwards.items():
                if previous is None:
                    module.__dict__.pop("forward", None)
                else:
                    module.forward = previous
            self._saved_forwards.clear()
            return
        for module in self.unet.modules():
            if type(module).__name__ in CHECKPOINT_BLOCKS and module not in self._saved_forwards:
                self._saved_forwards[module] = module.__dict__.get("forward")
                module.forward = _checkpointed_forward(module)


def _checkpointed_forward(module: nn.Module):
    inner = module.forward

    def forward(*args, **kwargs):
        if torch.is_grad_enabled():
            return checkpoint(inner, *args, use_reentrant=False, **kwargs)
        return inner(*args, **kwargs)

    setattr(forward, CHECKPOINT_MARK, True)
    return forward
