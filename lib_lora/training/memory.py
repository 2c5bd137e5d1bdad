"""How much device memory a run needs: the one estimator behind the plan's figure and the WebUI's VRAM check.

The model's weights are loaded before training (in the WebUI they already sit in
VRAM), so the estimate is split: what training ADDS, and the weights moved off the
device after caching (training.offload_after_caching: the VAE, and a frozen, cached
text encoder). What training adds:
- the LoRA's parameters, gradients and optimizer state (counted from the layers the
  network selects);
- the activations autograd keeps for backward. They are counted from the UNet's own
  structure: every ResNet block keeps ACT_PER_RESNET and every transformer block
  ACT_PER_TRANSFORMER elements per channel per latent pixel at its resolution. Both
  figures were fitted to measured peaks of SD1.5 at 512 px and SDXL at 1024 px
  (`python -m lib_lora bench`, bf16, rank 16, SDPA, no checkpointing; fake runs of
  train() counted by training/mem_tracker.py), so a model of another width or depth
  (the tiny test models) is estimated from what it is, not from a family constant.
  With gradient checkpointing the blocks keep only their inputs, while the parts
  around the transformer blocks that are not checkpointed (diffusers' Transformer2DModel
  norm and projections, ldm's SpatialTransformer) keep GC_PER_WRAPPER values per channel
  per latent pixel (fitted to SD1.5, whose transformers are one block deep, and SDXL,
  up to ten deep). fp32 runs keep twice the bytes;
- a trained text encoder's activations: ACT_PER_TE_OUTPUT values per token for every
  output feature of its linear layers (fitted to the tiny model's measured peaks;
  not measured at real shapes);
- the text-encoder output cache, which lives on the device.
The estimate predicts torch.cuda.max_memory_allocated during the steps; the VRAM
check adds ALLOCATOR_HEADROOM for the caching allocator's fragmentation.
Pure arithmetic over the config and counts read once from the model; nothing here
touches a device.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from torch import nn

from .offload import offloaded_kinds, te_output_cache_usable

MIB = 2 ** 20
LATENT_SCALE = 8                 # the VAE's downscale: latent pixels = image pixels / 64
ACT_PER_RESNET = 18.5            # elements kept per channel per latent pixel, per ResNet block (fitted)
ACT_PER_TRANSFORMER = 27.8       # the same per transformer block (fitted)
GC_PER_BLOCK = 0.37              # with checkpointing: values kept per channel-pixel per block (fitted)
GC_PER_WRAPPER = 12.4            # ... and per transformer wrapper (fitted)
TE_CHECKPOINTED = 0.25           # share of a trained text encoder's activations checkpointing keeps (not measured)
ALLOCATOR_HEADROOM = 1.10        # the VRAM check's margin for the CUDA caching allocator
# the stock UNets, for a model whose structure cannot be read: (ResNet, transformer block, transformer
# wrapper) channels per latent pixel (unet_volume of SD1.5 and SDXL base; SD2 has SD1's layout)
STOCK_VOLUME = {"sd1": (2940.0, 2820.0, 2820.0), "sd2": (2940.0, 2820.0, 2820.0), "sdxl": (2960.0, 6400.0, 1280.0)}
ACT_PER_TE_OUTPUT = 2.2         # values kept per token per output feature of a trained text encoder's linears
# output features of the text encoders' linear layers, for a model whose encoders cannot be read
STOCK_TE_OUTPUTS = {"sd1": 12 * 6912, "sd2": 23 * 9216, "sdxl": 12 * 6912 + 32 * 11520}
CONTEXT_DIM = {"sd1": 768, "sd2": 1024, "sdxl": 2048 + 1280}    # cached conditioning per token (SDXL: + pooled)
# bytes of optimizer state per trained parameter (weights and gradients are counted apart)
OPTIMIZER_STATE = {"adamw": 8, "adamw8bit": 2, "lion": 4, "lion8bit": 1, "prodigy": 16, "dadaptadam": 12,
                   "adafactor": 4, "sgdnesterov": 4, "adamwschedulefree": 8}


@dataclass
class ModelSizes:
    """What the estimate needs to know about a model, read once from it (see `model_sizes`).

    lora_params: trainable LoRA parameters per target kind ('unet', 'text_encoder') for the config.
    weights: bytes of the model's weights on its device, all parts together.
    offloadable: bytes of the parts offload_after_caching can move to the CPU ('vae', 'text_encoder').
    unet_volume: (ResNet, transformer block, wrapper) channels per latent pixel of the UNet (`unet_volume`).
    text_encoder_outputs: output features of the text encoders' linear layers (`linear_outputs`)."""
    family: str
    lora_params: dict[str, int] = field(default_factory=dict)
    weights: int = 0
    offloadable: dict[str, int] = field(default_factory=dict)
    unet_volume: tuple[float, float, float] | None = None
    text_encoder_outputs: int = 0

    def volume(self) -> tuple[float, float, float]:
        return self.unet_volume or STOCK_VOLUME.get(self.family, STOCK_VOLUME["sd1"])


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


