"""Training as a job of the one registry: what a run reports, the requests it reads, how it ends.

A training run is a `Job` of kind "train" (lib_lora/jobs.py), whoever started it (the tab, the
HTTP API) and wherever it runs (the WebUI, the standalone server). Its own state is a `TrainRun`:
the config, what the tab's chart shows (losses, learning rates, samples, saved files), and the
requests the loop reads (pause and save now; stop is the job's cancel). `JobHooks` is the
TrainHooks adapter between the loop and the job.

What differs per host is a `TrainHost`: where the files go (set once, when the run starts), and
`borrow`, the model of one attempt with its pause gate (the WebUI's gives the model and the queue
back while paused; standalone the run waits in place, `WaitInPlace`), the plan when the host
already made one (the WebUI's VRAM check), and hooks of its own. A borrow may refuse a resumed run
(another model is loaded): the run then stays paused, saying why.

A run paused too long, or whose model the WebUI rebuilt during the pause, ended in memory and
resumes from the state it saved at the pause: `resume` launches the job's function again. How a
run ended (the trainer's stopped_reason) becomes the job's state in `record_outcome`, only there.
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from typing import Any, Callable, ContextManager, Protocol, Sequence

from lib_lora.config import TrainConfig
from lib_lora.errors import LoraError
from lib_lora.jobs import Job, Jobs
from lib_lora.training.hooks import EpochResult, PauseGate, PausePoint, Progress, TrainHooks

KIND = "train"


@dataclass
class TrainRun:
    """A training job's own state: its config, the chart's data, the loop's requests."""
    cfg: TrainConfig
    host: "TrainHost"
    hooks: list[TrainHooks] = field(default_factory=list)     # more hooks (tests, tools)
    step: int = 0
    total_steps: int = 0
    epoch: int = 0
    total_epochs: int = 0
    loss: float | None = None
    last: Progress | None = None
    losses: list[float] = field(default_factory=list)
    lrs: list[float] = field(default_factory=list)
    epochs: list[dict] = field(default_factory=list)
    samples: list[tuple[int, str]] = field(default_factory=list)     # (epoch, image path)
    files: list[str] = field(default_factory=list)
    status: str = ""                    # the trainer's last status line
    notice: str = ""                    # what the user should know now (why a resume was refused)
    stopped_reason: str = ""
    save_requested: bool = False        # "Save now": a LoRA file of the current step (also while paused)
    resume: bool = False                # the next attempt goes on from the state file
    gate: PauseGate | None = None       # the live pause gate while the loop runs
    memo: Any = None                    # what the host keeps between attempts (the WebUI: the model's identity)

    @property
    def output_name(self) -> str:
        return self.cfg.output.output_name

    def add_samples(self, epoch: int, paths: list) -> None:
        self.samples += [(epoch, str(p)) for p in paths]

    def as_dict(self) -> dict[str, Any]:
        keys = ("output_name", "step", "total_steps", "epoch", "total_epochs", "files", "stopped_reason", "notice")
        # a NaN or infinite loss is no JSON number: it would make every listing of the API answer 500
        loss = self.loss if self.loss is not None and math.isfinite(self.loss) else None
        return {**{k: getattr(self, k) for k in keys}, "loss": loss}

    def cancelled(self, job: Job) -> None:
        if job.state == "paused" and self.gate is None:     # it ended in memory: nothing runs to stop
            job.state, job.pause_requested = "cancelled", False
        if self.gate is not None:
            self.gate.wake()


@dataclass
class Borrowed:
    """What the host lends one attempt of a run."""
    model: Any
    gate: PauseGate
    plan: Any = None                    # the plan the host made for its own check (None: the trainer makes it)
    hooks: list[TrainHooks] = field(default_factory=list)
    rebuilt: Callable[[], bool] = lambda: False    # ended paused because the model was rebuilt: go on at once


