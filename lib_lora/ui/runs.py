"""What the tab needs from a training run beyond the WebUI's progress bar, and a local runner.

`RunHistory` is a TrainHooks that records the loss and LR per step, each epoch's
file, mean and validation loss, and the sample images as they arrive; it also
carries the tab's pause and save-now requests into the loop (the trainer itself
writes the per-epoch log `<name>-epochs.json` that the best-epoch hint reads). `LocalRunner` trains on a background thread for the
standalone tab (no WebUI queue); `BackgroundTask` runs any other long action
(grid, preprocessing) on a thread so the page never waits on it.
"""
from __future__ import annotations

import logging
import threading
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from lib_lora.errors import LoraError
from lib_lora.training.hooks import EpochResult, Progress, TrainHooks

log = logging.getLogger(__name__)


@dataclass
class RunHistory(TrainHooks):
    output_dir: str = ""
    output_name: str = ""
    total_steps: int = 0
    total_epochs: int = 0
    last: Progress | None = None
    losses: list[float] = field(default_factory=list)
    lrs: list[float] = field(default_factory=list)
    epochs: list[dict] = field(default_factory=list)
    samples: list[tuple[int, str]] = field(default_factory=list)    # (epoch, image path)
    status: str = ""
    pause: bool = False
    stop: bool = False
    save_now: bool = False

    def on_plan(self, plan: Any) -> None:
        self.total_steps = int(getattr(plan, "total_steps", 0))
        self.total_epochs = int(getattr(plan, "epochs", 0))

    def on_status(self, text: str) -> None:
        self.status = text.splitlines()[0] if text else ""

    def on_progress(self, progress: Progress) -> None:
        self.last = progress
        self.losses.append(float(progress.loss))
        self.lrs.append(float(progress.lr))

    def on_epoch_end(self, result: EpochResult) -> None:
        self.epochs.append({"epoch": result.epoch, "file": result.path, "mean_loss": result.mean_loss,
                            "validation_loss": result.validation_loss})

    def add_samples(self, epoch: int, paths: list[Path]) -> None:
        self.samples += [(epoch, str(p)) for p in paths]

    def should_stop(self) -> bool:
        return self.stop

    def should_pause(self) -> bool:
        return self.pause

    def save_requested(self) -> bool:
        wanted, self.save_now = self.save_now, False      # one press, one save
        return wanted


@dataclass
class RunView:
    """A run as the tab shows it, whoever runs it."""
    run_id: str
    output_name: str
    output_dir: str
    state: str = "queued"       # queued | running | paused | finished | cancelled | failed
    error: str = ""
    files: list[str] = field(default_factory=list)
    history: RunHistory = field(default_factory=RunHistory)
    notice: str = ""            # what the user should know now (e.g. why a resume was refused)

    @property
    def active(self) -> bool:
        return self.state in ("queued", "running", "paused")


class BackgroundTask:
    """One long action on a thread: progress (done, total, text), result or error in plain words."""

    def __init__(self, name: str, fn: Callable[["BackgroundTask"], Any]):
        self.name, self.fn = name, fn
        self.done = self.total = 0
        self.text = "waiting"
        self.result: Any = None
        self.error = ""
        self.finished = False
        self.cancel_requested = False
        self.thread = threading.Thread(target=self._run, name=f"train-lora-{name}", daemon=True)

    def start(self) -> "BackgroundTask":
        self.thread.start()
        return self

    def progress(self, done: int, total: int, text: str = "") -> None:
        self.done, self.total, self.text = done, total, text

    def _run(self) -> None:
        try:
            self.result = self.fn(self)
        except LoraError as err:
            self.error = str(err)
        except Exception as err:     # shown in the tab; the page must keep working
            log.error("Train LoRA task %s failed:\n%s", self.name, traceback.format_exc())
            self.error = f"{self.name} failed: {type(err).__name__}: {err}"
        finally:
            self.finished = True


class LocalRunner:
    """Trains in this process on a background thread (standalone tab, tests); one run at a time."""

    def __init__(self, model_factory: Callable[[Any], Any], sampler_factory=None):
        self.model_factory = model_factory
        self.sampler_factory = sampler_factory
        self.runs: dict[str, RunView] = {}
        self._lock = threading.Lock()

    def start(self, cfg: Any) -> RunView:
        with self._lock:
            if any(r.active for r in self.runs.values()):
                raise LoraError("A training run is already going", where="Train",
                                fix="Wait for it to finish, or cancel it first")
            run_id = f"run{len(self.runs) + 1}-{int(time.time())}"
            view = RunView(run_id, cfg.output.output_name, cfg.output.output_dir,
                           history=RunHistory(cfg.output.output_dir, cfg.output.output_name))
            self.runs[run_id] = view
        threading.Thread(target=self._train, args=(cfg, view), name=f"train-lora-{run_id}", daemon=True).start()
        return view

    def _train(self, cfg: Any, view: RunView) -> None:
        from lib_lora.training import train
        view.state = "running"
        try:
            model = self.model_factory(cfg)
            sampler = self.sampler_factory(model, cfg, view.history) if self.sampler_factory else None
            result = train(cfg, model, [view.history], sampler=sampler)
            view.files = [str(f) for f in result.files]
            view.state = "cancelled" if result.stopped_reason == "cancelled" else "finished"
            if result.stopped_reason == "nan":
                view.state, view.error = "failed", "The loss became NaN; the last good epoch was kept"
        except LoraError as err:
            view.state, view.error = "failed", str(err)
        except Exception as err:   # shown in the tab in plain words; details in the log
            log.error("Train LoRA run failed:\n%s", traceback.format_exc())
            view.state, view.error = "failed", f"Training failed: {type(err).__name__}: {err}"

    def get(self, run_id: str) -> RunView:
        if run_id not in self.runs:
            raise LoraError(f"There is no training run {run_id!r}", where="Train",
                            fix="Start a run first; runs are kept until the server restarts")
        view = self.runs[run_id]
        if view.state in ("running", "paused"):
            view.state = "paused" if view.history.pause else "running"
        return view

    def cancel(self, run_id: str) -> RunView:
        view = self.get(run_id)
        view.history.stop = True
        view.history.pause = False
        return view

    def set_paused(self, run_id: str, paused: bool) -> RunView:
        view = self.get(run_id)
        view.history.pause = paused
        return self.get(run_id)

    def save_now(self, run_id: str) -> RunView:
        view = self.get(run_id)
        view.history.save_now = True
        return view
