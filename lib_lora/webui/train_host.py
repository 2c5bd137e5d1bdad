"""The WebUI as the host of a training run: its Lora folder, its loaded model, its pause, the VRAM check.

A run is a job of the WebUI's one registry (host.webui_jobs(); lib_lora/train_job.py says what a
run is). The job's hold already waits for the WebUI's queue lock (a generation in progress
finishes first) and mirrors the run's progress into shared.state. What this host adds per
attempt (`borrow`):
- the model: model_bridge.training_session over the loaded checkpoint (`ModelLoan`);
  a resumed run must find the model it started on (pause_gate.ModelIdentity), else it stays
  paused, saying what to do;
- the VRAM check of a new run (training/vram.py): the plan it makes is the run's plan, made once;
- the pause gate that gives the model and the queue back while paused (pause_gate.py);
- `WebUIRunHooks`: the live preview, the Lora list refreshed after each saved epoch (the genuine
  WebUI v1.10.1 lists a new file in the Lora tab and /sdapi/v1/loras only after a refresh,
  although a prompt finds it on demand), and Skip, which has no meaning for a training run, as
  "save a LoRA file now and keep training".
Every epoch goes into the WebUI's Lora folder (cmd_opts.lora_dir), where the Lora tab finds it.
"""
from __future__ import annotations

import contextlib
import os
from typing import Any, Iterator

from lib_lora.errors import LoraError
from lib_lora.jobs import Job
from lib_lora.train_job import Borrowed, TrainRun, stay_paused
from lib_lora.training.hooks import EpochResult, TrainHooks


class ModelLoan:
    """The WebUI's loaded model as one run borrows it (model_bridge.training_session): given back
    and borrowed again around a pause; every method may be called whatever is borrowed."""

    def __init__(self, shared: Any, cfg: Any):
        self.shared, self.cfg = shared, cfg       # modules.shared
        self._session = None            # the entered training_session context manager
        self.model = None               # the LdmModel it yielded

    def enter(self):
        from lib_lora.webui.model_bridge import training_session
        if self._session is None:
            session = training_session(self.shared.sd_model, self.shared.opts, self.cfg)
            self.model = session.__enter__()
            self._session = session
        return self.model

    def leave(self) -> None:
        """Give the model back exactly as it was (the session's own exit)."""
        session, self._session, self.model = self._session, None, None
        if session is not None:
            session.__exit__(None, None, None)


class WebUIRunHooks(TrainHooks):
    def __init__(self, state: Any, job: Job):
        self.state, self.job = state, job          # modules.shared.state, the run's job

    def on_epoch_end(self, result: EpochResult) -> None:
        from lib_lora.webui.lora_list import refresh_lora_list
        if result.path:
            refresh_lora_list()

    def on_sample(self, epoch: int, images: list, prompts: list[str]) -> None:
        if images:
            self.state.assign_current_image(images[0])

    def save_requested(self) -> bool:
        if self.job.state == "paused" or not self.state.skipped:   # while paused, Skip is the WebUI's own
            return False
        self.state.skipped = False     # one press, one save
        return True


class WebUITrainHost:
    pause_frees_model = True

    def lora_folder(self, cfg: Any) -> str:
        from modules import shared
        folder = shared.cmd_opts.lora_dir
        try:
            os.makedirs(folder, exist_ok=True)
        except OSError as err:      # a file in its way, no permission: said before the run is queued
            raise LoraError(f"The WebUI's Lora folder cannot be made: {err.strerror or err}", where=str(folder),
                            fix="Start the WebUI with --lora-dir naming a folder you can write to") from None
        return folder

    @contextlib.contextmanager
    def borrow(self, job: Job, run: TrainRun) -> Iterator[Borrowed | None]:
        from modules import shared
        loan = ModelLoan(shared, run.cfg)
        try:
            yield self._lend(job, run, loan)
        finally:
            loan.leave()

    def _lend(self, job: Job, run: TrainRun, loan: Any) -> Borrowed | None:
        from modules import shared

        from lib_lora.webui.pause_gate import (DEFAULT_PAUSE_MINUTES, ModelIdentity, WebUIPauseGate,
                                               refused_message, wrong_model_message)
        cfg, started_on = run.cfg, run.memo
        resuming = run.resume and started_on is not None
        try:
            model = loan.enter()
        except LoraError as err:
            if not resuming:
                raise
            stay_paused(job, run, refused_message(cfg, started_on, err))
            return None
        identity = ModelIdentity.of(shared.sd_model)
        if resuming and not started_on.same_weights(identity):
            loan.leave()
            stay_paused(job, run, wrong_model_message(cfg, started_on, identity))
            return None
        run.memo = identity
        plan = None if run.resume else self._check_vram(job, cfg, model, shared.opts)
        minutes = float(getattr(shared.opts, "train_lora_pause_minutes", DEFAULT_PAUSE_MINUTES) or 0)
        gate = WebUIPauseGate(job, run, loan, identity, minutes or DEFAULT_PAUSE_MINUTES)
        return Borrowed(model, gate, plan, [WebUIRunHooks(shared.state, job)],
                        rebuilt=lambda: gate.ended_for == "rebuilt")

    @staticmethod
    def _check_vram(job: Job, cfg: Any, model: Any, opts: Any):
        """The run's plan, checked against the free VRAM (refused with settings that fit); None when off."""
        from lib_lora.training.trainer import plan_run
        from lib_lora.training import vram
        if not getattr(opts, "train_lora_check_vram", True):
            return None
        plan = plan_run(cfg, model)
        need = vram.check_run(cfg, model, plan)
        if need is not None:
            job.note(f"Estimated extra VRAM for this run: {need:.0f} MiB")
        return plan
