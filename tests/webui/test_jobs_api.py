"""A run started over the HTTP API trains on the loaded model, reports through shared.state,
writes epochs into the Lora folder, and leaves the model exactly as it was; the WebUI's Interrupt
and our cancel stop a running run mid-epoch, and a cancelled queued run never starts."""
from __future__ import annotations

import os
import threading
import time
from types import SimpleNamespace

import numpy as np
import pytest
from PIL import Image

from lib_lora.webui.fingerprint import differences, fingerprint
from tests.webui.conftest import load_family


def _dataset(root: str) -> str:
    folder = os.path.join(root, "datasets", "cat", "2_cat")
    os.makedirs(folder, exist_ok=True)
    rng = np.random.default_rng(0)
    for i in range(2):
        pixels = (rng.random((64, 64, 3)) * 255).astype("uint8")
        Image.fromarray(pixels).save(os.path.join(folder, f"{i}.png"))
        with open(os.path.join(folder, f"{i}.txt"), "w", encoding="utf-8") as f:
            f.write("zkcat, shimakaze (azur lane), smile")
    return os.path.dirname(folder)


def _config(train_dir: str) -> dict:
    return {"config": {
        "dataset": {"train_dir": train_dir, "resolution": 64, "enable_bucket": False, "shuffle_caption": False},
        "network": {"dim": 4, "alpha": 4.0, "train_text_encoder": True},
        "training": {"epochs": 2, "batch_size": 1, "optimizer": "AdamW", "unet_lr": 1e-2,
                     "text_encoder_lr": 1e-3, "lr_scheduler": "constant", "lr_warmup": 0.0,
                     "mixed_precision": "no", "min_snr_gamma": 0.0, "gradient_checkpointing": True},
        "output": {"output_name": "apicat", "save_state": True, "tensorboard": False},
    }}


@pytest.fixture()
def client(fresh_state):
    from fastapi import FastAPI
    from fastapi.testclient import TestClient

    from lib_lora.jobs import Jobs
    from lib_lora.path_policy import PathPolicy
    from lib_lora.webui import api
    from lib_lora.webui.host import WebUIHost
    app = FastAPI()
    jobs = Jobs(WebUIHost())
    policy = PathPolicy((fresh_state.root,), True, "the HTTP API may only use these folders")
    assert api.register(app, jobs, policy=lambda: policy, cmd_opts=SimpleNamespace(api=True, api_auth=None))
    return TestClient(app), jobs


def test_api_trains_on_the_loaded_model_and_gives_it_back(client, fresh_state):
    http, manager = client
    webui = fresh_state
    sd_model = load_family(webui, "sd1")
    before = fingerprint(sd_model)
    webui.networks.available_networks.clear()
    started = http.post("/train_lora/v1/runs", json=_config(_dataset(webui.root)))
    assert started.status_code == 200, started.text
    run_id = started.json()["run_id"]
    deadline = time.time() + 120
    while http.get(f"/train_lora/v1/runs/{run_id}").json()["state"] in ("queued", "running"):
        assert time.time() < deadline
        time.sleep(0.2)
    status = http.get(f"/train_lora/v1/runs/{run_id}").json()
    assert status["state"] == "finished", status
    assert status["epoch"] == 2 and status["step"] == status["total_steps"] > 0
    names = sorted(os.path.basename(f) for f in status["files"])
    assert names and all(os.path.dirname(f) == webui.shared.cmd_opts.lora_dir for f in status["files"])
    assert differences(before, fingerprint(sd_model)) == []
    assert [r["run_id"] for r in http.get("/train_lora/v1/runs").json()["runs"]] == [run_id]
    [job] = http.get("/train_lora/v1/jobs").json()["jobs"]
    assert (job["id"], job["kind"], job["state"], job["output_name"]) == (run_id, "train", "finished", "apicat")
    # listed at once (Lora tab, /sdapi/v1/loras), not only after the user presses refresh; the
    # resume state saved beside them is no LoRA and must not be listed as one
    assert {os.path.splitext(n)[0] for n in names} == set(webui.networks.available_networks)
    # the epoch file loads through the (stand-in) built-in Lora with every key matched
    # and changes the image
    stem = os.path.splitext(names[-1])[0]
    plain, with_lora = _generate(webui, "zkcat"), _generate(webui, f"zkcat <lora:{stem}:1>")
    assert not webui.networks.unmatched_keys and plain != with_lora


def _generate(webui, prompt):
    p = webui.processing.StableDiffusionProcessingTxt2Img(prompt=prompt, steps=2, width=16, height=16, seed=1)
    return webui.processing.process_images(p).images[0].tobytes()


@pytest.mark.parametrize("field, value", [("train_dir", "/etc"), ("train_dir", "../../..")])
def test_paths_outside_the_roots_are_rejected(client, field, value):
    http, _ = client
    body = {"config": {"dataset": {field: value}}}
    response = http.post("/train_lora/v1/runs", json=body)
    assert response.status_code == 400 and "outside the allowed folders" in response.json()["detail"]