def unet_volume(unet: nn.Module | None) -> tuple[float, float, float] | None:
    """(ResNet, transformer block, transformer wrapper) channels per latent pixel: the sum of channels /
    ds^2 over the UNet's ResNet blocks, its transformer blocks and the modules wrapping them
    (Transformer2DModel, SpatialTransformer), ds being the block's downscale. Walks diffusers
    (down_blocks, mid_block, up_blocks) and ldm/sgm (input_blocks, middle_block, output_blocks) UNets in
    data order; None when neither layout is found."""
    names = (("down_blocks", "mid_block", "up_blocks"), ("input_blocks", "middle_block", "output_blocks"))
    parts = next(([getattr(unet, n) for n in layout] for layout in names
                  if unet is not None and all(getattr(unet, n, None) is not None for n in layout)), None)
    if parts is None:
        return None
    resnets = transformers = wrappers = 0.0
    ds = 1
    for part in parts:
        for module in part.modules():
            kind = type(module).__name__
            if kind in ("ResnetBlock2D", "ResBlock"):
                resnets += module.out_channels / ds ** 2
            elif kind == "BasicTransformerBlock":
                transformers += module.norm1.normalized_shape[0] / ds ** 2
            elif kind in ("Transformer2DModel", "SpatialTransformer"):
                wrappers += module.in_channels / ds ** 2
            elif kind in ("Downsample2D", "Downsample"):
                ds *= 2
            elif kind in ("Upsample2D", "Upsample"):
                ds //= 2
    return (resnets, transformers, wrappers) if resnets else None


def model_sizes(cfg: Any, model: Any) -> ModelSizes:
    """Counts for `estimate` from a TrainableModel: LoRA parameters from the layers the network
    would select, weights and offloadable parts from the modules' own tensors on its device."""
    device_type = model.device.type
    targets = model.network_targets(cfg.network.train_unet, cfg.network.train_text_encoder)
    parts = model.offload_parts()
    unet = getattr(model, "unet", None)
    everything = ([unet] if unet is not None else []) + [m for mods in parts.values() for m in mods]
    return ModelSizes(model.family, lora_param_counts(targets, cfg.network), tensor_bytes(everything, device_type),
                      {kind: tensor_bytes(mods, device_type) for kind, mods in parts.items()}, unet_volume(unet),
                      linear_outputs(parts.get("text_encoder", [])))


def linear_outputs(modules: list[nn.Module]) -> int:
    """Output features of every linear layer in `modules` (nn.MultiheadAttention's packed q/k/v too)."""
    total = 0
    for module in modules:
        for layer in module.modules():
            if isinstance(layer, nn.Linear):
                total += layer.out_features
            elif isinstance(layer, nn.MultiheadAttention):
                total += 3 * layer.embed_dim
    return total


