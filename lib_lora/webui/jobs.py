"""Training runs as jobs inside the WebUI: queued behind txt2img, reported via shared.state.

A run waits for the WebUI's queue lock (so a generation in progress finishes
first, and generations started meanwhile wait), borrows the loaded model through
model_bridge.training_session, refuses a run whose VRAM need exceeds what is free
(vram.py, naming settings that fit), trains with lib_lora.training.train, and writes
each epoch into the WebUI's Lora folder (cmd_opts.lora_dir), where the Lora tab
finds it at once. Runs go on a background thread so the UI and the HTTP API stay
responsive; `run_sync` runs in the caller's thread (tests, Gradio handlers).

Pause hands the WebUI back (pause_gate.py): at the next optimizer step the run
saves its state, gives the model back exactly and releases the queue, so txt2img,
img2img and the X/Y/Z plot run while it is paused; Resume takes them again and
continues with the same network, optimizer and random streams. A run that ended
while paused (paused too long, or the WebUI rebuilt the model) resumes from the
state it saved at the pause.
"""
from __future__ import annotations

import itertools
import logging
import os
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

from lib_lora.errors import LoraError

log = logging.getLogger(__name__)
STATES = ("queued", "running", "paused", "finished", "cancelled", "failed")


@dataclass
class RunRecord:
    run_id: str
    output_name: str
    state: str = "queued"
    step: int = 0
    total_steps: int = 0
    epoch: int = 0
    total_epochs: int = 0
    loss: float | None = None
    files: list[str] = field(default_factory=list)
    error: str = ""
    stopped_reason: str = ""
    created: float = field(default_factory=time.time)
    cancel_requested: bool = False
    pause_requested: bool = False
    save_requested: bool = False       # "Save now": a LoRA file of the current step (also while paused)
    notice: str = ""                   # what the user should know now (why a resume was refused)
    messages: list[str] = field(default_factory=list)

    def log(self, text: str) -> None:
        self.messages = (self.messages + [text])[-50:]

    def as_dict(self) -> dict[str, Any]:
        keys = ("run_id", "output_name", "state", "step", "total_steps", "epoch", "total_epochs", "loss",
                "files", "error", "stopped_reason", "created", "pause_requested", "notice")
        return {**{k: getattr(self, k) for k in keys}, "paused": self.state == "paused"}


@dataclass
class RunSpec:
    """What a run was started with, kept so that it can resume from its saved state later."""
    cfg: Any
    hooks: list = field(default_factory=list)      # more TrainHooks (the tab's history)
    sampler: Callable[[Any], Any] | None = None    # model -> per-epoch sample renderer
    task_id: str = ""                              # the WebUI progress task of the tab's progress bar
    identity: Any = None                           # pause_gate.ModelIdentity of the model it trains on
    gate: Any = None                               # the live pause gate while the loop runs


