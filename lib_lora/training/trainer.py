"""The training loop: one loop for every backend, talking to the model only through its protocol.

train(cfg, model, hooks) plans the run, attaches the network, caches latents,
then steps through epochs; it saves a file per save-epoch, reports through
hooks, honours stop/pause/save-now, stops cleanly on NaN (keeping the last good
epoch), and always detaches the network, so the model comes back as it was.
A pause stops at an optimizer-step boundary and hands control to the host's
PauseGate (training/pause.py): the WebUI's gives the model back for the pause,
and the run then continues with the same objects, exactly as if never paused.
Data-parallel runs (torchrun / accelerate launch) shard each global batch
across ranks and average gradients (training/distributed.py).

Reproducibility: the LoRA's initial weights come from the seed, and the noise,
timestep, flip and caption draws are reseeded from (seed, epoch) at the start
of every epoch, so a run resumed at an epoch boundary takes exactly the steps
the uninterrupted run would have taken. A stop (or save-now) inside an epoch
saves the state with the epoch's draw generators, so resuming there does too.
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
from . import offload, saving
from .batches import epoch_batches
from .hooks import HookCaller, PauseGate, Progress, TrainHooks
from .latents import LatentCache
from .loop_parts import RunContext, RunState, build_optimization, end_epoch, make_inputs
from .memory import model_sizes
from .noise import rescale_zero_terminal_snr
from .optim import evaluation_weights
from .pause import pause_here
from .plan import TrainPlan, make_plan
from .precision import Precision, note as precision_note
from .step import TextEncoderCache, compute_loss, draw_noise


@dataclass
class TrainResult:
    plan: TrainPlan
    files: list[str] = field(default_factory=list)
    final_loss: float = float("nan")
    steps: int = 0
    epochs_done: int = 0
    stopped_reason: str = ""          # '' when finished, else 'cancelled' | 'nan' | 'paused' (ended while paused)
    losses: list[float] = field(default_factory=list)
    validation_losses: list[float] = field(default_factory=list)
    lrs: list[float] = field(default_factory=list)


def _as_caller(hooks) -> HookCaller:
    if hooks is None:
        return HookCaller([])
    return HookCaller(list(hooks) if isinstance(hooks, (list, tuple)) else [hooks])


def plan_run(cfg: TrainConfig, model=None) -> TrainPlan:
    """The plan, with its memory estimate when the model is known."""
    return make_plan(cfg, model_sizes(cfg, model) if model is not None else None)


def train(cfg: TrainConfig, model, hooks: TrainHooks | list[TrainHooks] | None = None,
          resume_dir: str | Path | None = None, sampler=None, dry_run: bool = False,
          pause_gate: PauseGate | None = None, plan: TrainPlan | None = None) -> TrainResult:
    """Run (or, with dry_run, only plan) a training run; returns what was written and why it ended.
    pause_gate: where a paused run waits (default: in place, holding the model)."""
    options.validate(cfg)
    offload.check_offload(cfg)
    caller = _as_caller(hooks)
    plan = plan or plan_run(cfg, model)
    caller.on_plan(plan)
    caller.on_status(plan.summary())
    result = TrainResult(plan)
    if dry_run:
        return result
    out_dir = Path(cfg.output.output_dir)
    # one run per output folder and name (CLI, tab and API all pass here); every write guarded
    with saving.claim_outputs(cfg, plan, out_dir, main_rank=dist.is_main()):
        return _train_claimed(cfg, model, caller, result, out_dir, resume_dir, sampler, pause_gate)


def _train_claimed(cfg: TrainConfig, model, caller: HookCaller, result: TrainResult, out_dir: Path,
                   resume_dir, sampler, pause_gate) -> TrainResult:
    plan = result.plan
    out_dir.mkdir(parents=True, exist_ok=True)
    if dist.is_main():
        saving.write_run_config(cfg, out_dir)
    torch.manual_seed(cfg.training.seed)  # the LoRA's initial weights come from the seed
    network = create_network(model.network_targets(cfg.network.train_unet, cfg.network.train_text_encoder),
                             cfg.network)
    network.attach()
    try:
        _run(cfg, model, network, plan, caller, result, out_dir, resume_dir, sampler, pause_gate or PauseGate())
    finally:
        network.detach()
        model.set_gradient_checkpointing(False)
    return result


def _prepare_model(cfg: TrainConfig, model, caller: HookCaller) -> torch.Tensor:
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


def _caches(cfg: TrainConfig, model, out_dir: Path, caller: HookCaller) -> tuple[LatentCache, TextEncoderCache]:
    t, d = cfg.training, cfg.dataset
    if d.color_aug and d.cache_latents != "off":
        caller.on_status("Colour augmentation changes the pixels every step: latents are encoded each step, "
                         "not cached (slower)")
    latents = LatentCache(model, "off" if d.color_aug else d.cache_latents, out_dir / ".cache" / "latents")
    use_te_cache = offload.te_output_cache_usable(cfg)
    if t.cache_text_encoder_outputs and not use_te_cache:
        caller.on_status("Text-encoder outputs are not cached: that needs a frozen text encoder "
                         "(train_text_encoder off or its LR 0) and fixed captions (no shuffle or dropout)")
    return latents, TextEncoderCache(use_te_cache)


def _run(cfg, model, network, plan, caller, result, out_dir, resume_dir, sampler, gate) -> None:
    t = cfg.training
    alphas = _prepare_model(cfg, model, caller)
    network.to(model.device)
    optimizer, scheduler = build_optimization(cfg, network, plan)
    precision = Precision(t.mixed_precision, model.device)
    state = RunState.fresh(cfg, plan, out_dir)
    if resume_dir:
        state.restore(saving.load_state(Path(resume_dir), cfg.output.output_name), network, optimizer,
                      scheduler, precision)
        caller.on_status(f"Resumed at epoch {state.epoch}, step {state.step}")
    dist.broadcast_parameters(network)
    latent_cache, te_cache = _caches(cfg, model, out_dir, caller)
    upfront = t.offload_after_caching  # the VAE leaves once every latent exists
    caller.on_status("Caching latents" + ("" if upfront else " as each image is first used (the first epoch runs "
                                                             "slower; later ones read the cache)"))
    latent_cache.prepare(plan.train + plan.reg + plan.validation, (False, True) if cfg.dataset.flip_aug else (False,),
                         encode=upfront)
    offloader = offload.offload_after_caching(cfg, model, plan, te_cache, precision, caller.on_status)
    run = RunContext(cfg, model, network, plan, caller, result, state, latent_cache, te_cache, alphas, optimizer,
                     scheduler, precision, offloader.around(sampler), torch.Generator(device=model.device),
                     random.Random(), gate, offloader)
    try:
        for epoch in range(state.epoch + 1, plan.epochs + 1):
            if _run_epoch(run, epoch):
                break
    finally:
        offloader.restore()   # every way out: the parts go back to their devices before anything else
        state.close()
    result.steps, result.epochs_done = state.step, state.epoch
    if result.losses:
        result.final_loss = result.losses[-1]


def _run_epoch(run: RunContext, epoch: int) -> bool:
    """One pass over the epoch's batches; returns True when the run must end (stop, NaN, max steps)."""
    t, state, caller = run.cfg.training, run.state, run.caller
    run.generator.manual_seed(t.seed * 1_000_003 + epoch)
    run.caption_rng.seed(t.seed * 1_000_003 + epoch)
    batches = epoch_batches(run.plan.train, run.plan.reg, t.batch_size, t.seed, epoch)
    skip, epoch_losses = state.take_resume_point(run)
    pending, micro = None, 0
    run.network.train()
    for i, batch in enumerate(batches):
        if i < skip:
            continue
        # pause and stop only between optimizer steps, where the state can be saved and resumed exactly
        if pending is None and caller.should_pause() and not caller.should_stop():
            if not pause_here(run, epoch, i, epoch_losses, lambda: _prepare_model(run.cfg, run.model, caller)):
                run.result.stopped_reason = "cancelled" if caller.should_stop() else "paused"
                return True
        if pending is None and _should_stop(caller):
            run.result.stopped_reason = "cancelled"
            if i > skip:  # the state holds the training weights (not a schedule-free optimizer's average)
                state.save_resume_point(run, i, epoch_losses)
            return True
        loss = _forward_backward(run, batch)
        pending, micro = (loss if pending is None else pending + loss), micro + 1
        if (i + 1) % t.gradient_accumulation_steps and i + 1 != len(batches):
            continue
        value = dist.mean_of(pending / micro)  # the one host sync per optimizer step
        pending, micro = None, 0
        if not math.isfinite(value):
            run.result.stopped_reason = "nan"
            caller.on_status(f"Loss became {value} at step {state.step + 1} (epoch {epoch}): stopping. "
                             f"The files of earlier epochs are kept; lower the learning rate or use fp32/bf16.")
            return True
        state.optimizer_step(run.network, run.optimizer, run.scheduler, run.precision)
        epoch_losses.append(value)
        _report(run, epoch, value)
        if caller.save_requested():
            with evaluation_weights(run.optimizer):
                state.save_now(run)
            state.save_resume_point(run, i + 1, epoch_losses)
        if state.step >= run.plan.total_steps:
            break
    end_epoch(run, epoch, epoch_losses)
    return state.step >= run.plan.total_steps


