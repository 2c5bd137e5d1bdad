"""The one job system (lib_lora/jobs.py) under a racing client: cancel while queued behind a
long holder, listing while others submit, registry growth, resume twice, ids."""
from __future__ import annotations

import re
import sys
import threading
import time

import pytest

from lib_lora.errors import LoraError
from lib_lora.jobs import KEEP_FINISHED, Jobs, LocalHost


def _wait(predicate, timeout=10.0):
    end = time.monotonic() + timeout
    while not predicate() and time.monotonic() < end:
        time.sleep(0.01)
    assert predicate()


def test_a_job_cancelled_while_queued_behind_a_holder_ends_now_and_never_runs():
    """A tagging job queued behind a two-hour training run and cancelled must not stay "queued"
    (and block every new tagging job) until the run ends."""
    host = LocalHost()
    jobs = Jobs(host)
    ran = []
    host.lock.acquire()                    # a long run holds the host
    try:
        job = jobs.submit("tag", "tagging a", lambda j: ran.append(1), exclusive=True)
        time.sleep(0.1)
        assert job.state == "queued"
        jobs.cancel(job.id)
        _wait(lambda: not job.active, timeout=3)
        assert job.state == "cancelled" and not ran
        again = jobs.submit("tag", "tagging b", lambda j: ran.append(2), exclusive=True)   # not refused
        jobs.cancel(again.id)
        _wait(lambda: not again.active, timeout=3)
    finally:
        host.lock.release()
    time.sleep(0.1)
    assert not ran
    assert host.lock.acquire(timeout=1)    # nobody kept the host
    host.lock.release()


def test_listing_while_another_thread_submits_never_raises():
    """GET /jobs (a server thread) lists while the tab submits: the submit lands in the middle of the
    listing's walk over the registry (made certain here), which must not raise "dictionary changed size"."""
    jobs = Jobs(LocalHost())
    for i in range(3):
        jobs.submit("grid", f"grid {i}", lambda j: None, exclusive=False, background=False, one_per_kind=False)
    armed, others = [True], []

    class SubmitMidWalk(dict):
        def values(self):
            walked = super().values()

            def walk():
                for job in walked:
                    if armed and threading.current_thread() is threading.main_thread():
                        armed.clear()
                        other = threading.Thread(target=lambda: jobs.submit(
                            "tag", "t", lambda j: None, exclusive=False, one_per_kind=False))
                        other.start()
                        other.join(0.3)          # the registry's lock may hold it back: then it lands later
                        others.append(other)
                    yield job
            return walk()

    jobs.jobs = SubmitMidWalk(jobs.jobs)
    listed = jobs.list()
    assert len(listed) == 3
    others[0].join(5)
    assert len(jobs.list()) == 4


def test_the_registry_keeps_only_the_recent_ended_jobs_of_a_kind():
    jobs = Jobs(LocalHost())
    for i in range(KEEP_FINISHED * 5):
        jobs.submit("check", f"check {i}", lambda j: i, exclusive=False, background=False)
    assert len(jobs.list("check")) <= KEEP_FINISHED + 1


def test_ids_are_unique_and_not_guessable_from_the_last_one():
    jobs = Jobs(LocalHost())
    ids = [jobs.submit("check", "c", lambda j: None, exclusive=False, background=False).id for _ in range(50)]
    assert len(set(ids)) == 50
    suffixes = [re.fullmatch(r"check\d+-([0-9a-f]+)", i).group(1) for i in ids]
    assert len(set(suffixes)) > 45       # a random part, not a counter


def test_a_failing_fn_and_a_failing_host_leave_the_host_free_and_the_kind_startable():
    host = LocalHost()
    jobs = Jobs(host)

    def boom(job):
        raise RuntimeError("bug")

    job = jobs.submit("tag", "tagging", boom, exclusive=True, background=False)
    assert job.state == "failed" and "RuntimeError: bug" in job.error
    assert host.lock.acquire(timeout=1)
    host.lock.release()
    ok = jobs.submit("tag", "tagging", lambda j: 1, exclusive=True, background=False)
    assert ok.state == "finished"


def test_unknown_and_hostile_ids_are_plain_errors():
    jobs = Jobs(LocalHost())
    job = jobs.submit("tag", "tagging", lambda j: 1, exclusive=False, background=False)
    for hostile in ("", "../../etc/passwd", "a\x00b", "x" * 100_000, job.id + " ", None, 5):   # a page's empty box
        with pytest.raises(LoraError) as err:
            jobs.get(hostile)
        assert err.value.fix
    with pytest.raises(LoraError):
        jobs.get(job.id, "train")         # a tagging job's id is not a run's


class _QueuedHost:
    """A training host whose runs only wait (the trainer is never reached in these tests)."""
    pause_frees_model = False

    def __init__(self, folder: str):
        self.folder = folder

    def lora_folder(self, cfg):
        return self.folder


