"""Training as a job (lib_lora/train_job.py), host-agnostic, with a stand-in for the trainer: what the
loop reports lands in the job and the tab's chart data, the job's requests reach the loop, a pause
waits in place on a host that keeps the model, and how a run ended becomes the job's state."""
from __future__ import annotations

import contextlib
import threading
import time
from types import SimpleNamespace

import pytest

from lib_lora import train_job
from lib_lora.config import TrainConfig
from lib_lora.errors import LoraError
from lib_lora.jobs import Jobs, LocalHost
from lib_lora.training.hooks import EpochResult, HookCaller, PausePoint, Progress


class KeepsTheModel:
    """A host like the standalone one: files where the config says, a pause waits in place."""
    pause_frees_model = False

    def lora_folder(self, cfg):
        return "lora_here"

    @contextlib.contextmanager
    def borrow(self, job, run):
        yield train_job.Borrowed(model=None, gate=train_job.WaitInPlace(job, run))


def fake_trainer(monkeypatch, ending: str = "", steps: int = 2, saved: list | None = None):
    """train(): `steps` steps of 2, honouring stop, pause (at the gate) and save-now like the loop."""
    def train(cfg, model, hooks, *, sampler, pause_gate, plan, resume_dir):
        caller = HookCaller(hooks)
        caller.on_plan(SimpleNamespace(total_steps=steps, epochs=1))
        for step in range(1, steps + 1):
            if caller.should_pause() and not pause_gate.hold(PausePoint(
                    step - 1, 1, None, caller.should_pause, caller.should_stop, caller.save_requested,
                    lambda: saved.append(f"{cfg.output.output_name}-step{step - 1}") or saved[-1])):
                return SimpleNamespace(stopped_reason="cancelled", final_loss=float("nan"), files=[])
            if caller.should_stop():
                return SimpleNamespace(stopped_reason="cancelled", final_loss=float("nan"), files=[])
            caller.on_progress(Progress(step, steps, 1, 1, 0.5 / step, 1e-4 * step, 2.0, 1.0))
        caller.on_epoch_end(EpochResult(1, None, 0.3))
        return SimpleNamespace(stopped_reason=ending, final_loss=0.25, files=[])
    monkeypatch.setattr("lib_lora.training.trainer.train", train)


@pytest.mark.parametrize("ending, state, error", [("", "finished", ""), ("cancelled", "cancelled", ""),
                                                  ("paused", "paused", ""), ("nan", "failed", "NaN")])
def test_how_the_run_ended_is_the_jobs_state(monkeypatch, ending, state, error):
    fake_trainer(monkeypatch, ending)
    job = train_job.start(Jobs(LocalHost()), KeepsTheModel(), TrainConfig(), background=False)
    run = train_job.run_of(job)
    assert (job.state, run.stopped_reason, run.loss) == (state, ending, 0.25)
    assert error in job.error and (error or job.error == "")


def test_the_loops_reports_fill_the_job_and_the_chart(monkeypatch):
    fake_trainer(monkeypatch)
    cfg = TrainConfig()
    job = train_job.start(Jobs(LocalHost()), KeepsTheModel(), cfg, background=False)
    run = train_job.run_of(job)
    assert cfg.output.output_dir == "lora_here"          # the host says where the files go, once, at the start
    assert (job.done, job.total, run.step, run.total_steps, run.epoch) == (2, 2, 2, 2, 1)
    assert run.losses == [0.5, 0.25] and run.lrs == [1e-4, 2e-4] and run.epochs[0]["mean_loss"] == 0.3
    assert job.headline == "step 2/2, epoch 1/1, loss 0.2500, 2.00 it/s"
    assert train_job.run_dict(job)["run_id"] == job.id and job.as_dict()["output_name"] == "my_lora"


def test_a_run_paused_in_place_saves_now_resumes_and_cancels(monkeypatch):
    saved = []
    fake_trainer(monkeypatch, steps=3, saved=saved)
    jobs = Jobs(LocalHost())
    ends = []
    for finish in ("resume", "cancel"):
        with jobs.host.lock:                      # queued: the pause is taken before the first step
            job = train_job.start(jobs, KeepsTheModel(), TrainConfig())
            train_job.pause(job)
        deadline = time.monotonic() + 10
        while job.state != "paused":
            assert time.monotonic() < deadline, job.state
            time.sleep(0.01)
        train_job.save_now(job)
        while not saved:
            assert time.monotonic() < deadline
            time.sleep(0.01)
        assert train_job.run_of(job).files == ["my_lora-step0"]
        saved.clear()
        if finish == "resume":
            train_job.resume(jobs, job)
        else:
            job.cancel()
        job.worker.join(10)
        ends.append((job.state, train_job.run_of(job).step))
    assert ends == [("finished", 3), ("cancelled", 0)]
    with pytest.raises(LoraError, match="cannot pause"):
        train_job.pause(job)


def test_a_resume_of_a_run_that_ended_paused_runs_it_again_from_its_state(monkeypatch):
    fake_trainer(monkeypatch, ending="paused")
    jobs = Jobs(LocalHost())
    job = train_job.start(jobs, KeepsTheModel(), TrainConfig(), background=False, task_id="task(1)")
    assert job.state == "paused" and train_job.run_of(job).gate is None
    fake_trainer(monkeypatch)
    train_job.resume(jobs, job, background=False)
    assert job.state == "finished" and train_job.run_of(job).resume and job.task_id == ""
    job.cancel()                                   # an ended run: nothing to do
    assert job.state == "finished"


def test_cancel_of_a_run_that_ended_paused_ends_it_at_once(monkeypatch):
    fake_trainer(monkeypatch, ending="paused")
    job = train_job.start(Jobs(LocalHost()), KeepsTheModel(), TrainConfig(), background=False)
    job.cancel()
    assert (job.state, job.pause_requested) == ("cancelled", False)


def test_relaunching_waits_for_the_last_attempt_to_let_go():
    """Jobs.launch of a job whose last thread is still ending starts after it (a resume right after a pause)."""
    jobs, order, gate = Jobs(LocalHost()), [], threading.Event()

    def first(job):
        gate.wait(5)
        order.append("first")
        job.state = "paused"

    job = jobs.submit("train", "run", first, exclusive=True, one_per_kind=False)
    jobs.launch(job, lambda j: order.append("second"), exclusive=True)
    gate.set()
    job.worker.join(5)
    assert order == ["first", "second"] and job.state == "finished"
