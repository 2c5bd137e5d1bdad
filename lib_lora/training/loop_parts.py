"""The parts a run is set up with: the model made ready, the optimizer and schedule, the caches,
the log writer, and each step's inputs. Kept apart from run.py so the Run class reads as the loop.
"""
from __future__ import annotations

import random
from pathlib import Path
from typing import Callable

import torch

from ..config import TrainConfig
from . import offload
from .hooks import HookCaller
from .latents import LatentCache
from .noise import rescale_zero_terminal_snr
from .optim import build_optimizer, build_scheduler
from .precision import note as precision_note
from .step import StepInputs, TextEncoderCache, batch_captions


def prepare_model(cfg: TrainConfig, model, caller: HookCaller) -> torch.Tensor:
    """Apply the run's model settings (threads, attention, gradient checkpointing); returns the noise
    schedule's alphas_cumprod. Called again when a paused run takes the model back."""
    t = cfg.training
    if t.num_threads:
        torch.set_num_threads(t.num_threads)
    if hasattr(model, "set_attention"):
        note = model.set_attention(t.sdpa)
        if note:
            caller.on_status(note)
    model.set_gradient_checkpointing(t.gradient_checkpointing)
    mixed_precision_note = precision_note(t.mixed_precision, model.device)   # fp16 on CPU trains in fp32
    if mixed_precision_note:
        caller.on_status(mixed_precision_note)
    ac = model.alphas_cumprod().float()
    return rescale_zero_terminal_snr(ac) if t.zero_terminal_snr else ac


def build_optimization(cfg: TrainConfig, network, total_steps: int):
    """(optimizer, scheduler) over the network's parameter groups, the schedule spanning the run."""
    t = cfg.training
    groups = network.param_groups(t.unet_lr, t.text_encoder_lr)
    optimizer = build_optimizer(t.optimizer, groups, t.weight_decay, t.optimizer_args)
    if callable(getattr(optimizer, "train", None)):  # schedule-free optimizers keep two weight sets
        optimizer.train()
    scheduler = build_scheduler(optimizer, t.lr_scheduler, total_steps, t.lr_warmup,
                                t.lr_scheduler_num_cycles, t.lr_scheduler_power)
    return optimizer, scheduler


def make_caches(cfg: TrainConfig, model, out_dir: Path,
                status: Callable[[str], None]) -> tuple[LatentCache, TextEncoderCache]:
    t, d = cfg.training, cfg.dataset
    if d.color_aug and d.cache_latents != "off":
        status("Colour augmentation changes the pixels every step: latents are encoded each step, not cached "
               "(slower)")
    latents = LatentCache(model, "off" if d.color_aug else d.cache_latents, out_dir / ".cache" / "latents")
    use_te_cache = offload.te_output_cache_usable(cfg)
    if t.cache_text_encoder_outputs and not use_te_cache:
        status("Text-encoder outputs are not cached: that needs a frozen text encoder "
               "(train_text_encoder off or its LR 0) and fixed captions (no shuffle or dropout)")
    return latents, TextEncoderCache(use_te_cache)


def make_inputs(batch, rows: list[int], cfg: TrainConfig, cache: LatentCache, rng: random.Random) -> StepInputs:
    """The step's inputs for `rows` of the batch. Flips, colour shifts and captions are drawn for the
    whole batch first, so every rank of a data-parallel run consumes the random stream as one process does."""
    d = cfg.dataset
    flips = [d.flip_aug and rng.random() < 0.5 for _ in batch]
    hue_shifts = [rng.randint(-8, 8) if d.color_aug else 0 for _ in batch]
    captions = batch_captions(batch, cfg, rng)
    mine = [batch[i] for i in rows]
    latents = cache.get(mine, [flips[i] for i in rows], [hue_shifts[i] for i in rows])
    weights = torch.tensor([d.prior_loss_weight if s.is_reg else 1.0 for s in mine])
    sizes = [(s.bucket[1], s.bucket[0]) for s in mine]
    return StepInputs(latents, [captions[i] for i in rows], sizes, weights)


def tensorboard_writer(folder: Path):
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:  # tensorboard is optional inside the WebUI
        return None
    return SummaryWriter(str(folder))