class TrainHost(Protocol):
    pause_frees_model: bool          # a paused run gives the model back (the WebUI): its files can be tried

    def lora_folder(self, cfg: TrainConfig) -> str: ...        # where the run's files go (made when missing)
    def borrow(self, job: Job, run: TrainRun) -> ContextManager[Borrowed | None]: ...   # None: stays paused


class JobHooks(TrainHooks):
    """The loop's reports into the job (progress, log, the chart's data); the job's requests into the loop."""

    def __init__(self, job: Job, run: TrainRun):
        self.job, self.run = job, run

    def on_plan(self, plan: Any) -> None:
        self.run.total_steps, self.run.total_epochs = int(plan.total_steps), int(plan.epochs)
        self.job.progress(self.run.step, self.run.total_steps)

    def on_status(self, text: str) -> None:
        self.run.status = text.splitlines()[0] if text else ""
        self.job.note(text)
        self.job.headline = self.run.status
        self.job.progress(self.run.step, self.run.total_steps)

    def on_progress(self, p: Progress) -> None:
        run = self.run
        run.last, run.step, run.epoch, run.loss = p, p.step, p.epoch, p.loss
        run.total_steps, run.total_epochs = p.total_steps, p.total_epochs
        run.losses.append(float(p.loss))
        run.lrs.append(float(p.lr))
        # no ETA here: the WebUI's progress bar adds its own, from done / total
        self.job.headline = (f"step {p.step}/{p.total_steps}, epoch {p.epoch}/{p.total_epochs}, "
                             f"loss {p.loss:.4f}, {p.it_per_s:.2f} it/s")
        self.job.progress(p.step, p.total_steps, self.job.headline)

    def on_epoch_end(self, result: EpochResult) -> None:
        self.run.epochs.append({"epoch": result.epoch, "file": result.path, "mean_loss": result.mean_loss,
                                "validation_loss": result.validation_loss})
        if result.path:
            self.run.files.append(result.path)

    def should_stop(self) -> bool:
        return self.job.should_stop()

    def should_pause(self) -> bool:
        return self.job.pause_requested

    def save_requested(self) -> bool:
        wanted, self.run.save_requested = self.run.save_requested, False     # one press, one save
        return wanted


class WaitInPlace(PauseGate):
    """A pause that keeps the model (standalone: nothing else needs it); the job says paused meanwhile."""

    def __init__(self, job: Job, run: TrainRun):
        super().__init__()
        self.job, self.run = job, run

    def hold(self, point: PausePoint) -> bool:
        self.job.state = "paused"
        while point.still_paused() and not point.stop_requested():
            saved = self.serve_save(point)
            if saved is not None:
                self.run.files.append(str(saved))
            self._wake.wait(self.poll_s)
            self._wake.clear()
        go_on = not point.stop_requested()
        if go_on:
            self.job.state = "running"
        return go_on


def start(jobs: Jobs, host: TrainHost, cfg: TrainConfig, *, task_id: str = "", hooks: Sequence[TrainHooks] = (),
          background: bool = True) -> Job:
    """Queue a run; its files go where the host says (set here, once). task_id: the host's progress task."""
    cfg.output.output_dir = host.lora_folder(cfg)
    run = TrainRun(cfg, host, list(hooks))
    # queued runs never overlap, so the run lock cannot see two on one name: the registry refuses the second
    writes = os.path.normcase(os.path.join(os.path.abspath(cfg.output.output_dir), cfg.output.output_name))
    return jobs.submit(KIND, f"training {cfg.output.output_name}", _attempt, exclusive=True, task_id=task_id,
                       background=background, one_per_kind=False, kind_state=run, key=writes)


def run_of(job: Job) -> TrainRun:
    return job.kind_state


def pause(job: Job) -> Job:
    """Pause after the current optimizer step; a queued run prepares and pauses before its first step."""
    if not job.active:
        raise LoraError(f"The run {job.id} is {job.state}, so it cannot pause", where="run id",
                        fix="Only a queued or running run can pause; start a new run")
    job.pause_requested = True
    return job


