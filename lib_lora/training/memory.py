"""How much device memory a run needs: the one estimator behind the plan's figure and the WebUI's VRAM check.

The model's weights are loaded before training (in the WebUI they already sit in
VRAM), so the estimate is split: what training ADDS (LoRA parameters with their
gradients and optimizer state, and activations, which scale with batch x pixels
of the plan's largest bucket, are cut about 4x by gradient checkpointing and
include the text encoder's only when it is trained), minus the weights moved to
the CPU after caching (training.offload_after_caching: the VAE, and a frozen,
cached text encoder). The figures are rough (good to a factor ~1.5): enough to
tell a run that fits from one that does not and to rank cheaper settings.
Pure arithmetic over the config and a few counts; nothing here touches a device.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from torch import nn

from .offload import offloaded_kinds

# activation bytes per sample at 512x512 without gradient checkpointing, mixed precision
ACTIVATIONS_512 = {"sd1": 1.2e9, "sd2": 1.4e9, "sdxl": 2.6e9}
# the same for a trained text encoder (per sample, 77-token chunk; all encoders of the family)
TE_ACTIVATIONS = {"sd1": 0.10e9, "sd2": 0.25e9, "sdxl": 0.45e9}
CHECKPOINTING_FACTOR = 0.25
STOCK_UNET_WIDTH = 320      # base channels of the SD1/SD2/SDXL UNets the activation figures are for
HEADROOM = 1.10            # fragmentation and the CUDA context
MIB = 2 ** 20
# bytes of optimizer state per trained parameter (weights and gradients are counted apart)
OPTIMIZER_STATE = {"adamw": 8, "adamw8bit": 2, "lion": 4, "lion8bit": 1, "prodigy": 16, "dadaptadam": 12,
                   "adafactor": 4, "sgdnesterov": 4, "adamwschedulefree": 8}


@dataclass
class ModelSizes:
    """What the estimate needs to know about a model, read once from it (see `model_sizes`).

    lora_params: trainable LoRA parameters per target kind ('unet', 'text_encoder') for the config.
    weights: bytes of the model's weights on its device, all parts together.
    offloadable: bytes of the parts offload_after_caching can move to the CPU ('vae', 'text_encoder').
    width_scale: the UNet's base width against the stock 320 channels (activations scale with it)."""
    family: str
    lora_params: dict[str, int] = field(default_factory=dict)
    weights: int = 0
    offloadable: dict[str, int] = field(default_factory=dict)
    width_scale: float = 1.0


def lora_param_counts(targets: list, network_cfg: Any) -> dict[str, int]:
    """Trainable LoRA parameters per target kind ('unet', 'text_encoder'), from the layers the
    network will really select (nothing is built): rank x (in + out) per layer."""
    from ..networks.network import select_layers

    counts = {"unet": 0, "text_encoder": 0}
    for target in targets:
        for _key, layer, conv3x3 in select_layers(target, network_cfg):
            rank = network_cfg.conv_dim if conv3x3 else network_cfg.dim
            if isinstance(layer, nn.MultiheadAttention):       # q, k, v and out
                count = 4 * rank * 2 * layer.embed_dim
            elif isinstance(layer, nn.Conv2d):
                kernel = layer.kernel_size[0] * layer.kernel_size[1]
                count = rank * (layer.in_channels * kernel + layer.out_channels)
            else:
                count = rank * (layer.in_features + layer.out_features)
            counts["unet" if target.kind == "unet" else "text_encoder"] += count
    return counts


def tensor_bytes(modules: list[nn.Module], device_type: str | None = None) -> int:
    """Bytes of the parameters and buffers of `modules` (each tensor once), optionally only those
    on devices of `device_type` ('cuda'): what moving them away frees there."""
    seen: set[int] = set()
    total = 0
    for module in modules:
        for tensor in [*module.parameters(), *module.buffers()]:
            if id(tensor) in seen or (device_type is not None and tensor.device.type != device_type):
                continue
            seen.add(id(tensor))
            total += tensor.numel() * tensor.element_size()
    return total


