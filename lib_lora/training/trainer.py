"""The training loop: one loop for every backend, talking to the model only through its protocol.

train(cfg, model, hooks) plans the run, attaches the network, caches latents,
then steps through epochs; it saves a file per save-epoch, reports through
hooks, honours stop/pause/save-now, stops cleanly on NaN (keeping the last good
epoch), and always detaches the network, so the model comes back as it was.
Data-parallel runs (torchrun / accelerate launch) shard each global batch
across ranks and average gradients (training/distributed.py).
"""
from __future__ import annotations

import math
import random
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from .. import options
from ..config import TrainConfig
from ..networks import create_network
from . import distributed as dist
from . import saving
from .batches import epoch_batches
from .hooks import EpochResult, HookCaller, Progress, TrainHooks
from .latents import LatentCache
from .loop_parts import RunState, build_optimization, make_inputs, validation_loss
from .plan import TrainPlan, make_plan
from .step import TextEncoderCache, batch_captions, compute_loss
from .noise import rescale_zero_terminal_snr


@dataclass
class TrainResult:
    plan: TrainPlan
    files: list[str] = field(default_factory=list)
    final_loss: float = float("nan")
    steps: int = 0
    epochs_done: int = 0
    stopped_reason: str = ""          # '' when finished, else 'cancelled' | 'nan' | 'max_steps'
    losses: list[float] = field(default_factory=list)
    validation_losses: list[float] = field(default_factory=list)
    lrs: list[float] = field(default_factory=list)


def _as_caller(hooks) -> HookCaller:
    if hooks is None:
        return HookCaller([])
    return HookCaller(list(hooks) if isinstance(hooks, (list, tuple)) else [hooks])


def plan_run(cfg: TrainConfig, model=None) -> TrainPlan:
    n_params = sum(p.numel() for p in model.unet.parameters()) if model is not None and hasattr(model, "unet") else 0
    return make_plan(cfg, n_params)