def test_bad_output_name_and_unknown_run(client, fresh_state):
    http, _ = client
    body = _config(_dataset(fresh_state.root))
    body["config"]["output"]["output_name"] = "../evil"
    assert http.post("/train_lora/v1/runs", json=body).status_code == 400
    assert http.get("/train_lora/v1/runs/nope").status_code == 404
    assert http.post("/train_lora/v1/runs/nope/cancel").status_code == 404


def _train_config(root: str, **training):
    from lib_lora import options
    from lib_lora.config import TrainConfig
    cfg = options.from_dict(TrainConfig, _config(_dataset(root))["config"])
    for key, value in training.items():
        setattr(cfg.training, key, value)
    return cfg


def _wait_ended(job, seconds: float = 120) -> None:
    deadline = time.time() + seconds
    while job.active:
        assert time.time() < deadline, f"the run is still {job.state}"
        time.sleep(0.05)


def test_cancel_of_a_queued_run_never_starts_it(fresh_state):
    from lib_lora import train_job
    from lib_lora.jobs import Jobs
    from lib_lora.webui.host import WebUIHost
    from lib_lora.webui.train_host import WebUITrainHost
    webui = fresh_state
    load_family(webui, "sd1")
    cfg = _train_config(webui.root)
    cfg.output.output_name = "neverran"
    with webui.call_queue.queue_lock:          # a generation in progress: the run waits
        job = train_job.start(Jobs(WebUIHost()), WebUITrainHost(), cfg)
        time.sleep(0.1)
        assert job.state == "queued"
        job.cancel()
    _wait_ended(job)
    assert job.state == "cancelled" and train_job.run_of(job).step == 0
    assert not [n for n in os.listdir(webui.shared.cmd_opts.lora_dir) if n.startswith("neverran")]


@pytest.mark.parametrize("stop_by", ["webui_interrupt", "api_cancel"])
def test_a_running_run_stops_mid_epoch_and_gives_the_model_back(client, fresh_state, stop_by):
    """The WebUI's Interrupt button (shared.state.interrupt) or our cancel, pressed while the run trains,
    stops it after the current step, inside its first epoch; the model comes back bit for bit."""
    from lib_lora import train_job
    from lib_lora.training.hooks import TrainHooks
    http, jobs = client
    webui = fresh_state
    sd_model = load_family(webui, "sd1")
    _generate(webui, "zkcat")          # no <lora:...> merged into the weights by an earlier test's generation
    before = fingerprint(sd_model)
    reached, pressed = threading.Event(), threading.Event()

    class HoldAtStep2(TrainHooks):
        def on_progress(self, p):
            if p.step == 2:
                reached.set()
                pressed.wait(30)

    body = _config(_dataset(webui.root))
    body["config"]["output"]["output_name"] = f"stopped_{stop_by}"
    with webui.call_queue.queue_lock:         # queued until the hook is in
        run_id = http.post("/train_lora/v1/runs", json=body).json()["run_id"]
        job = jobs.get(run_id)
        train_job.run_of(job).hooks.append(HoldAtStep2())
    assert reached.wait(120), job.error
    assert job.state == "running"
    if stop_by == "webui_interrupt":
        webui.shared.state.interrupt()
    else:
        assert http.post(f"/train_lora/v1/runs/{run_id}/cancel").status_code == 200
    pressed.set()
    _wait_ended(job)
    status = http.get(f"/train_lora/v1/runs/{run_id}").json()
    assert status["state"] == "cancelled" and status["stopped_reason"] == "cancelled", status
    assert status["step"] == 2 and status["epoch"] == 1 and status["total_steps"] == 8 and status["files"] == []
    assert differences(before, fingerprint(sd_model)) == []
    assert webui.call_queue.queue_lock.acquire(blocking=False), "the stopped run still holds the queue"
    webui.call_queue.queue_lock.release()


def test_start_takes_hooks_samples_from_the_borrowed_model_and_the_task_id(fresh_state):
    """What the tab passes: its WebUI progress task (started and finished by the run), more hooks;
    the run renders its samples with the model it borrowed and the tab's view lists them."""
    from lib_lora import train_job
    from lib_lora.jobs import Jobs
    from lib_lora.training.hooks import TrainHooks
    from lib_lora.webui.host import WebUIHost
    from lib_lora.webui.train_host import WebUITrainHost
    from modules import progress
    webui = fresh_state
    load_family(webui, "sd1")
    cfg = _train_config(webui.root, max_train_steps=1, epochs=1)
    cfg.sample.every_n_epochs, cfg.sample.prompts, cfg.sample.steps = 1, ["zkcat"], 2
    cfg.sample.width = cfg.sample.height = 64

    class Seen(TrainHooks):
        plans = []

        def on_plan(self, plan):
            self.plans.append(plan.total_steps)

    job = train_job.start(Jobs(WebUIHost()), WebUITrainHost(), cfg, task_id="task(train1)", hooks=[Seen()],
                          background=False)
    run = train_job.run_of(job)
    assert job.state == "finished", job.error
    assert Seen.plans == [1] and [epoch for epoch, _ in run.samples] == [1]
    assert all(os.path.isfile(path) for _, path in run.samples)
    assert "task(train1)" in progress.finished_tasks and "task(train1)" not in progress.pending_tasks