def model_sizes(cfg: Any, model: Any) -> ModelSizes:
    """Counts for `estimate` from a TrainableModel: LoRA parameters from the layers the network
    would select, weights and offloadable parts from the modules' own tensors on its device."""
    device_type = model.device.type
    targets = model.network_targets(cfg.network.train_unet, cfg.network.train_text_encoder)
    parts = model.offload_parts()
    unet = getattr(model, "unet", None)
    everything = ([unet] if unet is not None else []) + [m for mods in parts.values() for m in mods]
    return ModelSizes(model.family, lora_param_counts(targets, cfg.network), tensor_bytes(everything, device_type),
                      {kind: tensor_bytes(mods, device_type) for kind, mods in parts.items()}, unet_width_scale(unet))


def unet_width_scale(unet: nn.Module | None) -> float:
    """Base channels of the UNet (its first convolution's) against the stock 320 of SD1/SD2/SDXL:
    the activation figures are for stock widths, and a narrow test model needs far less."""
    first_conv = next((m for m in unet.modules() if isinstance(m, nn.Conv2d)), None) if unet is not None else None
    return first_conv.out_channels / STOCK_UNET_WIDTH if first_conv is not None else 1.0


def optimizer_bytes_per_param(optimizer: str) -> int:
    """fp32 weights + fp32 gradients + the optimizer's state."""
    return 4 + 4 + OPTIMIZER_STATE.get(optimizer.lower(), 8)


def training_bytes(cfg: Any, family: str, counts: dict[str, int], largest_bucket_px: int,
                   width_scale: float = 1.0) -> float:
    """What training adds on the device: activations of a batch and the LoRA's trainable state."""
    t, n = cfg.training, cfg.network
    scale = largest_bucket_px / (512 * 512) * width_scale
    per_sample = ACTIVATIONS_512.get(family, ACTIVATIONS_512["sd1"]) * scale
    params = counts.get("unet", 0) if n.train_unet else 0
    if n.train_text_encoder:
        per_sample += TE_ACTIVATIONS.get(family, TE_ACTIVATIONS["sd1"]) * max(1, cfg.dataset.max_token_length // 75)
        params += counts.get("text_encoder", 0)
    if t.gradient_checkpointing:
        per_sample *= CHECKPOINTING_FACTOR
    if t.mixed_precision == "no":
        per_sample *= 2
    return (per_sample * t.batch_size + params * optimizer_bytes_per_param(t.optimizer)) * HEADROOM


def offloaded_bytes(cfg: Any, offloadable: dict[str, int]) -> int:
    """Bytes offload_after_caching takes off the device with this config (0 when it is off)."""
    return sum(offloadable.get(kind, 0) for kind in offloaded_kinds(cfg))


def estimate_need_mb(cfg: Any, family: str, counts: dict[str, int], largest_bucket_px: int,
                     offloadable: dict[str, int] | None = None, width_scale: float = 1.0) -> float:
    """MiB the run needs beyond the loaded model: what training adds minus what offload frees.
    May be negative when offloading frees more than training adds."""
    freed = offloaded_bytes(cfg, offloadable or {})
    return (training_bytes(cfg, family, counts, largest_bucket_px, width_scale) - freed) / MIB


@dataclass
class MemoryEstimate:
    """The plan's memory figure: the model's weights on the device plus what training needs."""
    weights_mb: float
    training_mb: float         # what training adds (estimate_need_mb without offload)
    offloaded_mb: float        # weights moved to the CPU once the caches are built

    @property
    def peak_mb(self) -> float:
        """Device memory during the training steps (after the caches are built)."""
        return self.weights_mb - self.offloaded_mb + self.training_mb

    def describe(self) -> str:
        offload = f", {self.offloaded_mb:.0f} MiB of it moved to the CPU after caching" if self.offloaded_mb else ""
        return (f"about {self.peak_mb:.0f} MiB on the device during training (model weights "
                f"{self.weights_mb:.0f} MiB{offload}; training adds {self.training_mb:.0f} MiB)")


def estimate(cfg: Any, sizes: ModelSizes, largest_bucket_px: int) -> MemoryEstimate:
    training = training_bytes(cfg, sizes.family, sizes.lora_params, largest_bucket_px, sizes.width_scale) / MIB
    return MemoryEstimate(sizes.weights / MIB, training, offloaded_bytes(cfg, sizes.offloadable) / MIB)
