"""The job system inside the WebUI stand-in, red-teamed: whatever phase of a job breaks, txt2img can
take the queue lock afterwards, shared.state is ended and the progress task finished; a job
cancelled while queued behind a generation never runs and does not block its kind; the HTTP API
answers hostile ids and bodies with 4xx and one sentence, and asks for credentials on /jobs."""
from __future__ import annotations

import base64
import threading
import time
from types import SimpleNamespace

import pytest

from lib_lora.errors import LoraError


def _wait(predicate, timeout=10.0):
    end = time.monotonic() + timeout
    while not predicate() and time.monotonic() < end:
        time.sleep(0.01)
    assert predicate()


def _ended(job, timeout=10.0):
    """The job ended and its thread let go of the host (its end state is written while it still
    holds: the release follows within the same thread)."""
    _wait(lambda: not job.active, timeout)
    job.worker.join(timeout)
    assert not job.worker.is_alive()


def _webui_is_free(webui, task: str = "") -> None:
    """txt2img could start now: the queue lock is free, shared.state ended, our task not current."""
    progress = __import__("modules.progress", fromlist=["progress"])
    assert webui.call_queue.queue_lock.acquire(timeout=2), "the queue lock was kept"
    webui.call_queue.queue_lock.release()
    assert webui.shared.state.job == "", f"shared.state still holds {webui.shared.state.job!r}"
    if task:
        assert progress.current_task != task and task in progress.finished_tasks


@pytest.fixture()
def jobs(fresh_state):
    from lib_lora.jobs import Jobs
    from lib_lora.webui.host import WebUIHost
    fresh_state.shared.state.end()
    return Jobs(WebUIHost())


def test_a_bug_in_the_jobs_function_frees_the_webui(jobs, fresh_state):
    def boom(job):
        job.progress(1, 3, "image 1")
        raise ValueError("bad image")

    job = jobs.submit("tag", "tagging", boom, exclusive=True, task_id="task(boom)")
    _ended(job)
    assert job.state == "failed" and "ValueError: bad image" in job.error
    _webui_is_free(fresh_state, "task(boom)")


@pytest.mark.parametrize("phase", ["state.begin", "progress.start_task", "progress.finish_task", "state.end"])
def test_a_failure_inside_the_hold_frees_the_queue(jobs, fresh_state, monkeypatch, phase):
    webui = fresh_state
    owner, name = phase.split(".")
    target = webui.shared.state if owner == "state" else __import__("modules.progress", fromlist=["x"])
    real, calls = getattr(target, name), []

    def once_broken(*args, **kwargs):
        if not calls:
            calls.append(1)
            raise RuntimeError(f"{phase} broke")
        return real(*args, **kwargs)

    monkeypatch.setattr(target, name, once_broken)
    job = jobs.submit("grid", "grid", lambda j: "ok", exclusive=True, task_id="task(hold)")
    _ended(job)
    assert job.state == "failed" and f"{phase} broke" in job.error
    monkeypatch.setattr(target, name, real)
    assert webui.call_queue.queue_lock.acquire(timeout=2), f"a failing {phase} kept the queue lock"
    webui.call_queue.queue_lock.release()
    webui.shared.state.end()
    again = jobs.submit("grid", "grid", lambda j: "ok", exclusive=True)
    _ended(again)
    assert again.state == "finished"


def test_a_job_cancelled_behind_a_generation_ends_now_and_never_runs(jobs, fresh_state):
    webui, ran = fresh_state, []
    webui.call_queue.queue_lock.acquire()          # a txt2img batch in progress
    try:
        job = jobs.submit("tag", "tagging", lambda j: ran.append(1), exclusive=True, task_id="task(q)")
        time.sleep(0.1)
        jobs.cancel(job.id)
        _wait(lambda: not job.active, timeout=2)
        assert job.state == "cancelled"
        again = jobs.submit("tag", "tagging again", lambda j: ran.append(2), exclusive=True)
        again.cancel()
    finally:
        webui.call_queue.queue_lock.release()
    time.sleep(0.3)
    assert not ran
    _webui_is_free(webui, "task(q)")


