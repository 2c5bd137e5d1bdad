"""POST /train_lora/v1/runs/{id}/pause and /resume, and `paused` in a run's state: a paused run
holds neither the WebUI's queue nor its model, and resumes to the end. (That the two routes ask for
the same credentials as the others is covered by test_api_auth, which enumerates every route.)"""
from __future__ import annotations

import time
from types import SimpleNamespace

from tests.webui.conftest import load_family
from tests.webui.test_jobs_api import _config, _dataset


def _wait_state(http, run_id: str, condition, what: str) -> dict:
    deadline = time.time() + 300
    while not condition(status := http.get(f"/train_lora/v1/runs/{run_id}").json()):
        assert time.time() < deadline, f"timed out waiting for {what}: {status}"
        time.sleep(0.05)
    return status


def test_pause_and_resume_over_http(fresh_state):
    from fastapi import FastAPI
    from fastapi.testclient import TestClient

    from lib_lora.path_policy import PathPolicy
    from lib_lora.webui import api
    from tests.webui.test_pause import new_jobs
    webui = fresh_state
    load_family(webui, "sd1")
    app = FastAPI()
    policy = PathPolicy((webui.root,), True, "the HTTP API may only use these folders")
    assert api.register(app, new_jobs(), policy=lambda: policy, cmd_opts=SimpleNamespace(api=True, api_auth=None))
    http = TestClient(app)
    body = _config(_dataset(webui.root))
    body["config"]["output"]["output_name"] = "httppause"
    with webui.call_queue.queue_lock:          # queued: the pause is taken before its first step
        run_id = http.post("/train_lora/v1/runs", json=body).json()["run_id"]
        asked = http.post(f"/train_lora/v1/runs/{run_id}/pause")
        assert asked.status_code == 200 and asked.json()["pause_requested"] is True, asked.text
    paused = _wait_state(http, run_id, lambda s: s["paused"] or s["state"] in ("finished", "failed"), "the pause")
    assert paused["state"] == "paused" and paused["paused"] is True and paused["step"] == 0, paused
    assert webui.call_queue.queue_lock.acquire(blocking=False), "a paused run must not hold the queue"
    webui.call_queue.queue_lock.release()

    resumed = http.post(f"/train_lora/v1/runs/{run_id}/resume")
    assert resumed.status_code == 200 and resumed.json()["pause_requested"] is False
    done = _wait_state(http, run_id, lambda s: s["state"] not in ("queued", "running", "paused"), "the end")
    assert done["state"] == "finished" and done["paused"] is False and done["step"] == done["total_steps"] > 0
    again = http.post(f"/train_lora/v1/runs/{run_id}/pause")
    assert again.status_code == 409 and "finished" in again.json()["detail"]
    assert http.post(f"/train_lora/v1/runs/{run_id}/resume").status_code == 409
    assert http.post("/train_lora/v1/runs/nope/pause").status_code == 404


def _api(webui):
    from fastapi import FastAPI
    from fastapi.testclient import TestClient

    from lib_lora.path_policy import PathPolicy
    from lib_lora.webui import api
    from tests.webui.test_pause import new_jobs
    app, jobs = FastAPI(), new_jobs()
    policy = PathPolicy((webui.root,), True, "the HTTP API may only use these folders")
    assert api.register(app, jobs, policy=lambda: policy, cmd_opts=SimpleNamespace(api=True, api_auth=None))
    return TestClient(app), jobs


def test_cancel_while_paused_ends_the_run_and_keeps_the_webui_free(fresh_state):
    """Cancel of a run paused in memory wakes it and ends it; cancel of one that let go of its memory
    (paused too long) ends it at once. Either way the model is the user's, bit for bit."""
    from lib_lora.webui.fingerprint import differences, fingerprint
    webui = fresh_state
    sd_model = load_family(webui, "sd1")
    before = fingerprint(sd_model)
    http, _ = _api(webui)
    try:
        ids = [_cancel_paused(webui, http, name, minutes) for name, minutes in (("cancelpaused", 30),
                                                                               ("cancelexpired", 0.0005))]
    finally:
        webui.shared.opts.train_lora_pause_minutes = 30
    assert differences(before, fingerprint(sd_model)) == []
    assert webui.call_queue.queue_lock.acquire(blocking=False)
    webui.call_queue.queue_lock.release()
    assert {j["id"]: j["state"] for j in http.get("/train_lora/v1/jobs").json()["jobs"]} == \
        {ids[0]: "cancelled", ids[1]: "cancelled"}


def _cancel_paused(webui, http, name: str, minutes: float) -> str:
    webui.shared.opts.train_lora_pause_minutes = minutes
    body = _config(_dataset(webui.root))
    body["config"]["output"]["output_name"] = name
    with webui.call_queue.queue_lock:
        run_id = http.post("/train_lora/v1/runs", json=body).json()["run_id"]
        assert http.post(f"/train_lora/v1/runs/{run_id}/pause").status_code == 200
    _wait_state(http, run_id, lambda s: s["paused"] and (minutes > 1 or s["stopped_reason"] == "paused"),
                "the pause")
    cancelled = http.post(f"/train_lora/v1/runs/{run_id}/cancel")
    assert cancelled.status_code == 200, cancelled.text
    done = _wait_state(http, run_id, lambda s: s["state"] not in ("queued", "running", "paused"), "the end")
    assert done["state"] == "cancelled" and done["step"] == 0, done
    return run_id