def resume(jobs: Jobs, job: Job, background: bool = True) -> Job:
    """Go on from the pause: in memory when the run still holds its state, else from its state file."""
    if not job.active:
        raise LoraError(f"The run {job.id} is {job.state}, so there is nothing to resume", where="run id",
                        fix="Start a new run (or resume a stopped one headless with `train --resume`)")
    run = run_of(job)
    job.pause_requested, run.notice = False, ""
    if run.gate is not None:
        run.gate.wake()
        return job
    with job.start_lock:       # two presses at once (tab and API, a double click): one launch
        relaunch = job.state == "paused" and run.gate is None
        if relaunch:
            job.state = "queued"
    if relaunch:
        run.resume, job.task_id = True, ""      # the progress task ended with the first attempt
        jobs.launch(job, _attempt, exclusive=True, background=background)
    return job


def save_now(job: Job) -> Job:
    """Write a LoRA file of the current step: after it, or at once while paused."""
    run = run_of(job)
    if job.state not in ("running", "paused") or run.gate is None:
        raise LoraError(f"The run {job.id} is {job.state}: there are no weights in training to save",
                        where="run id", fix="Save now works while a run trains or is paused")
    run.save_requested = True
    run.gate.wake()
    return job


def stay_paused(job: Job, run: TrainRun, notice: str) -> None:
    """The host cannot lend the run what it started on now: it stays paused, saying what to do."""
    job.state, job.pause_requested, run.notice = "paused", True, notice
    job.note(notice)


def _attempt(job: Job) -> TrainRun:
    """The job's function: train on what the host lends, again at once when it rebuilt the model."""
    from lib_lora.training.trainer import train
    run = run_of(job)
    files = list(run.files)
    while True:
        with run.host.borrow(job, run) as lent:
            if lent is None:
                return run
            job.state, run.gate = "running", lent.gate
            try:
                result = train(run.cfg, lent.model, [JobHooks(job, run), *lent.hooks, *run.hooks],
                               sampler=_sampler(lent.model, run), pause_gate=lent.gate, plan=lent.plan,
                               resume_dir=run.cfg.output.output_dir if run.resume else None)
            finally:
                run.gate = None
            again = result.stopped_reason == "paused" and lent.rebuilt()
        files = [f for f in dict.fromkeys(files + [str(f) for f in result.files]) if os.path.exists(f)]
        if not again:
            break
        job.note("The WebUI rebuilt the model during the pause: going on from the state saved there")
        job.hold.take()
        if job.cancel_requested:      # cancelled while it waited for the queue: no new session on the model
            break
        run.resume = True
    run.files = files
    record_outcome(job, run, result)
    return run


def _sampler(model: Any, run: TrainRun):
    from lib_lora.evaluation.samples import make_sampler
    cfg = run.cfg
    return make_sampler(model, cfg.output.output_dir, cfg.output.output_name, cfg.model.clip_skip,
                        cfg.dataset.max_token_length, on_images=run.add_samples)


def record_outcome(job: Job, run: TrainRun, result: Any) -> None:
    """How the run ended (the trainer's stopped_reason) as the job's state."""
    run.stopped_reason = result.stopped_reason
    if result.final_loss == result.final_loss:     # not NaN: a resumed attempt may take no step
        run.loss = result.final_loss
    job.state = {"cancelled": "cancelled", "paused": "paused"}.get(result.stopped_reason, "finished")
    if job.state == "paused" and job.cancel_requested:     # a Cancel pressed as the attempt ended paused
        job.state, job.pause_requested = "cancelled", False
    if result.stopped_reason == "nan":
        job.state, job.error = "failed", "The loss became NaN; the last good epoch was kept"


def run_dict(job: Job) -> dict[str, Any]:
    """A run as the HTTP API shows it (GET /train_lora/v1/runs/{run_id})."""
    return {"run_id": job.id, **run_of(job).as_dict(), "state": job.state, "error": job.error,
            "created": job.created, "pause_requested": job.pause_requested, "paused": job.state == "paused"}