def test_cancel_while_the_job_takes_the_queue_does_not_interrupt_the_next_generation(jobs, fresh_state):
    """A cancel racing the job's start: the job never runs, and the WebUI's interrupt flag stays
    clear for whoever takes the queue next."""
    webui = fresh_state
    for _ in range(20):
        gate = threading.Event()
        webui.call_queue.queue_lock.acquire()
        job = jobs.submit("grid", "grid", lambda j: gate.wait(5), exclusive=True)
        threading.Timer(0.001, webui.call_queue.queue_lock.release).start()
        job.cancel()
        gate.set()
        _ended(job)
        assert job.state == "cancelled"
        _webui_is_free(webui)
        webui.shared.state.begin("txt2img")
        assert not webui.shared.state.interrupted
        webui.shared.state.end()


def test_the_script_unloaded_callback_cancels_a_job_holding_the_queue(fresh_state):
    from lib_lora.webui.host import webui_jobs
    webui = fresh_state
    going = threading.Event()

    def holds(job):
        going.set()
        while not job.should_stop():
            time.sleep(0.01)

    job = webui_jobs().submit("grid", "grid", holds, exclusive=True, task_id="task(unload)")
    assert going.wait(5)
    import os
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    webui.scripts.load_scripts_from(root)
    webui.script_callbacks.script_unloaded_callback()
    _ended(job)
    assert job.state == "cancelled"
    _webui_is_free(webui, "task(unload)")


# --- the HTTP API -------------------------------------------------------------------------------

@pytest.fixture()
def api_app(fresh_state):
    from fastapi import FastAPI
    from fastapi.testclient import TestClient

    from lib_lora.jobs import Jobs, LocalHost
    from lib_lora.path_policy import PathPolicy
    from lib_lora.webui import api
    jobs = Jobs(LocalHost())
    policy = PathPolicy((fresh_state.root,), True, "the HTTP API may only use these folders")

    def client(api_auth=None):
        app = FastAPI()
        assert api.register(app, jobs, policy=lambda: policy, cmd_opts=SimpleNamespace(api=True, api_auth=api_auth))
        return TestClient(app, raise_server_exceptions=False)
    return client, jobs


def test_jobs_listing_asks_for_credentials(api_app):
    client, jobs = api_app
    http = client("alice:s3cret")
    assert http.get("/train_lora/v1/jobs").status_code == 401
    wrong = base64.b64encode(b"alice:nope").decode()
    assert http.get("/train_lora/v1/jobs", headers={"Authorization": f"Basic {wrong}"}).status_code == 401
    right = base64.b64encode(b"alice:s3cret").decode()
    assert http.get("/train_lora/v1/jobs", headers={"Authorization": f"Basic {right}"}).status_code == 200


@pytest.mark.parametrize("run_id", ["..%2F..%2Fetc%2Fpasswd", "a%00b", "x" * 5000, "%F0%9F%98%80", "%ED%A0%80",
                                    "train1-000000", " ", "%0A"])
def test_hostile_run_ids_answer_4xx_with_one_sentence(api_app, run_id):
    client, _ = api_app
    http = client()
    for method, path in (("GET", ""), ("POST", "/cancel"), ("POST", "/pause"), ("POST", "/resume")):
        answer = http.request(method, f"/train_lora/v1/runs/{run_id}{path}")
        assert answer.status_code in (400, 404), (method, path, answer.status_code, answer.text[:200])
        detail = answer.json()["detail"]
        assert isinstance(detail, str) and len(detail) < 1000, detail[:200]


def test_a_tagging_jobs_id_is_no_run(api_app):
    client, jobs = api_app
    tag = jobs.submit("tag", "tagging", lambda j: None, exclusive=False, background=False)
    http = client()
    for method, path in (("GET", ""), ("POST", "/cancel"), ("POST", "/pause"), ("POST", "/resume")):
        assert http.request(method, f"/train_lora/v1/runs/{tag.id}{path}").status_code == 404
    listed = http.get("/train_lora/v1/jobs").json()["jobs"]
    assert [j["id"] for j in listed] == [tag.id]


@pytest.mark.parametrize("body", [
    [], "text", 5, None, {"config": []}, {"config": {"dataset": 5}}, {"config": {"dataset": ["a"]}},
    {"config": {"dataset": {"train_dir": 5}}}, {"config": {"dataset": {"train_dir": ["a", "b"]}}},
    {"config": {"training": {"epochs": "many"}}}, {"config": {"training": {"epochs": 1e400}}},
    {"config": {"training": {"epochs": True}}}, {"config": {"training": {"unet_lr": "NaN"}}},
    {"config": {"output": {"output_name": "../evil"}}}, {"config": {"output": {"output_name": {"a": 1}}}},
    {"config": {"nope": {"a": 1}}}, {"config": {"dataset": {"nope": 1}}},
])
def test_start_with_wrong_types_answers_400_not_500(api_app, body):
    client, jobs = api_app
    answer = client().post("/train_lora/v1/runs", json=body)
    assert answer.status_code in (400, 422), (body, answer.status_code, answer.text[:300])
    assert not jobs.list("train")