def optimizer_bytes_per_param(optimizer: str) -> int:
    """fp32 weights + fp32 gradients + the optimizer's state."""
    return 4 + 4 + OPTIMIZER_STATE.get(optimizer.lower(), 8)


def unet_activation_bytes(cfg: Any, sizes: ModelSizes, largest_bucket_px: int) -> float:
    """Activations of one batch of the UNet (see the module docstring)."""
    t = cfg.training
    resnets, transformers, wrappers = sizes.volume()
    latent_px = largest_bucket_px / LATENT_SCALE ** 2
    element = 2 if t.mixed_precision in ("fp16", "bf16") else 4
    if t.gradient_checkpointing:
        kept = GC_PER_BLOCK * (resnets + transformers) + GC_PER_WRAPPER * wrappers
    else:
        kept = ACT_PER_RESNET * resnets + ACT_PER_TRANSFORMER * transformers
    return latent_px * element * kept * t.batch_size


def text_encoder_bytes(cfg: Any, sizes: ModelSizes) -> float:
    """A trained text encoder's activations for one batch."""
    t, n = cfg.training, cfg.network
    chunks = max(1, cfg.dataset.max_token_length // 75)
    element = 2 if t.mixed_precision in ("fp16", "bf16") else 4
    if not n.train_text_encoder:
        return 0.0
    outputs = sizes.text_encoder_outputs or STOCK_TE_OUTPUTS.get(sizes.family, STOCK_TE_OUTPUTS["sd1"])
    share = TE_CHECKPOINTED if t.gradient_checkpointing else 1.0
    return 77 * chunks * ACT_PER_TE_OUTPUT * outputs * element * t.batch_size * share


def cache_bytes(cfg: Any, family: str, n_captions: int) -> float:
    """The text-encoder output cache (kept on the device; latents are cached in CPU memory)."""
    if not te_output_cache_usable(cfg):
        return 0.0
    chunks = max(1, cfg.dataset.max_token_length // 75)
    return n_captions * chunks * 77 * CONTEXT_DIM.get(family, 768) * 2


def training_bytes(cfg: Any, sizes: ModelSizes, largest_bucket_px: int, n_captions: int = 0) -> float:
    """What training adds on the device: the LoRA's state, activations of a batch, the caches."""
    n = cfg.network
    params = (sizes.lora_params.get("unet", 0) if n.train_unet else 0) + \
        (sizes.lora_params.get("text_encoder", 0) if n.train_text_encoder else 0)
    return (params * optimizer_bytes_per_param(cfg.training.optimizer) + unet_activation_bytes(
        cfg, sizes, largest_bucket_px) + text_encoder_bytes(cfg, sizes) + cache_bytes(cfg, sizes.family, n_captions))


def offloaded_bytes(cfg: Any, offloadable: dict[str, int]) -> int:
    """Bytes offload_after_caching takes off the device with this config (0 when it is off)."""
    return sum(offloadable.get(kind, 0) for kind in offloaded_kinds(cfg))


def estimate_need_mb(cfg: Any, sizes: ModelSizes, largest_bucket_px: int, n_captions: int = 0) -> float:
    """MiB the run needs beyond the loaded model: what training adds minus what offload frees.
    May be negative when offloading frees more than training adds."""
    freed = offloaded_bytes(cfg, sizes.offloadable)
    return (training_bytes(cfg, sizes, largest_bucket_px, n_captions) - freed) / MIB


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


def estimate(cfg: Any, sizes: ModelSizes, largest_bucket_px: int, n_captions: int = 0) -> MemoryEstimate:
    training = training_bytes(cfg, sizes, largest_bucket_px, n_captions) / MIB
    return MemoryEstimate(sizes.weights / MIB, training, offloaded_bytes(cfg, sizes.offloadable) / MIB)
