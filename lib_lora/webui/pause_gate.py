"""A paused run hands the WebUI back: the model, the queue and shared.state, until Resume.

What one training run holds of the WebUI is its job's hold (lib_lora/webui/host.py: the queue
lock every txt2img, img2img and X/Y/Z plot waits for, shared.state's job, the progress task of
the tab's progress bar) and its model loan (train_host.ModelLoan: the model borrowed through
model_bridge.training_session). Each can be given back and taken again, and knows what it holds,
so every exit releases exactly that.

`WebUIPauseGate` is the trainer's PauseGate inside the WebUI: at a step boundary
the loop has saved its state and taken its network out of the model; the gate
then leaves the session (the model comes back bit for bit, with options and
attention optimizations restored), releases the queue, and waits. On Resume it
takes the queue again (after the generation in progress), borrows the model again
and checks it is the one the run started on (same model object, checkpoint and
weights, by a cheap fingerprint); if the user loaded another checkpoint meanwhile
it refuses with what to do and stays paused. A run paused longer than the setting
`train_lora_pause_minutes` ends in memory (freeing what it held) and resumes later
from its saved state.
"""
from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from lib_lora.errors import LoraError
from lib_lora.train_job import stay_paused
from lib_lora.training.hooks import PauseGate, PausePoint

FINGERPRINT_TENSORS = 16          # tensors sampled for the cheap weight fingerprint
FINGERPRINT_VALUES = 4096         # values sampled per tensor
DEFAULT_PAUSE_MINUTES = 30.0


@dataclass(frozen=True)
class ModelIdentity:
    """Which model a run trains on: the object, its checkpoint and a cheap fingerprint of its weights."""
    object_id: int
    checkpoint: str               # the checkpoint file
    title: str                    # as the WebUI's checkpoint list shows it
    weights: str
    device: str                   # where the UNet is ("Unload SD checkpoint to RAM" moves it to the CPU)

    @classmethod
    def of(cls, sd_model: Any) -> "ModelIdentity":
        info = getattr(sd_model, "sd_checkpoint_info", None)
        checkpoint = str(getattr(info, "filename", None) or getattr(sd_model, "sd_model_checkpoint", "") or "")
        title = str(getattr(info, "title", None) or Path(checkpoint).name or "the checkpoint the run started on")
        device = str(next(sd_model.model.diffusion_model.parameters()).device)
        return cls(id(sd_model), checkpoint, title, weight_fingerprint(sd_model), device)

    def same_weights(self, other: "ModelIdentity") -> bool:
        return self.checkpoint == other.checkpoint and self.weights == other.weights


@torch.no_grad()
def weight_fingerprint(sd_model: torch.nn.Module) -> str:
    """A digest of a strided sample of evenly spaced tensors: loading another checkpoint (even into
    the same model object, as the WebUI does for one of the same kind) changes it; reading it costs
    a few small copies, not a pass over the weights."""
    params = [p for _, p in sd_model.named_parameters()]
    step = max(1, len(params) // FINGERPRINT_TENSORS)
    digest = hashlib.sha1()
    for param in params[::step]:
        flat = param.detach().reshape(-1)
        sample = flat[::max(1, flat.numel() // FINGERPRINT_VALUES)][:FINGERPRINT_VALUES]
        digest.update(f"{tuple(param.shape)} {param.dtype}".encode())
        digest.update(sample.to("cpu").contiguous().view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def headless_command(cfg: Any, identity: ModelIdentity) -> str:
    out = Path(cfg.output.output_dir)
    return (f"python -m lib_lora train --resume \"{out}\" --config \"{out / (cfg.output.output_name + '.toml')}\" "
            f"--set \"model.pretrained={identity.checkpoint}\"")


def wrong_model_message(cfg: Any, started: ModelIdentity, now: ModelIdentity) -> str:
    if started.same_weights(now) and started.device != now.device:
        what = (f"the WebUI holds it on {now.device} now, not on {started.device}. Load it back (pick "
                f"{started.title} at the top of the page again)")
    else:
        what = (f"the WebUI has {now.title} loaded now (or other weights under that name). Train on the model it "
                f"started on: load {started.title} again (Stable Diffusion checkpoint at the top of the page)")
    return (f"Not resumed: this run trains on {started.title}, but {what} and press Resume; "
            f"or resume it headless from its saved state: {headless_command(cfg, started)}")


def refused_message(cfg: Any, started: ModelIdentity, err: Exception) -> str:
    return (f"Not resumed: {err}. The run stays paused: press Resume when that is fixed, or resume it headless "
            f"from its saved state: {headless_command(cfg, started)}")


class WebUIPauseGate(PauseGate):
    """The trainer's pause inside the WebUI: the model and the queue are the WebUI's while paused."""

    releases_model = True

    def __init__(self, job: Any, run: Any, loan: Any, identity: ModelIdentity,
                 minutes: float = DEFAULT_PAUSE_MINUTES):
        super().__init__()
        # a Job, its TrainRun, its train_host.ModelLoan, the model it started on
        self.job, self.run, self.loan, self.identity = job, run, loan, identity
        self.minutes = minutes
        self.ended_for = ""             # why the run ended in the pause: "" | "expired" | "rebuilt"

    def hold(self, point: PausePoint) -> bool:
        from lib_lora.webui.lora_list import refresh_lora_list
        self.loan.leave()
        self.job.hold.release()
        self.job.state = "paused"        # only now: "paused" means the WebUI is free
        self.job.note(f"Paused at step {point.step}: txt2img, img2img and the X/Y/Z plot are free; "
                      f"the saved epochs are in the Lora list")
        refresh_lora_list()
        deadline = time.monotonic() + self.minutes * 60
        while True:
            while point.still_paused() and not point.stop_requested() and time.monotonic() < deadline:
                saved = self.serve_save(point)
                if saved is not None:
                    self.run.files.append(str(saved))
                    refresh_lora_list()
                self._wake.wait(min(1.0, max(0.0, deadline - time.monotonic())))
                self._wake.clear()
            if point.stop_requested():
                return False
            if point.still_paused():        # the time is up: free the run's memory, keep its state file
                self.ended_for = "expired"
                self.run.notice = (f"Paused for more than {self.minutes:g} minutes: the run let go of its "
                                   "memory. Resume continues it from the state saved at the pause")
                return False
            if self._borrow_again():
                self.job.state, self.run.notice = "running", ""
                return True
            if self.ended_for:
                return False

    def _borrow_again(self) -> bool:
        """Take the queue and the model again; False (and paused again, with the reason) when the
        model is not the one the run started on."""
        hold = self.job.hold
        hold.take()                         # on an unexpected error the run fails, and the host lets go
        if self.job.cancel_requested:       # cancelled while Resume waited for a generation: no new session
            hold.release()
            return False
        try:
            self.loan.enter()
        except LoraError as err:            # refused before the model was touched (an FP8 or low-VRAM model)
            hold.release()
            return self._stay_paused(refused_message(self.run.cfg, self.identity, err))
        now = ModelIdentity.of(self.loan.shared.sd_model)
        if now == self.identity:
            return True
        self.loan.leave()
        hold.release()
        if now.object_id != self.identity.object_id and self.identity.same_weights(now):
            self.ended_for = "rebuilt"      # the network's layers are gone; its saved state goes on
            return False
        return self._stay_paused(wrong_model_message(self.run.cfg, self.identity, now))

    def _stay_paused(self, notice: str) -> bool:
        """Paused again until the user fixes what `notice` says and resumes."""
        stay_paused(self.job, self.run, notice)
        return False
