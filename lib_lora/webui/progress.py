"""Training progress through the WebUI's own `shared.state`: progress bar, Interrupt and Skip.

Like the WebUI's hypernetwork trainer: job_count = total steps, job_no = the step.
textinfo is one line of plain text, because the WebUI's progress bar (requestProgress)
shows a one-line textinfo as text beside the percentage: markup would appear literally.
Interrupt stops the run after the current step (the last saved epoch is kept). Skip
has no meaning for a training run in the WebUI, so we give it a useful one: save a
LoRA file now and keep training.
The same hook also fills the run's record that the HTTP API reports, and refreshes the
built-in Lora's list after each saved epoch: the genuine WebUI v1.10.1 lists a new file
(Lora tab, /sdapi/v1/loras) only after a refresh, although a prompt finds it on demand.
"""
from __future__ import annotations

from typing import Any

from lib_lora.training.hooks import EpochResult, Progress, TrainHooks
from lib_lora.webui.grid import refresh_lora_list


class WebUIProgress(TrainHooks):
    def __init__(self, state: Any, record: Any = None):
        self.state = state          # modules.shared.state
        self.record = record        # jobs.RunRecord or None

    def on_plan(self, plan: Any) -> None:
        self.state.job_count = int(getattr(plan, "total_steps", 0)) or -1
        self.state.job_no = 0
        if self.record is not None:
            self.record.total_steps = int(getattr(plan, "total_steps", 0))
            self.record.total_epochs = int(getattr(plan, "epochs", 0))

    def on_status(self, text: str) -> None:
        self.state.textinfo = "Train LoRA: " + (text.splitlines()[0] if text else "")
        if self.record is not None:
            self.record.log(text)

    def on_progress(self, p: Progress) -> None:
        self.state.job_count = p.total_steps
        self.state.job_no = p.step
        # no ETA here: the progress bar adds its own, from job_no / job_count
        self.state.textinfo = (f"Train LoRA: step {p.step}/{p.total_steps}, epoch {p.epoch}/{p.total_epochs}, "
                               f"loss {p.loss:.4f}, {p.it_per_s:.2f} it/s")
        if self.record is not None:
            self.record.step, self.record.epoch, self.record.loss = p.step, p.epoch, p.loss
            self.record.total_steps, self.record.total_epochs = p.total_steps, p.total_epochs

    def on_epoch_end(self, result: EpochResult) -> None:
        if not result.path:
            return
        refresh_lora_list()
        if self.record is not None:
            self.record.files.append(result.path)

    def on_sample(self, epoch: int, images: list, prompts: list[str]) -> None:
        if images:
            self.state.assign_current_image(images[0])

    def _paused(self) -> bool:
        """While the run is paused, shared.state's Interrupt and Skip belong to the WebUI's own jobs."""
        return self.record is not None and self.record.state == "paused"

    def should_stop(self) -> bool:
        cancelled = self.record is not None and self.record.cancel_requested
        return cancelled or (not self._paused() and bool(self.state.interrupted))

    def should_pause(self) -> bool:
        return self.record is not None and self.record.pause_requested

    def save_requested(self) -> bool:
        if self.record is not None and self.record.save_requested:
            self.record.save_requested = False     # one press, one save
            return True
        if self._paused():
            return False
        if self.state.skipped:
            self.state.skipped = False     # one press, one save
            return True
        return False
