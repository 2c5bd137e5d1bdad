"""The loop's bookkeeping: counters, optimizer step, epoch end (save, samples, logs), validation.

Kept apart from trainer.py so the loop itself reads top to bottom.
"""
from __future__ import annotations

import math
import random
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..config import TrainConfig
from ..networks import build_metadata, save_network_file
from . import distributed as dist
from . import saving
from .ema import EmaWeights
from .hooks import EpochResult
from .latents import LatentCache
from .optim import build_optimizer, build_scheduler
from .step import StepInputs, batch_captions, compute_loss


def build_optimization(cfg: TrainConfig, network, plan):
    t = cfg.training
    groups = network.param_groups(t.unet_lr, t.text_encoder_lr)
    optimizer = build_optimizer(t.optimizer, groups, t.weight_decay, t.optimizer_args)
    if hasattr(optimizer, "train"):  # schedule-free optimizers keep two weight sets
        optimizer.train()
    scheduler = build_scheduler(optimizer, t.lr_scheduler, plan.total_steps, t.lr_warmup,
                                t.lr_scheduler_num_cycles, t.lr_scheduler_power)
    return optimizer, scheduler


def make_inputs(batch, cfg: TrainConfig, cache: LatentCache, rng: random.Random) -> StepInputs:
    flips = [cfg.dataset.flip_aug and rng.random() < 0.5 for _ in batch]
    latents = cache.get(batch, flips)
    weights = torch.tensor([cfg.dataset.prior_loss_weight if s.is_reg else 1.0 for s in batch])
    sizes = [(s.bucket[1], s.bucket[0]) for s in batch]
    return StepInputs(latents, batch_captions(batch, cfg, rng), sizes, weights)


@torch.no_grad()
def validation_loss(cfg: TrainConfig, model, plan, cache: LatentCache, alphas, te_cache) -> float | None:
    """Mean loss on held-out images with noise and timesteps fixed by the seed: comparable across epochs."""
    if not plan.validation:
        return None
    gen = torch.Generator().manual_seed(cfg.training.seed + 7)
    losses = []
    for s in plan.validation:
        inputs = StepInputs(cache.get([s], [False]), [s.item.caption], [(s.bucket[1], s.bucket[0])],
                            torch.ones(1))
        noise = torch.randn(inputs.latents.shape, generator=gen)
        timesteps = torch.randint(0, len(alphas), (1,), generator=gen)
        cond = te_cache.encode(model, inputs.captions, inputs.sizes, cfg.model.clip_skip,
                               cfg.dataset.max_token_length)
        losses.append(compute_loss(model, cfg, inputs, cond, alphas, None, fixed=(noise, timesteps)).item())
    return sum(losses) / len(losses)


@dataclass
class RunState:
    cfg: TrainConfig
    out_dir: Path
    step: int = 0
    epoch: int = 0                     # last finished epoch
    batches_done_in_epoch: int = 0
    smoothed_loss: float = float("nan")
    started_at: float = field(default_factory=time.time)
    started_step_time: float = field(default_factory=time.time)
    steps_this_session: int = 0
    ema: EmaWeights | None = None
    writer: object = None

    @classmethod
    def fresh(cls, cfg: TrainConfig, plan, out_dir: Path) -> "RunState":
        state = cls(cfg, out_dir)
        if cfg.output.tensorboard and dist.is_main():
            state.writer = _tensorboard_writer(out_dir / "logs")
        return state

    def restore(self, saved: dict, network, optimizer, scheduler) -> None:
        network.load_trainable_state(saved["network"])
        optimizer.load_state_dict(saved["optimizer"])
        scheduler.load_state_dict(saved["scheduler"])
        saving.set_rng_state(saved["rng"])
        c = saved["counters"]
        self.step, self.epoch, self.started_at = c["step"], c["epoch"], c.get("started_at", self.started_at)
        self.batches_done_in_epoch = 0
        if saved["extra"].get("ema") is not None:
            self.ema = EmaWeights.from_state(saved["extra"]["ema"], self.cfg.training.ema_decay)

    def optimizer_step(self, network, optimizer, scheduler, max_grad_norm: float) -> None:
        params = [p for p in network.parameters() if p.requires_grad]
        dist.average_gradients(params)
        if max_grad_norm > 0:
            torch.nn.utils.clip_grad_norm_(params, max_grad_norm)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        self.step += 1
        self.steps_this_session += 1
        if self.steps_this_session == 1:
            self.started_step_time = time.time()  # it/s from step 2 on: step 1 pays warm-up costs
        if self.cfg.training.ema:
            self.ema = self.ema or EmaWeights(network, self.cfg.training.ema_decay)
            self.ema.update(network)

    def log_scalars(self, values: dict) -> None:
        if self.writer is not None:
            for k, v in values.items():
                self.writer.add_scalar(k, v, self.step)

    def _write_file(self, path: Path, cfg, plan, model, network) -> Path:
        tensors = self.ema.state_for_save(network) if self.ema else network.trainable_state()
        meta = build_metadata(cfg.network, model.family, model.parameterization, title=cfg.output.output_name,
                              resolution=cfg.dataset.resolution,
                              training=saving.training_metadata(cfg, plan, model, self.epoch, self.step,
                                                                self.started_at))
        return save_network_file(path, tensors, meta, cfg.output.save_precision)

    def save_now(self, cfg, plan, model, network, result, caller) -> None:
        if not dist.is_main():
            return
        path = self._write_file(self.out_dir / f"{cfg.output.output_name}-step{self.step:08d}.safetensors",
                                cfg, plan, model, network)
        result.files.append(str(path))
        caller.on_status(f"Saved {path}")

    def end_epoch(self, cfg, plan, model, network, optimizer, scheduler, result, caller, epoch, losses,
                  val_loss, sampler) -> None:
        self.epoch, self.batches_done_in_epoch = epoch, 0
        out = cfg.output
        is_last = epoch >= plan.epochs or self.step >= plan.total_steps
        path = None
        if dist.is_main() and (epoch % out.save_every_n_epochs == 0 or is_last):
            path = self._write_file(saving.epoch_file(self.out_dir, out.output_name, epoch), cfg, plan, model,
                                    network)
            result.files.append(str(path))
            for old in saving.prune_old_epochs(self.out_dir, out.output_name, epoch, out.save_last_n_epochs):
                if str(old) in result.files:
                    result.files.remove(str(old))
            if out.save_state:
                extra = {"ema": self.ema.state() if self.ema else None}
                saving.save_state(self.out_dir, network, optimizer, scheduler,
                                  {"step": self.step, "epoch": epoch, "started_at": self.started_at}, extra)
        if val_loss is not None:
            result.validation_losses.append(val_loss)
            self.log_scalars({"validation_loss": val_loss})
        mean = sum(losses) / len(losses) if losses else math.nan
        self.log_scalars({"epoch_loss": mean})
        if self.writer is not None:
            self.writer.flush()
        if sampler is not None and cfg.sample.every_n_epochs and epoch % cfg.sample.every_n_epochs == 0:
            images = sampler(network, cfg.sample, epoch)
            caller.on_sample(epoch, images, list(cfg.sample.prompts))
        caller.on_epoch_end(EpochResult(epoch, str(path) if path else None, mean, val_loss))


def _tensorboard_writer(folder: Path):
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:  # tensorboard is optional inside the WebUI
        return None
    return SummaryWriter(str(folder))
