"""The loop's bookkeeping: run context, counters, optimizer step, epoch end (save, samples, logs), validation.

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
from .hooks import EpochResult, HookCaller, PauseGate
from .latents import LatentCache
from .optim import build_optimizer, build_scheduler, evaluation_weights, restore_current_lr
from .precision import Precision
from .step import StepInputs, TextEncoderCache, batch_captions, compute_loss


def build_optimization(cfg: TrainConfig, network, plan):
    t = cfg.training
    groups = network.param_groups(t.unet_lr, t.text_encoder_lr)
    optimizer = build_optimizer(t.optimizer, groups, t.weight_decay, t.optimizer_args)
    if callable(getattr(optimizer, "train", None)):  # schedule-free optimizers keep two weight sets
        optimizer.train()
    scheduler = build_scheduler(optimizer, t.lr_scheduler, plan.total_steps, t.lr_warmup,
                                t.lr_scheduler_num_cycles, t.lr_scheduler_power)
    return optimizer, scheduler


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


@torch.no_grad()
def validation_loss(run: "RunContext") -> float | None:
    """Mean loss on held-out images with noise and timesteps fixed by the seed: comparable across epochs."""
    cfg, plan, model = run.cfg, run.plan, run.model
    if not plan.validation or not dist.is_main():
        return None
    gen = torch.Generator().manual_seed(cfg.training.seed + 7)
    losses = []
    run.network.eval()
    for s in plan.validation:
        inputs = StepInputs(run.latent_cache.get([s], [False]), [s.item.caption], [(s.bucket[1], s.bucket[0])],
                            torch.ones(1))
        noise = torch.randn(inputs.latents.shape, generator=gen)
        timesteps = torch.randint(0, len(run.alphas), (1,), generator=gen)
        with run.precision.autocast():
            cond = run.te_cache.encode(model, inputs.captions, inputs.sizes, cfg.model.clip_skip,
                                       cfg.dataset.max_token_length)
            losses.append(compute_loss(model, cfg, inputs, cond, run.alphas, noise, timesteps).item())
    run.network.train()
    return sum(losses) / len(losses)


@dataclass
class RunState:
    cfg: TrainConfig
    out_dir: Path
    step: int = 0
    epoch: int = 0                     # last finished epoch
    smoothed_loss: float = float("nan")
    started_at: float = field(default_factory=time.time)
    started_step_time: float = field(default_factory=time.time)
    steps_this_session: int = 0
    ema: EmaWeights | None = None
    writer: object = None
    resume_point: dict | None = None   # a state saved inside an epoch: where and with which draws to go on

    @classmethod
    def fresh(cls, cfg: TrainConfig, plan, out_dir: Path) -> "RunState":
        state = cls(cfg, out_dir)
        if cfg.output.tensorboard and dist.is_main():
            # a folder per run name: in the WebUI every run writes into the one Lora folder
            state.writer = _tensorboard_writer(out_dir / "logs" / cfg.output.output_name)
        return state

    def restore(self, saved: dict, network, optimizer, scheduler, precision: Precision) -> None:
        network.load_trainable_state(saved["network"])
        optimizer.load_state_dict(saved["optimizer"])
        scheduler.load_state_dict(saved["scheduler"])
        restore_current_lr(optimizer, scheduler)
        saving.set_rng_state(saved["rng"])
        c = saved["counters"]
        self.step, self.epoch, self.started_at = c["step"], c["epoch"], c.get("started_at", self.started_at)
        extra = saved.get("extra", {})
        precision.load_state_dict(extra.get("grad_scaler") or {})
        if extra.get("ema") is not None:
            self.ema = EmaWeights.from_state(extra["ema"], self.cfg.training.ema_decay)
        if c.get("batch_in_epoch"):
            self.resume_point = {"batch": c["batch_in_epoch"], **extra["loop"]}

    def take_resume_point(self, run: "RunContext") -> tuple[int, list[float]]:
        """(batches to skip, losses so far) for the epoch being entered; 0 and [] unless the run resumes
        inside it, in which case the epoch's noise and caption draws continue where they stopped."""
        point, self.resume_point = self.resume_point, None
        if point is None:
            return 0, []
        run.generator.set_state(point["generator"])
        run.caption_rng.setstate(point["caption_rng"])
        return point["batch"], list(point["epoch_losses"])

    def save_resume_point(self, run: "RunContext", next_batch: int, epoch_losses: list[float],
                          force: bool = False) -> Path | None:
        """The state at an optimizer-step boundary inside an epoch (stop, save-now or pause), so that
        `--resume` continues from this very step instead of the last epoch end. A pause saves it even
        without output.save_state: a paused run must stay resumable whatever happens meanwhile."""
        if not (dist.is_main() and (run.cfg.output.save_state or force)):
            return None
        loop = {"generator": run.generator.get_state(), "caption_rng": run.caption_rng.getstate(),
                "epoch_losses": list(epoch_losses)}
        extra = {"ema": self.ema.state() if self.ema else None, "grad_scaler": run.precision.state_dict(),
                 "loop": loop}
        counters = {"step": self.step, "epoch": self.epoch, "batch_in_epoch": next_batch,
                    "started_at": self.started_at}
        path = saving.save_state(self.out_dir, run.cfg.output.output_name, run.network, run.optimizer,
                                 run.scheduler, counters, extra)
        run.caller.on_status(f"Saved the training state at step {self.step}: `train --resume {self.out_dir}` "
                             "continues from here")
        return path

    def optimizer_step(self, network, optimizer, scheduler, precision: Precision) -> None:
        params = [p for p in network.parameters() if p.requires_grad]
        dist.average_gradients(params)
        precision.step(optimizer, params, self.cfg.training.max_grad_norm)
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

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None

    def write_file(self, path: Path, run: "RunContext") -> Path:
        cfg, model = run.cfg, run.model
        tensors = self.ema.state_for_save(run.network) if self.ema else run.network.trainable_state()
        meta = build_metadata(cfg.network, model.family, model.parameterization, title=cfg.output.output_name,
                              resolution=cfg.dataset.resolution,
                              training=saving.training_metadata(cfg, run.plan, model, self.epoch, self.step,
                                                                self.started_at))
        return save_network_file(path, tensors, meta, cfg.output.save_precision)

    def save_now(self, run: "RunContext") -> Path | None:
        if not dist.is_main():
            return None
        path = self.write_file(self.out_dir / f"{run.cfg.output.output_name}-step{self.step:08d}.safetensors", run)
        if str(path) not in run.result.files:
            run.result.files.append(str(path))
        run.caller.on_status(f"Saved {path}")
        return path


