"""The one job system (lib_lora/jobs.py): states, progress, errors, cancel, exclusivity, ids."""
from __future__ import annotations

import threading
import time

import pytest

from lib_lora.errors import LoraError
from lib_lora.jobs import Jobs, LocalHost


def _wait(job, timeout=10.0):
    end = time.monotonic() + timeout
    while job.active and time.monotonic() < end:
        time.sleep(0.01)
    assert not job.active, f"job still {job.state}"


def test_a_job_reports_progress_and_its_result():
    jobs = Jobs(LocalHost())

    def work(job):
        for i in range(3):
            job.progress(i + 1, 3, f"image {i + 1}")
        return "done"

    job = jobs.submit("check", "check my_set", work, exclusive=False, background=False)
    assert (job.state, job.result, job.done, job.total, job.text) == ("finished", "done", 3, 3, "image 3")
    assert jobs.get(job.id) is job and jobs.list("check") == [job] and jobs.list("tag") == []


def test_errors_are_plain_words_and_a_bug_does_not_escape():
    jobs = Jobs(LocalHost())

    def refuse(job):
        raise LoraError("The folder has no images", where="Dataset", fix="Pick a folder with images")

    def bug(job):
        raise ZeroDivisionError("division by zero")

    refused = jobs.submit("check", "check a", refuse, exclusive=False, background=False)
    crashed = jobs.submit("prep", "prep a", bug, exclusive=False, background=False)
    assert refused.state == "failed" and "no images" in refused.error and "Pick a folder" in refused.error
    assert crashed.state == "failed" and crashed.error == "prep a failed: ZeroDivisionError: division by zero"


def test_cancel_stops_a_running_job_at_its_next_check():
    jobs = Jobs(LocalHost())
    started = threading.Event()

    def loop(job):
        started.set()
        while not job.should_stop():
            time.sleep(0.01)

    job = jobs.submit("tag", "tag a", loop, exclusive=True)
    assert started.wait(5)
    jobs.cancel(job.id)
    _wait(job)
    assert job.state == "cancelled"


def test_exclusive_jobs_take_turns_and_a_job_cancelled_while_waiting_never_runs():
    host = LocalHost()
    jobs = Jobs(host)
    inside, overlap, ran = [], [], []
    release = threading.Event()

    def first(job):
        inside.append(1)
        release.wait(5)
        inside.pop()

    def second(job):
        overlap.append(len(inside))
        ran.append("second")

    a = jobs.submit("train", "run a", first, exclusive=True)
    while not inside:
        time.sleep(0.01)
    b = jobs.submit("grid", "grid b", second, exclusive=True)
    c = jobs.submit("extract", "extract c", second, exclusive=True)
    time.sleep(0.1)
    assert b.state == "queued" and c.state == "queued"      # waiting for the host
    jobs.cancel(c.id)
    release.set()
    for job in (a, b, c):
        _wait(job)
    assert (a.state, b.state, c.state) == ("finished", "finished", "cancelled")
    assert overlap == [0] and ran == ["second"]


def test_one_job_per_kind_and_ids_never_collide_across_registries():
    jobs, other = Jobs(LocalHost()), Jobs(LocalHost())
    gate = threading.Event()
    running = jobs.submit("tag", "tag a", lambda job: gate.wait(5), exclusive=False)
    with pytest.raises(LoraError, match="already going"):
        jobs.submit("tag", "tag b", lambda job: None, exclusive=False)
    gate.set()
    _wait(running)
    ids = {jobs.submit("check", "c", lambda job: None, exclusive=False, background=False).id for _ in range(30)}
    ids |= {other.submit("check", "c", lambda job: None, exclusive=False, background=False).id for _ in range(30)}
    assert len(ids) == 60
    with pytest.raises(LoraError, match="no job"):
        jobs.get("train1-000000")


def test_a_job_its_function_leaves_paused_stays_paused():
    jobs = Jobs(LocalHost())

    def pause_and_let_go(job):
        job.state = "paused"

    job = jobs.submit("train", "run", pause_and_let_go, exclusive=True, background=False)
    assert job.state == "paused" and job.active