def test_two_starts_of_one_output_name_at_once_are_one_run(tmp_path):
    """Two tabs (or a tab and the API) start `my_lora` while a generation runs: both would queue, never
    overlap (so the run lock never fires), and the second would write over the first's epochs."""
    from lib_lora import train_job
    from lib_lora.config import TrainConfig
    host = LocalHost()
    jobs = Jobs(host)
    host.lock.acquire()
    try:
        first = train_job.start(jobs, _QueuedHost(str(tmp_path)), TrainConfig())
        with pytest.raises(LoraError) as err:
            train_job.start(jobs, _QueuedHost(str(tmp_path) + "/."), TrainConfig())
        assert first.id in str(err.value) and err.value.where and err.value.fix
        other = TrainConfig()
        other.output.output_name = "other_lora"
        second = train_job.start(jobs, _QueuedHost(str(tmp_path)), other)     # another name: fine
        elsewhere = train_job.start(jobs, _QueuedHost(str(tmp_path / "sub")), TrainConfig())   # another folder
        for job in (first, second, elsewhere):
            job.cancel()
        assert not first.active
        again = train_job.start(jobs, _QueuedHost(str(tmp_path)), TrainConfig())      # once it ended
        again.cancel()
    finally:
        host.lock.release()


class _EndsPaused:
    """A host whose first attempt ends paused in memory (a WebUI pause that expired); later ones finish."""
    pause_frees_model = True

    def __init__(self):
        self.attempts = 0
        self.lock = threading.Lock()

    def lora_folder(self, cfg):
        return "lora_here"

    def borrow(self, job, run):
        import contextlib
        from types import SimpleNamespace

        from lib_lora import train_job

        @contextlib.contextmanager
        def lent():
            with self.lock:
                self.attempts += 1
            yield train_job.Borrowed(model=None, gate=train_job.WaitInPlace(job, run))
        return lent()


def test_resume_pressed_twice_at_once_resumes_once(monkeypatch):
    """The tab's Resume and the API's resume (or a double click) racing on a run that ended paused
    in memory: one more attempt, not two trainings one after the other."""
    from types import SimpleNamespace

    from lib_lora import train_job
    from lib_lora.config import TrainConfig

    def train(cfg, model, hooks, *, sampler, pause_gate, plan, resume_dir):
        time.sleep(0.01)
        return SimpleNamespace(stopped_reason="" if resume_dir else "paused", final_loss=0.1, files=[])
    monkeypatch.setattr("lib_lora.training.trainer.train", train)
    monkeypatch.setattr(train_job, "_sampler", lambda model, run: None)
    old = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        for _ in range(30):
            host, jobs = _EndsPaused(), Jobs(LocalHost())
            job = train_job.start(jobs, host, TrainConfig(), background=False)
            assert job.state == "paused"
            barrier = threading.Barrier(3)

            def press():
                barrier.wait()
                train_job.resume(jobs, job)
            pressers = [threading.Thread(target=press) for _ in range(3)]
            for thread in pressers:
                thread.start()
            for thread in pressers:
                thread.join(5)
            _wait(lambda: not job.active)
            job.worker.join(5)
            time.sleep(0.05)
            assert (host.attempts, job.state) == (2, "finished")
    finally:
        sys.setswitchinterval(old)


def test_a_cancel_as_the_run_ends_paused_is_a_cancel(monkeypatch):
    """A WebUI pause that expired ends the attempt paused; a Cancel pressed just then (the gate gone,
    the outcome not yet written) must not be overwritten by "paused" (an active run nobody asked for,
    holding its output name)."""
    from types import SimpleNamespace

    from lib_lora import train_job
    from lib_lora.config import TrainConfig

    def train(cfg, model, hooks, *, sampler, pause_gate, plan, resume_dir):
        job = hooks[0].job
        job.state = "paused"            # the gate let go of everything and returned (run.gate is cleared next)
        train_job.run_of(job).gate = None
        job.cancel()                    # the user's Cancel, in the window before record_outcome
        return SimpleNamespace(stopped_reason="paused", final_loss=0.1, files=[])
    monkeypatch.setattr("lib_lora.training.trainer.train", train)
    monkeypatch.setattr(train_job, "_sampler", lambda model, run: None)
    jobs = Jobs(LocalHost())
    job = train_job.start(jobs, _EndsPaused(), TrainConfig(), background=False)
    assert job.state == "cancelled"
    train_job.start(jobs, _EndsPaused(), TrainConfig(), background=False)    # its name is free again


def test_a_run_cancelled_while_it_waits_to_go_on_after_a_rebuild_does_not_borrow_again(monkeypatch):
    """The WebUI rebuilt the model during a pause; the run takes the queue again to go on from its
    saved state. A Cancel pressed meanwhile must end it there, not open a new session on the model."""
    import contextlib
    from types import SimpleNamespace

    from lib_lora import train_job
    from lib_lora.config import TrainConfig

    class Rebuilt(_EndsPaused):
        def borrow(self, job, run):
            @contextlib.contextmanager
            def lent():
                self.attempts += 1
                yield train_job.Borrowed(model=None, gate=train_job.WaitInPlace(job, run), rebuilt=lambda: True)
            return lent()

    def train(cfg, model, hooks, *, sampler, pause_gate, plan, resume_dir):
        if resume_dir:                 # a second session: the loop would see the cancel at its first step
            return SimpleNamespace(stopped_reason="cancelled", final_loss=float("nan"), files=[])
        hooks[0].job.cancel()          # pressed while the run waited in the pause
        return SimpleNamespace(stopped_reason="paused", final_loss=0.1, files=[])
    monkeypatch.setattr("lib_lora.training.trainer.train", train)
    monkeypatch.setattr(train_job, "_sampler", lambda model, run: None)
    host = Rebuilt()
    job = train_job.start(Jobs(LocalHost()), host, TrainConfig(), background=False)
    assert (host.attempts, job.state) == (1, "cancelled")