class RunManager:
    """Keeps the runs of this WebUI session; one trains at a time (the queue lock serialises)."""

    def __init__(self):
        self.runs: dict[str, RunRecord] = {}
        self.specs: dict[str, RunSpec] = {}
        self._ids = itertools.count(1)
        self._lock = threading.Lock()

    def new_record(self, cfg: Any) -> RunRecord:
        with self._lock:
            run_id = f"run{next(self._ids)}-{int(time.time())}"
            record = RunRecord(run_id, cfg.output.output_name)
            self.runs[run_id] = record
            self.specs[run_id] = RunSpec(cfg)
        return record

    def start(self, cfg: Any, background: bool = True, *, extra_hooks: Sequence[Any] = (),
              sampler: Callable[[Any], Any] | None = None, task_id: str = "") -> RunRecord:
        """Queue a run. extra_hooks: more TrainHooks (the tab's loss history); sampler: a function
        of the borrowed model returning the per-epoch sample renderer (the model exists only inside
        the run); task_id: the WebUI progress-API task, so its progress bar follows the run."""
        record = self.new_record(cfg)
        self.specs[record.run_id] = RunSpec(cfg, list(extra_hooks), sampler, task_id)
        if task_id:
            from modules import progress
            progress.add_task_to_queue(task_id)
        self._launch(record, background, resume=False)
        return record

    def _launch(self, record: RunRecord, background: bool, resume: bool) -> None:
        cfg = self.specs[record.run_id].cfg
        if background:
            threading.Thread(target=self.run_sync, args=(cfg, record, resume), name=f"train-lora-{record.run_id}",
                             daemon=True).start()
        else:
            self.run_sync(cfg, record, resume)

    def cancel(self, run_id: str) -> RunRecord:
        record = self.get(run_id)
        if record.state in ("queued", "running", "paused"):
            record.cancel_requested = True
            gate = self.specs[run_id].gate
            if record.state == "running" and not record.pause_requested:   # stops a sample render too
                from modules import shared
                shared.state.interrupt()
            elif record.state == "paused" and gate is None:   # it ended in memory: nothing to stop
                record.state, record.pause_requested = "cancelled", False
            if gate is not None:
                gate.wake()
        return record

    def pause(self, run_id: str) -> RunRecord:
        """Pause after the current optimizer step: the WebUI is free until resume. A queued run
        prepares (borrows the model, caches latents) and pauses before its first step."""
        record = self.get(run_id)
        if record.state not in ("queued", "running", "paused"):
            raise LoraError(f"The run {run_id} is {record.state}, so it cannot pause", where="run id",
                            fix="Only a queued or running run can pause; start a new run")
        record.pause_requested = True
        return record

    def resume(self, run_id: str, background: bool = True) -> RunRecord:
        """Go on from the pause: in memory when the run still holds its state, else from its state file."""
        record = self.get(run_id)
        if record.state not in ("queued", "running", "paused"):
            raise LoraError(f"The run {run_id} is {record.state}, so there is nothing to resume", where="run id",
                            fix="Start a new run (or resume a stopped one headless with `train --resume`)")
        record.pause_requested, record.notice = False, ""
        spec = self.specs[run_id]
        if spec.gate is not None:
            spec.gate.wake()
        elif record.state == "paused":
            record.state = "queued"
            self._launch(record, background, resume=True)
        return record

    def save_now(self, run_id: str) -> RunRecord:
        """Write a LoRA file of the current step: after it, or at once while paused."""
        record = self.get(run_id)
        if record.state not in ("running", "paused") or self.specs[run_id].gate is None:
            raise LoraError(f"The run {run_id} is {record.state}: there are no weights in training to save",
                            where="run id", fix="Save now works while a run trains or is paused")
        record.save_requested = True
        self.specs[run_id].gate.wake()
        return record

    def get(self, run_id: str) -> RunRecord:
        if run_id not in self.runs:
            raise LoraError(f"There is no training run {run_id!r}", where="run id",
                            fix="List the runs with GET /train_lora/v1/runs")
        return self.runs[run_id]

    def run_sync(self, cfg: Any, record: RunRecord, resume: bool = False) -> RunRecord:
        from lib_lora.webui.pause_gate import WebUIHold
        spec = self.specs.setdefault(record.run_id, RunSpec(cfg))
        hold = WebUIHold(f"train_lora:{record.run_id}", spec.task_id)
        record.log("Waiting for the WebUI to finish the current generation")
        try:
            hold.take_queue()
            if record.cancel_requested:
                record.state = "cancelled"
                return record
            record.state = "running"
            self._train(cfg, record, spec, hold, resume)
        except LoraError as err:
            record.state, record.error = "failed", str(err)
        except Exception as err:   # a broken run must never take the WebUI down
            log.exception("Train LoRA run %s failed", record.run_id)
            record.state, record.error = "failed", f"{type(err).__name__}: {err}"
        finally:
            spec.gate, spec.task_id = None, ""    # the progress task is finished with the first attempt
            hold.finish()
        return record

    def _train(self, cfg: Any, record: RunRecord, spec: RunSpec, hold: Any, resume: bool) -> None:
        from modules import shared

        from lib_lora.training import train
        from lib_lora.webui.pause_gate import DEFAULT_PAUSE_MINUTES, WebUIPauseGate
        from lib_lora.webui.progress import WebUIProgress
        cfg.output.output_dir = shared.cmd_opts.lora_dir
        os.makedirs(cfg.output.output_dir, exist_ok=True)
        minutes = float(getattr(shared.opts, "train_lora_pause_minutes", DEFAULT_PAUSE_MINUTES) or 0)
        files = list(record.files)
        while True:
            model = self._borrow(cfg, record, spec, hold, resume)
            if model is None:
                return
            sampler = spec.sampler(model) if spec.sampler is not None else None
            spec.gate = WebUIPauseGate(hold, record, cfg, spec.identity, minutes or DEFAULT_PAUSE_MINUTES)
            result = train(cfg, model, [WebUIProgress(shared.state, record), *spec.hooks], sampler=sampler,
                           resume_dir=cfg.output.output_dir if resume else None, pause_gate=spec.gate)
            rebuilt = result.stopped_reason == "paused" and spec.gate.ended_for == "rebuilt"
            spec.gate = None
            hold.leave_session()
            files = [f for f in dict.fromkeys(files + [str(f) for f in result.files]) if os.path.exists(f)]
            if not rebuilt:
                break
            record.log("The WebUI rebuilt the model during the pause: going on from the state saved there")
            hold.take_queue()
            resume = True
        record.files = files
        _record_outcome(record, result)

    def _borrow(self, cfg: Any, record: RunRecord, spec: RunSpec, hold: Any, resume: bool):
        """The model for this attempt, checked: a resumed run must find the model it started on
        (else it stays paused, saying what to do, and None is returned)."""
        from modules import shared

        from lib_lora.training.trainer import plan_run
        from lib_lora.webui import vram
        from lib_lora.webui.pause_gate import ModelIdentity, refused_message, wrong_model_message
        resuming = resume and spec.identity is not None
        try:
            model = hold.enter_session(cfg)
        except LoraError as err:
            if not resuming:
                raise
            return _stay_paused(record, refused_message(cfg, spec.identity, err))
        identity = ModelIdentity.of(shared.sd_model)
        if resuming and not spec.identity.same_weights(identity):
            hold.leave_session()
            return _stay_paused(record, wrong_model_message(cfg, spec.identity, identity))
        spec.identity = identity
        if not resume and getattr(shared.opts, "train_lora_check_vram", True):
            need = vram.check_run(cfg, model, plan_run(cfg, model))
            if need is not None:
                record.log(f"Estimated extra VRAM for this run: {need:.0f} MiB")
        return model


def _stay_paused(record: RunRecord, notice: str) -> None:
    """A run resuming from its state file found the WebUI unfit: it stays paused, saying why."""
    record.state, record.pause_requested, record.notice = "paused", True, notice
    record.log(notice)


def _record_outcome(record: RunRecord, result: Any) -> None:
    record.stopped_reason = result.stopped_reason
    if result.final_loss == result.final_loss:     # not NaN: a resumed attempt may take no step
        record.loss = result.final_loss
    record.state = {"cancelled": "cancelled", "paused": "paused"}.get(result.stopped_reason, "finished")
    if result.stopped_reason == "nan":
        record.state, record.error = "failed", "The loss became NaN; the last good epoch was kept"


manager = RunManager()
