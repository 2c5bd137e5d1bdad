"""One training run as one object: `Run` owns the run's parts (network, optimizer, schedule, caches),
its counters, the optimizer step, the end of each epoch (file, state, validation, samples), Save now
and the resume point, so no part reaches back into another for them.

Reproducibility: the noise, timestep, flip and caption draws are reseeded from (seed, epoch) at the
start of every epoch, so a run resumed at an epoch boundary takes exactly the steps the uninterrupted
run would have taken. A stop, pause or Save now inside an epoch saves the state with the epoch's draw
generators and the next batch (the resume point), so resuming there does too.
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
from ..safe_paths import remove
from . import distributed as dist
from . import offload, saving
from .batches import epoch_batches
from .ema import EmaWeights
from .hooks import EpochResult, HookCaller, PauseGate, Progress
from .loop_parts import build_optimization, make_caches, make_inputs, prepare_model, tensorboard_writer
from .optim import evaluation_weights, restore_current_lr
from .pause import pause_here
from .plan import TrainPlan
from .precision import Precision
from .step import StepInputs, compute_loss, draw_noise


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


class Run:
    """A run with its network attached to the model: construct it (it restores `resume_dir`'s state and
    caches the latents), then `fit()`. The caller attaches and detaches the network."""

    def __init__(self, cfg: TrainConfig, model, network, plan: TrainPlan, caller: HookCaller, out_dir: Path, *,
                 resume_dir: str | Path | None = None, sampler=None, gate: PauseGate | None = None):
        self.cfg, self.model, self.network, self.plan, self.caller = cfg, model, network, plan, caller
        self.out_dir, self.name = out_dir, cfg.output.output_name
        self.gate = gate or PauseGate()           # where a paused run waits (the host's)
        self.result = TrainResult(plan)
        self.step = 0                             # optimizer steps done
        self.epoch = 0                            # last finished epoch
        self.smoothed_loss = math.nan
        self.started_at = self.started_step_time = time.time()
        self.steps_this_session = 0               # since start, resume or pause: the it/s measure
        self.ema: EmaWeights | None = None
        self.resume_point: dict | None = None     # a state saved inside an epoch: where and with which draws
        self.pause_only_state: Path | None = None  # the state file a pause wrote though save_state is off
        self.generator = torch.Generator(device=model.device)    # noise and timesteps, reseeded each epoch
        self.caption_rng = random.Random()                      # flips, colours and captions, likewise
        self.alphas = prepare_model(cfg, model, caller)
        network.to(model.device)
        self.optimizer, self.scheduler = build_optimization(cfg, network, plan.total_steps)
        self.precision = Precision(cfg.training.mixed_precision, model.device)
        # a log folder per run name: in the WebUI every run writes into the one Lora folder
        self.writer = (tensorboard_writer(out_dir / "logs" / self.name)
                       if cfg.output.tensorboard and dist.is_main() else None)
        if resume_dir:
            saved = saving.load_state(Path(resume_dir), self.name)
            self.restore(saved)
            self.adopt_pause_only_state(saved, Path(resume_dir))
        dist.broadcast_parameters(network)
        self.latent_cache, self.te_cache = make_caches(cfg, model, out_dir, caller.on_status)
        self._cache_latents()
        self.offloader = offload.offload_after_caching(cfg, model, plan, self.te_cache, self.precision,
                                                       caller.on_status)
        self.sampler = self.offloader.around(sampler)    # samples render with the parts back on the device

    def _cache_latents(self) -> None:
        upfront = self.cfg.training.offload_after_caching  # the VAE leaves once every latent exists
        self.caller.on_status("Caching latents" + ("" if upfront else " as each image is first used (the first "
                                                                      "epoch runs slower; later ones read the cache)"))
        plan = self.plan
        self.latent_cache.prepare(plan.train + plan.reg + plan.validation,
                                  (False, True) if self.cfg.dataset.flip_aug else (False,), encode=upfront)

    def prepare_model(self) -> None:
        """The run's model settings again, after a pause gave the model back."""
        prepare_model(self.cfg, self.model, self.caller)

    # -- the loop -------------------------------------------------------------------

    def fit(self) -> TrainResult:
        try:
            for epoch in range(self.epoch + 1, self.plan.epochs + 1):
                if self.run_epoch(epoch):
                    break
        finally:
            self.offloader.restore()   # every way out: the parts go back to their devices before anything else
            self.close()
            self.remove_pause_only_state()
        self.result.steps, self.result.epochs_done = self.step, self.epoch
        if self.result.losses:
            self.result.final_loss = self.result.losses[-1]
        return self.result

    def run_epoch(self, epoch: int) -> bool:
        """One pass over the epoch's batches; True when the run must end (stop, pause end, NaN, max steps)."""
        t, caller = self.cfg.training, self.caller
        self.generator.manual_seed(t.seed * 1_000_003 + epoch)
        self.caption_rng.seed(t.seed * 1_000_003 + epoch)
        batches = epoch_batches(self.plan.train, self.plan.reg, t.batch_size, t.seed, epoch)
        skip, epoch_losses = self.take_resume_point()
        pending, micro = None, 0
        self.network.train()
        for i, batch in enumerate(batches):
            if i < skip:
                continue
            # pause and stop only between optimizer steps, where the state can be saved and resumed exactly
            if pending is None and caller.should_pause() and not caller.should_stop():
                if not pause_here(self, epoch, i, epoch_losses):
                    self.result.stopped_reason = "cancelled" if caller.should_stop() else "paused"
                    return True
            if pending is None and dist.any_rank(caller.should_stop()):   # every rank stops at the same step
                self.result.stopped_reason = "cancelled"
                if i > skip:  # the state holds the training weights (not a schedule-free optimizer's average)
                    self.save_resume_point(i, epoch_losses)
                return True
            loss = self.forward_backward(batch)
            pending, micro = (loss if pending is None else pending + loss), micro + 1
            if (i + 1) % t.gradient_accumulation_steps and i + 1 != len(batches):
                continue
            value = dist.mean_of(pending / micro)  # the one host sync per optimizer step
            pending, micro = None, 0
            if not math.isfinite(value):
                self.result.stopped_reason = "nan"
                caller.on_status(f"Loss became {value} at step {self.step + 1} (epoch {epoch}): stopping. The "
                                 "files of earlier epochs are kept; lower the learning rate or use fp32/bf16.")
                return True
            self.optimizer_step()
            epoch_losses.append(value)
            self.report(epoch, value)
            if caller.save_requested():
                self.save_now()
                self.save_resume_point(i + 1, epoch_losses)
            if self.step >= self.plan.total_steps:
                break
        self.end_epoch(epoch, epoch_losses)
        return self.step >= self.plan.total_steps

    def forward_backward(self, batch) -> torch.Tensor:
        """Loss of this rank's share of the batch, backpropagated; returns the detached loss."""
        cfg, model = self.cfg, self.model
        rows = dist.shard_rows(len(batch))
        # ranks average their gradients; weighting by the share of the batch makes that the global-batch mean
        share = len(rows) * dist.world_size() / len(batch)
        rows = rows or [0]  # a rank without a row still runs a step (weight 0) so the all-reduce meets
        inputs = make_inputs(batch, rows, cfg, self.latent_cache, self.caption_rng)
        noise, timesteps = draw_noise(inputs.latents, self.generator, cfg.training, len(self.alphas), rows,
                                      len(batch))
        with self.precision.autocast():
            cond = self.te_cache.encode(model, inputs.captions, inputs.sizes, cfg.model.clip_skip,
                                        cfg.dataset.max_token_length)
            loss = compute_loss(model, cfg, inputs, cond, self.alphas, noise, timesteps)
        self.precision.backward(loss * (share / cfg.training.gradient_accumulation_steps))
        return loss.detach()

    def optimizer_step(self) -> None:
        params = [p for p in self.network.parameters() if p.requires_grad]
        dist.average_gradients(params)
        self.precision.step(self.optimizer, params, self.cfg.training.max_grad_norm)
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.step += 1
        self.steps_this_session += 1
        if self.steps_this_session == 1:
            self.started_step_time = time.time()  # it/s from step 2 on: step 1 pays warm-up costs
        if self.cfg.training.ema:
            self.ema = self.ema or EmaWeights(self.network, self.cfg.training.ema_decay)
            self.ema.update(self.network)

    def report(self, epoch: int, loss: float) -> None:
        plan = self.plan
        self.smoothed_loss = loss if math.isnan(self.smoothed_loss) else 0.9 * self.smoothed_loss + 0.1 * loss
        lr = self.scheduler.get_last_lr()[0]
        self.result.losses.append(loss)
        self.result.lrs.append(lr)
        elapsed = time.time() - self.started_step_time
        rate = (self.steps_this_session - 1) / elapsed if self.steps_this_session > 1 and elapsed > 0 else 0.0
        eta = (plan.total_steps - self.step) / rate if rate > 0 else float("inf")
        self.caller.on_progress(Progress(self.step, plan.total_steps, epoch, plan.epochs, self.smoothed_loss, lr,
                                         rate, eta))
        self.log_scalars({"loss": loss, "lr": lr})

    # -- the end of an epoch -------------------------------------------------------------

    def end_epoch(self, epoch: int, losses: list[float]) -> None:
        """Save (every N epochs and the last), prune, save the state, validate, sample, log, report."""
        out = self.cfg.output
        self.epoch = epoch
        is_last = epoch >= self.plan.epochs or self.step >= self.plan.total_steps
        path = None
        with evaluation_weights(self.optimizer):
            if dist.is_main() and (epoch % out.save_every_n_epochs == 0 or is_last):
                path = self._save_epoch_file(epoch)
            val_loss = self.validation_loss()
            sample = self.cfg.sample
            if self.sampler is not None and sample.every_n_epochs and epoch % sample.every_n_epochs == 0:
                self.caller.on_sample(epoch, self.sampler(self.network, sample, epoch), list(sample.prompts))
        if path is not None and out.save_state:  # the state holds the training weights, outside evaluation mode
            self.save_state()
        if val_loss is not None:
            self.result.validation_losses.append(val_loss)
            self.log_scalars({"validation_loss": val_loss})
        mean = sum(losses) / len(losses) if losses else math.nan
        if dist.is_main():
            saving.record_epoch(self.out_dir, self.name, {"epoch": epoch, "step": self.step, "file": path and str(path),
                                                          "mean_loss": mean, "validation_loss": val_loss})
        self.log_scalars({"epoch_loss": mean})
        if self.writer is not None:
            self.writer.flush()
        self.caller.on_epoch_end(EpochResult(epoch, str(path) if path else None, mean, val_loss))

    def _save_epoch_file(self, epoch: int) -> Path:
        files = self.result.files
        path = self.write_file(saving.epoch_file(self.out_dir, self.name, epoch))
        files.append(str(path))
        for old in saving.prune_old_epochs(self.out_dir, self.name, epoch, self.cfg.output.save_last_n_epochs):
            if str(old) in files:
                files.remove(str(old))
        return path

    @torch.no_grad()
    def validation_loss(self) -> float | None:
        """Mean loss on held-out images with noise and timesteps fixed by the seed: comparable across epochs."""
        cfg, model = self.cfg, self.model
        if not self.plan.validation or not dist.is_main():
            return None
        gen = torch.Generator().manual_seed(cfg.training.seed + 7)
        losses = []
        self.network.eval()
        for s in self.plan.validation:
            inputs = StepInputs(self.latent_cache.get([s], [False]), [s.item.caption], [(s.bucket[1], s.bucket[0])],
                                torch.ones(1))
            noise = torch.randn(inputs.latents.shape, generator=gen)
            timesteps = torch.randint(0, len(self.alphas), (1,), generator=gen)
            with self.precision.autocast():
                cond = self.te_cache.encode(model, inputs.captions, inputs.sizes, cfg.model.clip_skip,
                                            cfg.dataset.max_token_length)
                losses.append(compute_loss(model, cfg, inputs, cond, self.alphas, noise, timesteps).item())
        self.network.train()
        return sum(losses) / len(losses)

    # -- files and state ------------------------------------------------------------------

    def write_file(self, path: Path) -> Path:
        """The LoRA file of the weights now (the EMA's when on) with sd-scripts' metadata."""
        cfg, model = self.cfg, self.model
        tensors = self.ema.state_for_save(self.network) if self.ema else self.network.trainable_state()
        meta = build_metadata(cfg.network, model.family, model.parameterization, title=self.name,
                              resolution=cfg.dataset.resolution,
                              training=saving.training_metadata(cfg, self.plan, model, self.epoch, self.step,
                                                                self.started_at))
        return save_network_file(path, tensors, meta, cfg.output.save_precision)

    def save_now(self) -> Path | None:
        """Save now: the weights of this step as `<name>-step00000042.safetensors` (averaged weights for
        a schedule-free optimizer)."""
        if not dist.is_main():
            return None
        with evaluation_weights(self.optimizer):
            path = self.write_file(self.out_dir / f"{self.name}-step{self.step:08d}.safetensors")
        if str(path) not in self.result.files:
            self.result.files.append(str(path))
        self.caller.on_status(f"Saved {path}")
        return path

    def save_state(self, next_batch: int = 0, epoch_losses: list[float] | None = None,
                   pause_only: bool = False) -> Path:
        """Everything to continue the run; with `next_batch`, from that batch of the epoch under way.
        `pause_only`: written for a pause though the user did not ask for state (see remove_pause_only_state)."""
        extra = {"ema": self.ema.state() if self.ema else None, "grad_scaler": self.precision.state_dict(),
                 "pause_only": pause_only}
        counters = {"step": self.step, "epoch": self.epoch, "started_at": self.started_at}
        if next_batch:
            counters["batch_in_epoch"] = next_batch
            extra["loop"] = {"generator": self.generator.get_state(), "caption_rng": self.caption_rng.getstate(),
                             "epoch_losses": list(epoch_losses or [])}
        return saving.save_state(self.out_dir, self.name, self.network, self.optimizer, self.scheduler, counters,
                                 extra)

    def save_resume_point(self, next_batch: int, epoch_losses: list[float], force: bool = False) -> Path | None:
        """The state at an optimizer-step boundary inside an epoch (stop, save-now or pause), so that
        `--resume` continues from this very step instead of the last epoch end. A pause saves it even
        without output.save_state: a paused run must stay resumable whatever happens meanwhile."""
        if not (dist.is_main() and (self.cfg.output.save_state or force)):
            return None
        pause_only = not self.cfg.output.save_state
        path = self.save_state(next_batch, epoch_losses, pause_only=pause_only)
        if pause_only:
            self.pause_only_state = path
        self.caller.on_status(f"Saved the training state at step {self.step}: `train --resume {self.out_dir}` "
                              "continues from here")
        return path

    def adopt_pause_only_state(self, saved: dict, resume_dir: Path) -> None:
        """A run resumed from the state file a pause of this very run wrote (its own path, marked pause-only,
        save_state still off) is that run going on: the file is its own to remove when it ends."""
        path = saving.state_file(resume_dir, self.name)
        if (saved.get("extra", {}).get("pause_only") and not self.cfg.output.save_state
                and path.resolve() == saving.state_file(self.out_dir, self.name).resolve()):
            self.pause_only_state = path

    def remove_pause_only_state(self) -> None:
        """The user did not ask for a state file: the one a pause wrote goes when the run ends, unless it
        ended paused (it resumes from that file). Only that exact file, which this run wrote."""
        path, self.pause_only_state = self.pause_only_state, None
        if path is None or self.result.stopped_reason == "paused":
            return
        try:
            remove(path)
        except OSError as e:  # a leftover file must not hide how the run ended
            self.caller.on_status(f"Could not remove the pause's state file {path}: {e}")

    def restore(self, saved: dict) -> None:
        """Continue from a state file (saving.load_state): weights, optimizer, schedule, RNG, counters."""
        self.network.load_trainable_state(saved["network"])
        self.optimizer.load_state_dict(saved["optimizer"])
        self.scheduler.load_state_dict(saved["scheduler"])
        restore_current_lr(self.optimizer, self.scheduler)
        saving.set_rng_state(saved["rng"])
        c, extra = saved["counters"], saved.get("extra", {})
        self.step, self.epoch, self.started_at = c["step"], c["epoch"], c.get("started_at", self.started_at)
        self.precision.load_state_dict(extra.get("grad_scaler") or {})
        if extra.get("ema") is not None:
            self.ema = EmaWeights.from_state(extra["ema"], self.cfg.training.ema_decay)
        if c.get("batch_in_epoch"):
            self.resume_point = {"batch": c["batch_in_epoch"], **extra["loop"]}
        self.caller.on_status(f"Resumed at epoch {self.epoch}, step {self.step}")

    def take_resume_point(self) -> tuple[int, list[float]]:
        """(batches to skip, losses so far) for the epoch being entered; 0 and [] unless the run resumes
        inside it, in which case the epoch's noise and caption draws continue where they stopped."""
        point, self.resume_point = self.resume_point, None
        if point is None:
            return 0, []
        self.generator.set_state(point["generator"])
        self.caption_rng.setstate(point["caption_rng"])
        return point["batch"], list(point["epoch_losses"])

    def log_scalars(self, values: dict) -> None:
        if self.writer is not None:
            for k, v in values.items():
                self.writer.add_scalar(k, v, self.step)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None