def test_save_now_on_a_queued_run_is_refused_in_words():
    from lib_lora import train_job
    from lib_lora.config import TrainConfig
    from lib_lora.jobs import Jobs, LocalHost
    host = LocalHost()
    jobs = Jobs(host)
    host.lock.acquire()
    try:
        job = jobs.submit(train_job.KIND, "a run", lambda j: None, exclusive=True,
                          kind_state=train_job.TrainRun(TrainConfig(), host=None))
        with pytest.raises(LoraError) as err:
            train_job.save_now(job)
        assert "queued" in str(err.value) and err.value.fix
        job.cancel()
    finally:
        host.lock.release()


def test_a_second_api_start_of_a_queued_output_name_answers_409(fresh_state):
    """Before: the registry's refusal escaped the route as a 500."""
    import os

    from fastapi import FastAPI
    from fastapi.testclient import TestClient

    from lib_lora.jobs import Jobs, LocalHost
    from lib_lora.path_policy import PathPolicy
    from lib_lora.webui import api

    class QueuedHost:
        pause_frees_model = False

        def lora_folder(self, cfg):
            return os.path.join(fresh_state.root, "Lora")

    host = LocalHost()
    jobs = Jobs(host)
    app = FastAPI()
    policy = PathPolicy((fresh_state.root,), True, "the HTTP API may only use these folders")
    api.register(app, jobs, policy=lambda: policy, cmd_opts=SimpleNamespace(api=True, api_auth=None),
                 training=QueuedHost())
    http = TestClient(app, raise_server_exceptions=False)
    train_dir = os.path.join(fresh_state.root, "sets", "a")
    os.makedirs(os.path.join(train_dir, "1_a"), exist_ok=True)
    body = {"config": {"dataset": {"train_dir": train_dir}, "output": {"output_name": "twice"}}}
    host.lock.acquire()          # the first run waits for the model
    try:
        first = http.post("/train_lora/v1/runs", json=body)
        assert first.status_code == 200, first.text
        second = http.post("/train_lora/v1/runs", json=body)
        assert second.status_code == 409, second.text
        assert first.json()["run_id"] in second.json()["detail"]
        assert len(jobs.list("train")) == 1
        http.post(f"/train_lora/v1/runs/{first.json()['run_id']}/cancel")
    finally:
        host.lock.release()


@pytest.mark.parametrize("loss", [float("nan"), float("inf")])
def test_a_run_whose_loss_blew_up_does_not_break_the_listings(api_app, loss):
    """A NaN or infinite loss is no JSON number: before, every listing answered 500 while such a run was listed."""
    from lib_lora import train_job
    from lib_lora.config import TrainConfig
    client, jobs = api_app
    run = train_job.TrainRun(TrainConfig(), host=None, loss=loss)
    job = jobs.submit(train_job.KIND, "a run", lambda j: None, exclusive=False, background=False, kind_state=run)
    http = client()
    for path in ("/train_lora/v1/jobs", "/train_lora/v1/runs", f"/train_lora/v1/runs/{job.id}"):
        answer = http.get(path)
        assert answer.status_code == 200, (path, answer.status_code, answer.text[:200])
    assert http.get(f"/train_lora/v1/runs/{job.id}").json()["loss"] is None


def test_script_reload_cancels_the_rest_when_one_job_is_gone_meanwhile(fresh_state, monkeypatch):
    """A job forgotten between the listing and its cancel (a submit trimmed the ended ones) must not
    stop the callback before the other jobs are cancelled (nor land in the WebUI's error list)."""
    import os

    from lib_lora.jobs import Job
    from lib_lora.webui.host import webui_jobs
    webui, jobs = fresh_state, webui_jobs()
    going = threading.Event()

    def holds(job):
        going.set()
        while not job.should_stop():
            time.sleep(0.01)

    job = jobs.submit("grid", "grid", holds, exclusive=True)
    assert going.wait(5)
    gone = Job("tag0-gone", "tag", "a tagging job already forgotten", state="finished")
    real_list = jobs.list
    monkeypatch.setattr(jobs, "list", lambda kind=None: [gone, *real_list(kind)])
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    webui.scripts.load_scripts_from(root)
    webui.script_callbacks.script_unloaded_callback()
    monkeypatch.setattr(jobs, "list", real_list)
    _ended(job)
    assert job.state == "cancelled"