def train(cfg: TrainConfig, model, hooks: TrainHooks | list[TrainHooks] | None = None,
          resume_dir: str | Path | None = None, sampler=None, dry_run: bool = False) -> TrainResult:
    """Run (or, with dry_run, only plan) a training run; returns what was written and why it ended."""
    options.validate(cfg)
    caller = _as_caller(hooks)
    plan = plan_run(cfg, model)
    caller.on_plan(plan)
    caller.on_status(plan.summary())
    result = TrainResult(plan)
    if dry_run:
        return result
    out_dir = Path(cfg.output.output_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    if dist.is_main():
        saving.write_run_config(cfg, out_dir)
    network = create_network(model.network_targets(cfg.network.train_unet, cfg.network.train_text_encoder),
                             cfg.network)
    network.attach()
    try:
        _run(cfg, model, network, plan, caller, result, out_dir, resume_dir, sampler)
    finally:
        network.detach()
        model.set_gradient_checkpointing(False)
    return result


def _prepare_model(cfg: TrainConfig, model, caller: HookCaller) -> torch.Tensor:
    t = cfg.training
    if t.num_threads:
        torch.set_num_threads(t.num_threads)
    if hasattr(model, "set_sdpa"):
        model.set_sdpa(t.sdpa)
    model.set_gradient_checkpointing(t.gradient_checkpointing)
    if t.mixed_precision != "no" and model.device.type == "cpu":
        caller.on_status(f"Mixed precision {t.mixed_precision} is ignored on CPU; training in fp32")
    ac = model.alphas_cumprod().float()
    return rescale_zero_terminal_snr(ac) if t.zero_terminal_snr else ac


def _run(cfg, model, network, plan, caller, result, out_dir, resume_dir, sampler) -> None:
    t, d = cfg.training, cfg.dataset
    torch.manual_seed(t.seed)
    alphas = _prepare_model(cfg, model, caller)
    network.to(model.device)
    optimizer, scheduler = build_optimization(cfg, network, plan)
    state = RunState.fresh(cfg, plan, out_dir)
    if resume_dir:
        state.restore(saving.load_state(Path(resume_dir)), network, optimizer, scheduler)
        caller.on_status(f"Resumed at epoch {state.epoch}, step {state.step}")
    dist.broadcast_parameters(network)
    cache = LatentCache(model, "off" if d.color_aug else d.cache_latents,
                        out_dir / ".cache" / "latents", batch_size=max(1, t.batch_size))
    flips = (False, True) if d.flip_aug else (False,)
    caller.on_status("Caching latents")
    cache.prepare(plan.train + plan.reg + plan.validation, flips)
    te_frozen = not (cfg.network.train_text_encoder and t.text_encoder_lr > 0)
    te_cache = TextEncoderCache(t.cache_text_encoder_outputs and te_frozen and not d.shuffle_caption
                                and d.caption_dropout_rate == 0 and d.caption_tag_dropout_rate == 0)
    generator = torch.Generator(device=model.device).manual_seed(t.seed + state.step)
    caption_rng = random.Random(t.seed + state.step)
    for epoch in range(state.epoch + 1, plan.epochs + 1):
        if _run_epoch(cfg, model, network, plan, caller, result, state, epoch, cache, te_cache,
                      alphas, optimizer, scheduler, generator, caption_rng, sampler):
            break
    result.steps, result.epochs_done = state.step, state.epoch
    if result.losses:
        result.final_loss = result.losses[-1]


def _run_epoch(cfg, model, network, plan, caller, result, state, epoch, cache, te_cache, alphas,
               optimizer, scheduler, generator, caption_rng, sampler) -> bool:
    """Returns True when the run must end (stop, NaN, max steps)."""
    t = cfg.training
    batches = epoch_batches(plan.train, plan.reg, t.batch_size, t.seed, epoch)
    skip = state.batches_done_in_epoch if epoch == state.epoch + 1 else 0
    epoch_losses: list[float] = []
    network.train()
    for i, batch in enumerate(batches):
        if i < skip:
            continue
        if caller.should_stop():
            result.stopped_reason = "cancelled"
            return True
        while caller.should_pause() and not caller.should_stop():
            time.sleep(0.2)
        inputs = make_inputs(dist.shard(batch), cfg, cache, caption_rng)
        cond = te_cache.encode(model, inputs.captions, inputs.sizes, cfg.model.clip_skip,
                               cfg.dataset.max_token_length)
        loss = compute_loss(model, cfg, inputs, cond, alphas, generator)
        if not torch.isfinite(loss):
            result.stopped_reason = "nan"
            caller.on_status(f"Loss became {loss.item()} at step {state.step + 1}: stopping. "
                             f"The last good epoch file is kept; lower the learning rate or use fp32/bf16.")
            return True
        (loss / t.gradient_accumulation_steps).backward()
        epoch_losses.append(loss.item())
        state.batches_done_in_epoch = i + 1
        if (i + 1) % t.gradient_accumulation_steps and i + 1 != len(batches):
            continue
        state.optimizer_step(network, optimizer, scheduler, t.max_grad_norm)
        _report(caller, result, state, plan, epoch, loss.item(), scheduler)
        if caller.save_requested():
            state.save_now(cfg, plan, model, network, result, caller)
        if plan.total_steps and state.step >= plan.total_steps:
            break
    state.end_epoch(cfg, plan, model, network, optimizer, scheduler, result, caller, epoch, epoch_losses,
                    validation_loss(cfg, model, plan, cache, alphas, te_cache), sampler)
    return state.step >= plan.total_steps


def _report(caller, result, state, plan, epoch, loss, scheduler) -> None:
    state.smoothed_loss = loss if math.isnan(state.smoothed_loss) else 0.9 * state.smoothed_loss + 0.1 * loss
    lr = scheduler.get_last_lr()[0]
    result.losses.append(loss)
    result.lrs.append(lr)
    elapsed = time.time() - state.started_step_time
    rate = (state.steps_this_session - 1) / elapsed if state.steps_this_session > 1 and elapsed > 0 else 0.0
    eta = (plan.total_steps - state.step) / rate if rate > 0 else float("inf")
    caller.on_progress(Progress(state.step, plan.total_steps, epoch, plan.epochs, state.smoothed_loss, lr, rate, eta))
    state.log_scalars({"loss": loss, "lr": lr})
