"""training.offload_after_caching: free the VAE's (and a frozen text encoder's) VRAM for the training steps.

Once every latent is cached, the VAE is not used again until sampling; once every
caption's text-encoder output is cached (a frozen encoder and fixed captions), the
text encoder is not either. Their weights then move to the CPU for the run, come
back around each sample render (the WebUI's txt2img and the diffusers pipeline
need the whole model), and go back to exactly the device each tensor came from
when the run ends, however it ends. Tensors are moved in place (`param.data`), so
every module and Parameter object stays the one the WebUI holds; a move between
devices keeps the bits.
"""
from __future__ import annotations

import contextlib
import functools
import random
from typing import Any, Callable, Iterator

import torch
from torch import nn

from ..errors import ConfigError

OFFLOAD_DEVICE = "cpu"
PART_NAMES = {"vae": "VAE", "text_encoder": "text encoder"}


def te_output_cache_usable(cfg: Any) -> bool:
    """The text-encoder output cache works only for a frozen encoder and captions that never change."""
    t, d = cfg.training, cfg.dataset
    te_frozen = not (cfg.network.train_text_encoder and t.text_encoder_lr > 0)
    captions_fixed = not d.shuffle_caption and d.caption_dropout_rate == 0 and d.caption_tag_dropout_rate == 0
    return bool(t.cache_text_encoder_outputs and te_frozen and captions_fixed)


def offloaded_kinds(cfg: Any) -> tuple[str, ...]:
    """The parts offload_after_caching moves with this config: the VAE, and the text encoder when its
    outputs are cached (a trained, or uncached, encoder is needed every step and stays)."""
    if not cfg.training.offload_after_caching:
        return ()
    return ("vae", "text_encoder") if te_output_cache_usable(cfg) else ("vae",)


def check_offload(cfg: Any) -> None:
    """Refuse offloading when the VAE is needed every step (latents not cached)."""
    d = cfg.dataset
    if not cfg.training.offload_after_caching:
        return
    if d.cache_latents == "off":
        raise ConfigError("training.offload_after_caching", True,
                          "false, or cache the latents (dataset.cache_latents = memory or disk): without the "
                          "cache the VAE encodes images every step and must stay on the GPU")
    if d.color_aug:
        raise ConfigError("training.offload_after_caching", True,
                          "false, or turn dataset.color_aug off: colour augmentation changes the pixels every "
                          "step, so latents are not cached and the VAE must stay on the GPU")


class Offloader:
    """Moves the tensors of `modules` to `to`, remembering each one's device, and back."""

    def __init__(self, modules: list[nn.Module], to: str | torch.device | None = None):
        self.modules, self.to = modules, torch.device(to or OFFLOAD_DEVICE)
        self._moved: list[tuple[nn.Module, str, str, torch.device]] = []

    @property
    def active(self) -> bool:
        return bool(self._moved)

    @torch.no_grad()
    def offload(self) -> int:
        """Move every tensor not on `to` yet; returns the bytes moved."""
        moved = 0
        for module in self.modules:
            for sub in module.modules():
                for kind in ("_parameters", "_buffers"):
                    for name, tensor in getattr(sub, kind).items():
                        if tensor is None or tensor.device == self.to:
                            continue
                        self._moved.append((sub, kind, name, tensor.device))   # first, so restore finds it
                        _move(sub, kind, name, self.to)
                        moved += tensor.numel() * tensor.element_size()
        return moved

    @torch.no_grad()
    def restore(self) -> None:
        """Put every moved tensor back on its own device (in reverse order)."""
        while self._moved:
            sub, kind, name, device = self._moved.pop()
            _move(sub, kind, name, device)

    @contextlib.contextmanager
    def returned(self) -> Iterator[None]:
        """The parts back on their devices for the block (sampling), offloaded again after it."""
        was_active = self.active
        self.restore()
        try:
            yield
        finally:
            if was_active:
                self.offload()

    def around(self, fn: Callable | None) -> Callable | None:
        """`fn` (the per-epoch sampler) run with the parts back on their devices."""
        if fn is None:
            return None

        @functools.wraps(fn)
        def wrapped(*args, **kwargs):
            with self.returned():
                return fn(*args, **kwargs)
        return wrapped


def _move(module: nn.Module, kind: str, name: str, device: torch.device) -> None:
    tensor = getattr(module, kind)[name]
    if tensor.device == device:
        return
    if kind == "_parameters":
        tensor.data = tensor.data.to(device)       # the same Parameter object, as Module.to does
    else:
        module._buffers[name] = tensor.to(device)


def fill_text_cache(cfg: Any, model: Any, plan: Any, te_cache: Any, precision: Any) -> set[int]:
    """Encode every caption the run will use (as the loop will: same captions, sizes and autocast) into
    the text-encoder output cache; returns the chunk counts seen among training captions."""
    from .step import batch_captions

    chunks: set[int] = set()
    args = (cfg.model.clip_skip, cfg.dataset.max_token_length)
    with precision.autocast():
        for sample in plan.train + plan.reg:
            caption = batch_captions([sample], cfg, random.Random(0))[0]   # fixed captions: no draw is made
            cond = te_cache.encode(model, [caption], [(sample.bucket[1], sample.bucket[0])], *args)
            chunks.add(cond.context.shape[1])
        for sample in plan.validation:
            te_cache.encode(model, [sample.item.caption], [(sample.bucket[1], sample.bucket[0])], *args)
    return chunks


def offload_after_caching(cfg: Any, model: Any, plan: Any, te_cache: Any, precision: Any,
                          status: Callable[[str], None]) -> Offloader:
    """Fill the text cache if the encoder goes too, then move the parts off the device. Returns the
    Offloader (inactive when offloading is off or there is nothing to move); the caller restores it."""
    kinds = offloaded_kinds(cfg)
    if "text_encoder" in kinds:
        chunks = fill_text_cache(cfg, model, plan, te_cache, precision)
        if len(chunks) > 1 and cfg.training.batch_size > 1:
            # batches mixing chunk counts are re-encoded together (as the WebUI pads them): the encoder stays
            status("The text encoder stays on the GPU: captions need different numbers of 75-token chunks, "
                   "and such batches are encoded together each step")
            kinds = ("vae",)
    parts = model.offload_parts()
    offloader = Offloader([m for kind in kinds for m in parts.get(kind, [])])
    try:
        moved = offloader.offload()
    except BaseException:
        offloader.restore()
        raise
    if kinds and not moved:
        status("Nothing was moved after caching: the model is on the CPU already")
    elif moved:
        status(f"Moved the {' and the '.join(PART_NAMES[k] for k in kinds)} to the CPU after caching "
               f"({moved / 2 ** 20:.0f} MiB freed on the device); they come back for samples and at the end")
    return offloader