def _should_stop(caller: HookCaller) -> bool:
    """Stop requested on any rank (every rank must stop at the same step, or the others wait forever)."""
    return dist.any_rank(caller.should_stop())


def _forward_backward(run: RunContext, batch) -> torch.Tensor:
    """Loss of this rank's share of the batch, backpropagated; returns the detached loss."""
    cfg, model = run.cfg, run.model
    rows = dist.shard_rows(len(batch))
    # ranks average their gradients; weighting by the share of the batch makes that the global-batch mean
    share = len(rows) * dist.world_size() / len(batch)
    rows = rows or [0]  # a rank without a row still runs a step (weight 0) so the all-reduce meets
    inputs = make_inputs(batch, rows, cfg, run.latent_cache, run.caption_rng)
    noise, timesteps = draw_noise(inputs.latents, run.generator, cfg.training, len(run.alphas), rows, len(batch))
    with run.precision.autocast():
        cond = run.te_cache.encode(model, inputs.captions, inputs.sizes, cfg.model.clip_skip,
                                   cfg.dataset.max_token_length)
        loss = compute_loss(model, cfg, inputs, cond, run.alphas, noise, timesteps)
    run.precision.backward(loss * (share / cfg.training.gradient_accumulation_steps))
    return loss.detach()


def _report(run: RunContext, epoch: int, loss: float) -> None:
    state, plan = run.state, run.plan
    state.smoothed_loss = loss if math.isnan(state.smoothed_loss) else 0.9 * state.smoothed_loss + 0.1 * loss
    lr = run.scheduler.get_last_lr()[0]
    run.result.losses.append(loss)
    run.result.lrs.append(lr)
    elapsed = time.time() - state.started_step_time
    rate = (state.steps_this_session - 1) / elapsed if state.steps_this_session > 1 and elapsed > 0 else 0.0
    eta = (plan.total_steps - state.step) / rate if rate > 0 else float("inf")
    run.caller.on_progress(Progress(state.step, plan.total_steps, epoch, plan.epochs, state.smoothed_loss, lr, rate,
                                    eta))
    state.log_scalars({"loss": loss, "lr": lr})
