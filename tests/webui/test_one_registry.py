"""The tab and the HTTP API share the WebUI's one job registry (lib_lora/webui/host.py webui_jobs):
a tab run and an API run started together get their own ids and both are listed and controlled from
either side; a data job started from the tab is listed by the API; reloading the scripts cancels
every job of the process."""
from __future__ import annotations

import os
import time
import types

from tests.webui.conftest import load_family
from tests.webui.test_jobs_api import _config, _dataset
from tests.webui.test_tab_paths import press


def _api():
    from fastapi import FastAPI
    from fastapi.testclient import TestClient

    from lib_lora.webui import api
    app = FastAPI()
    assert api.register(app, cmd_opts=types.SimpleNamespace(api=True, api_auth=None))   # the WebUI's registry
    return TestClient(app)


def _wait(condition, what: str, seconds: float = 60) -> None:
    deadline = time.time() + seconds
    while not condition():
        assert time.time() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def test_a_tab_run_and_an_api_run_started_in_the_same_second_are_two_runs_both_listed(fresh_state):
    from lib_lora.webui.backend import on_ui_tabs
    from lib_lora.webui.host import webui_jobs
    webui = fresh_state
    load_family(webui, "sd1")
    [(blocks, _title, _id)] = on_ui_tabs()
    http = _api()
    train_dir = _dataset(webui.root)
    body = _config(train_dir)
    body["config"]["output"]["output_name"] = "from_api"
    with webui.call_queue.queue_lock:          # a generation in progress: both runs wait, queued
        started = time.time()
        _status, tab_id, tab_state = press(blocks, "train_lora_start", train_lora_dataset_train_dir=train_dir,
                                           train_lora_output_output_name="from_tab")
        api_id = http.post("/train_lora/v1/runs", json=body).json()["run_id"]
        assert int(time.time()) - int(started) <= 1
        assert tab_id and api_id and tab_id != api_id and tab_state == "queued"
        runs = {r["run_id"]: r for r in http.get("/train_lora/v1/runs").json()["runs"]}
        assert {runs[tab_id]["output_name"], runs[api_id]["output_name"]} == {"from_tab", "from_api"}
        listed = {j["id"]: j["kind"] for j in http.get("/train_lora/v1/jobs").json()["jobs"]}
        assert listed[tab_id] == listed[api_id] == "train"
        # the tab shows and cancels the API's run; the API cancels the tab's
        assert press(blocks, "train_lora_poll", train_lora_run_id=api_id)[3] == "queued"
        press(blocks, "train_lora_cancel", train_lora_run_id=api_id)
        assert http.post(f"/train_lora/v1/runs/{tab_id}/cancel").status_code == 200
    jobs = webui_jobs()
    _wait(lambda: not jobs.get(tab_id).active and not jobs.get(api_id).active, "both runs to end")
    assert (jobs.get(tab_id).state, jobs.get(api_id).state) == ("cancelled", "cancelled")
    assert not [n for n in os.listdir(webui.shared.cmd_opts.lora_dir) if n.startswith(("from_tab", "from_api"))]


def test_the_api_lists_a_dataset_check_started_from_the_tab(fresh_state):
    from lib_lora.webui.backend import on_ui_tabs
    from lib_lora.webui.host import webui_jobs
    webui = fresh_state
    [(blocks, _title, _id)] = on_ui_tabs()
    train_dir = _dataset(webui.root)
    outputs = press(blocks, "train_lora_dataset_check", train_lora_dataset_dir=train_dir)
    job_id = next(o for o in outputs if isinstance(o, str) and o.startswith("check"))
    _wait(lambda: not webui_jobs().get(job_id).active, "the check")
    listed = {j["id"]: j for j in _api().get("/train_lora/v1/jobs").json()["jobs"]}
    assert listed[job_id]["kind"] == "check" and listed[job_id]["state"] == "finished", listed[job_id]


def test_reloading_the_scripts_cancels_every_job_of_the_process(fresh_state):
    """scripts/train_lora.py's on_script_unloaded: a queued run and a running data job are cancelled."""
    import threading
    from lib_lora import train_job
    from lib_lora.webui.host import webui_jobs
    from lib_lora.webui.train_host import WebUITrainHost
    from tests.webui.test_jobs_api import _train_config
    webui = fresh_state
    load_family(webui, "sd1")
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    webui.scripts.load_scripts_from(root)
    jobs, going = webui_jobs(), threading.Event()

    def files_only(job):
        going.set()
        while not job.should_stop():
            time.sleep(0.01)

    with webui.call_queue.queue_lock:
        run = train_job.start(jobs, WebUITrainHost(), _train_config(webui.root))
        data = jobs.submit("import", "import", files_only, exclusive=False)
        assert going.wait(10)
        webui.script_callbacks.script_unloaded_callback()
    _wait(lambda: not run.active and not data.active, "the jobs to end")
    assert (run.state, data.state) == ("cancelled", "cancelled")