def test_cancel_while_resume_waits_for_a_generation_does_not_borrow_the_model_again(fresh_state, monkeypatch):
    """Paused, Resume pressed during a txt2img, then Cancel: once the generation ends the run stops
    without taking the user's model into a training session again (options, attention, weights)."""
    from lib_lora import train_job
    from lib_lora.webui.fingerprint import fingerprint
    from lib_lora.webui.train_host import ModelLoan
    from tests.webui.conftest import load_family
    from tests.webui.test_pause import _config, _start_paused, new_jobs
    webui = fresh_state
    sd_model = load_family(webui, "sd1")
    before = fingerprint(sd_model)
    jobs = new_jobs()
    job, _trace = _start_paused(webui, jobs, _config(webui.root, "hostile_resume", epochs=2), pause_after=2)
    borrowed, real_enter = [], ModelLoan.enter

    def counted(self):
        borrowed.append(1)
        return real_enter(self)
    monkeypatch.setattr(ModelLoan, "enter", counted)
    with webui.call_queue.queue_lock:            # a generation in progress
        train_job.resume(jobs, job)
        time.sleep(0.3)
        assert job.state == "paused"              # waiting for the queue, not running beside the generation
        job.cancel()
    _ended(job, 60)
    assert job.state == "cancelled" and not borrowed
    _webui_is_free(webui)
    assert fingerprint(sd_model) == before


def test_a_cancel_racing_the_jobs_end_never_interrupts_the_next_generation(jobs, fresh_state):
    """Cancel checks that the job still owns shared.state, then presses Interrupt: if the job lets go
    and a txt2img begins in between, the txt2img must not be the one interrupted."""
    webui = fresh_state
    real_shared, go, began = webui.shared, threading.Event(), []

    class Racing:
        """modules.shared as the hold sees it: the cancel's read of .state lets the job end and a
        txt2img begin first (the race, made certain)."""
        armed = False

        def __getattr__(self, name):
            if name == "state" and self.armed and threading.current_thread() is threading.main_thread():
                self.armed = False
                go.set()
                if webui.call_queue.queue_lock.acquire(timeout=1):     # the job let go: a txt2img starts
                    real_shared.state.begin("txt2img")
                    began.append(1)
            return getattr(real_shared, name)

    job = jobs.submit("grid", "grid", lambda j: go.wait(5), exclusive=True)
    _wait(lambda: job.state == "running" and job.hold is not None)
    racing = Racing()
    job.hold.shared = racing
    racing.armed = True
    job.cancel()
    try:
        if not began:            # the cancel kept the job's ownership until it pressed: the txt2img comes after
            _ended(job)
            assert webui.call_queue.queue_lock.acquire(timeout=2)
            real_shared.state.begin("txt2img")
        assert not real_shared.state.interrupted, "our cancel interrupted the user's txt2img"
    finally:
        real_shared.state.end()
        webui.call_queue.queue_lock.release()
    _ended(job)


def test_a_lora_folder_that_cannot_be_made_is_a_sentence_not_a_500(fresh_state, monkeypatch):
    import os

    from fastapi import FastAPI
    from fastapi.testclient import TestClient

    from lib_lora.jobs import Jobs, LocalHost
    from lib_lora.path_policy import PathPolicy
    from lib_lora.webui import api
    from lib_lora.webui.train_host import WebUITrainHost
    blocker = os.path.join(fresh_state.root, "a_file")
    with open(blocker, "w", encoding="utf-8") as f:
        f.write("not a folder")
    monkeypatch.setattr(fresh_state.shared.cmd_opts, "lora_dir", os.path.join(blocker, "Lora"))
    jobs, app = Jobs(LocalHost()), FastAPI()
    policy = PathPolicy((fresh_state.root,), True, "the HTTP API may only use these folders")
    api.register(app, jobs, policy=lambda: policy, cmd_opts=SimpleNamespace(api=True, api_auth=None),
                 training=WebUITrainHost())
    train_dir = os.path.join(fresh_state.root, "sets", "b")
    os.makedirs(os.path.join(train_dir, "1_b"), exist_ok=True)
    answer = TestClient(app, raise_server_exceptions=False).post(
        "/train_lora/v1/runs", json={"config": {"dataset": {"train_dir": train_dir}}})
    assert 400 <= answer.status_code < 500, (answer.status_code, answer.text[:300])
    assert "Lora" in answer.json()["detail"] and not jobs.list()