@dataclass
class RunContext:
    """Everything one run's loop works with, passed as one object instead of fifteen arguments."""
    cfg: TrainConfig
    model: object
    network: torch.nn.Module
    plan: object
    caller: HookCaller
    result: object
    state: RunState
    latent_cache: LatentCache
    te_cache: TextEncoderCache
    alphas: torch.Tensor
    optimizer: torch.optim.Optimizer
    scheduler: object
    precision: Precision
    sampler: object
    generator: torch.Generator
    caption_rng: random.Random
    gate: PauseGate = field(default_factory=PauseGate)    # where a paused run waits (the host's)
    offloader: object = None                              # offload.Offloader of the parts moved off the device


def end_epoch(run: RunContext, epoch: int, losses: list[float]) -> None:
    """Save (every N epochs and the last), prune, save state, validate, log, sample, report."""
    state, out, result = run.state, run.cfg.output, run.result
    state.epoch = epoch
    is_last = epoch >= run.plan.epochs or state.step >= run.plan.total_steps
    path = None
    with evaluation_weights(run.optimizer):
        if dist.is_main() and (epoch % out.save_every_n_epochs == 0 or is_last):
            path = state.write_file(saving.epoch_file(state.out_dir, out.output_name, epoch), run)
            result.files.append(str(path))
            for old in saving.prune_old_epochs(state.out_dir, out.output_name, epoch, out.save_last_n_epochs):
                if str(old) in result.files:
                    result.files.remove(str(old))
        val_loss = validation_loss(run)
        if run.sampler is not None and run.cfg.sample.every_n_epochs and epoch % run.cfg.sample.every_n_epochs == 0:
            run.caller.on_sample(epoch, run.sampler(run.network, run.cfg.sample, epoch), list(run.cfg.sample.prompts))
    if path is not None and out.save_state:  # state holds the training weights, outside evaluation mode
        extra = {"ema": state.ema.state() if state.ema else None, "grad_scaler": run.precision.state_dict()}
        saving.save_state(state.out_dir, out.output_name, run.network, run.optimizer, run.scheduler,
                          {"step": state.step, "epoch": epoch, "started_at": state.started_at}, extra)
    if val_loss is not None:
        result.validation_losses.append(val_loss)
        state.log_scalars({"validation_loss": val_loss})
    mean = sum(losses) / len(losses) if losses else math.nan
    if dist.is_main():
        row = {"epoch": epoch, "step": state.step, "file": path and str(path), "mean_loss": mean,
               "validation_loss": val_loss}
        saving.record_epoch(state.out_dir, out.output_name, row)
    state.log_scalars({"epoch_loss": mean})
    if state.writer is not None:
        state.writer.flush()
    run.caller.on_epoch_end(EpochResult(epoch, str(path) if path else None, mean, val_loss))


def _tensorboard_writer(folder: Path):
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:  # tensorboard is optional inside the WebUI
        return None
    return SummaryWriter(str(folder))
