"""Training runs as jobs inside the WebUI: queued behind txt2img, reported via shared.state.

A run waits for the WebUI's queue lock (so a generation in progress finishes
first, and generations started meanwhile wait), borrows the loaded model through
model_bridge.training_session, refuses a run whose VRAM need exceeds what is free
(vram.py, naming settings that fit), trains with lib_lora.training.train, and writes
each epoch into the WebUI's Lora folder (cmd_opts.lora_dir), where the Lora tab
finds it at once. Runs go on a background thread so the UI and the HTTP API stay
responsive; `run_sync` runs in the caller's thread (tests, Gradio handlers).
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
STATES = ("queued", "running", "finished", "cancelled", "failed")


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
    messages: list[str] = field(default_factory=list)

    def log(self, text: str) -> None:
        self.messages = (self.messages + [text])[-50:]

    def as_dict(self) -> dict[str, Any]:
        keys = ("run_id", "output_name", "state", "step", "total_steps", "epoch", "total_epochs", "loss",
                "files", "error", "stopped_reason", "created")
        return {k: getattr(self, k) for k in keys}


class RunManager:
    """Keeps the runs of this WebUI session; one trains at a time (the queue lock serialises)."""

    def __init__(self):
        self.runs: dict[str, RunRecord] = {}
        self._ids = itertools.count(1)
        self._lock = threading.Lock()
        self._extras: dict[str, tuple[list, Any, str]] = {}    # run id -> (hooks, sampler, task id)

    def new_record(self, cfg: Any) -> RunRecord:
        with self._lock:
            run_id = f"run{next(self._ids)}-{int(time.time())}"
            record = RunRecord(run_id, cfg.output.output_name)
            self.runs[run_id] = record
        return record

    def start(self, cfg: Any, background: bool = True, *, extra_hooks: Sequence[Any] = (),
              sampler: Callable[[Any], Any] | None = None, task_id: str = "") -> RunRecord:
        """Queue a run. extra_hooks: more TrainHooks (the tab's loss history); sampler: a function
        of the borrowed model returning the per-epoch sample renderer (the model exists only inside
        the run); task_id: the WebUI progress-API task, so its progress bar follows the run."""
        record = self.new_record(cfg)
        self._extras[record.run_id] = (list(extra_hooks), sampler, task_id)
        if task_id:
            from modules import progress
            progress.add_task_to_queue(task_id)
        if background:
            threading.Thread(target=self.run_sync, args=(cfg, record), name=f"train-lora-{record.run_id}",
                             daemon=True).start()
        else:
            self.run_sync(cfg, record)
        return record

    def cancel(self, run_id: str) -> RunRecord:
        record = self.get(run_id)
        if record.state in ("queued", "running"):
            record.cancel_requested = True
            if record.state == "running":
                from modules import shared
                shared.state.interrupt()
        return record

    def get(self, run_id: str) -> RunRecord:
        if run_id not in self.runs:
            raise LoraError(f"There is no training run {run_id!r}", where="run id",
                            fix="List the runs with GET /train_lora/v1/runs")
        return self.runs[run_id]

    def run_sync(self, cfg: Any, record: RunRecord) -> RunRecord:
        from modules import call_queue, shared
        record.log("Waiting for the WebUI to finish the current generation")
        with call_queue.queue_lock:
            if record.cancel_requested:
                record.state = "cancelled"
                _hooks, _sampler, task_id = self._extras.pop(record.run_id, ([], None, ""))
                if task_id:   # the WebUI's queue must not keep waiting for a run that never starts
                    from modules import progress
                    progress.start_task(task_id)
                    progress.finish_task(task_id)
                return record
            shared.state.begin(job=f"train_lora:{record.run_id}")
            record.state = "running"
            try:
                self._train(cfg, record, shared)
            except LoraError as err:
                record.state, record.error = "failed", str(err)
            except Exception as err:   # a broken run must never take the WebUI down
                log.exception("Train LoRA run %s failed", record.run_id)
                record.state, record.error = "failed", f"{type(err).__name__}: {err}"
            finally:
                shared.state.end()
        return record

    def _train(self, cfg: Any, record: RunRecord, shared: Any) -> None:
        from modules import progress

        from lib_lora.training import train
        from lib_lora.training.trainer import plan_run
        from lib_lora.webui import vram
        from lib_lora.webui.model_bridge import training_session
        from lib_lora.webui.progress import WebUIProgress
        hooks, make_sampler, task_id = self._extras.pop(record.run_id, ([], None, ""))
        cfg.output.output_dir = shared.cmd_opts.lora_dir
        os.makedirs(cfg.output.output_dir, exist_ok=True)
        if task_id:
            progress.start_task(task_id)
        try:
            with training_session(shared.sd_model, shared.opts, cfg) as model:
                if getattr(shared.opts, "train_lora_check_vram", True):
                    need = vram.check_run(cfg, model, plan_run(cfg, model))
                    if need is not None:
                        record.log(f"Estimated extra VRAM for this run: {need:.0f} MiB")
                sampler = make_sampler(model) if make_sampler is not None else None
                result = train(cfg, model, [WebUIProgress(shared.state, record), *hooks], sampler=sampler)
        finally:
            if task_id:
                progress.finish_task(task_id)
        record.files = [str(f) for f in result.files]
        record.stopped_reason = result.stopped_reason
        record.loss = result.final_loss
        record.state = "cancelled" if result.stopped_reason == "cancelled" else "finished"
        if result.stopped_reason == "nan":
            record.state, record.error = "failed", "The loss became NaN; the last good epoch was kept"


manager = RunManager()
