"""Pause hands the WebUI back: while a run is paused the queue is free, the model is exactly the
one the user had, generations (with the saved epochs as <lora:...>) run normally, and Resume
continues the run exactly: losses, learning rates and weights equal an uninterrupted run's."""
from __future__ import annotations

import os
import time

import numpy as np
import torch
from PIL import Image
from safetensors.torch import load_file

from lib_lora.webui.fingerprint import differences, fingerprint
from tests.webui.conftest import load_family

STEPS_PER_EPOCH = 4          # 2 images x 2 repeats, batch 1


def _dataset(root: str) -> str:
    folder = os.path.join(root, "datasets", "pause", "2_cat")
    os.makedirs(folder, exist_ok=True)
    rng = np.random.default_rng(0)
    for i in range(2):
        Image.fromarray((rng.random((64, 64, 3)) * 255).astype("uint8")).save(os.path.join(folder, f"{i}.png"))
        with open(os.path.join(folder, f"{i}.txt"), "w", encoding="utf-8") as f:
            f.write("zkcat, smile")
    return os.path.dirname(folder)


def _config(root: str, name: str, epochs: int = 3):
    from lib_lora import options
    from lib_lora.config import TrainConfig
    return options.from_dict(TrainConfig, {
        "dataset": {"train_dir": _dataset(root), "resolution": 64, "enable_bucket": False,
                    "shuffle_caption": False},
        # dropout draws from the global torch RNG, which a generation in the pause reseeds
        "network": {"dim": 4, "alpha": 4.0, "train_text_encoder": True, "dropout": 0.1},
        "training": {"epochs": epochs, "batch_size": 1, "optimizer": "AdamW", "unet_lr": 1e-2,
                     "text_encoder_lr": 1e-3, "lr_scheduler": "cosine", "lr_warmup": 0.2,
                     "mixed_precision": "no", "gradient_checkpointing": True, "sdpa": True},
        "output": {"output_name": name, "save_state": False, "tensorboard": False, "save_precision": "fp32"},
    })


def new_jobs():
    """A registry of our own on the WebUI host (the tab and the API share webui_jobs())."""
    from lib_lora.jobs import Jobs
    from lib_lora.webui.host import WebUIHost
    return Jobs(WebUIHost())


def start(jobs, cfg, hooks=(), background: bool = True):
    from lib_lora import train_job
    from lib_lora.webui.train_host import WebUITrainHost
    return train_job.start(jobs, WebUITrainHost(), cfg, hooks=list(hooks), background=background)


def run_of(job):
    from lib_lora.train_job import run_of
    return run_of(job)


class Trace:
    """The run's reported (loss, lr) per step; asks for a pause after `pause_after` steps."""

    def __init__(self, jobs=None, pause_after: int = 0):
        from lib_lora import train_job
        from lib_lora.training.hooks import TrainHooks

        class Hook(TrainHooks):
            def on_progress(hook, p):
                self.steps.append((p.step, p.loss, p.lr))
                if p.step == pause_after and self.run_id:
                    train_job.pause(jobs.get(self.run_id))
        self.steps, self.run_id, self.hook = [], "", Hook()


def _wait(condition, what: str, seconds: float = 300):
    deadline = time.time() + seconds
    while not condition():
        assert time.time() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def _generate(webui, prompt: str) -> bytes:
    p = webui.processing.StableDiffusionProcessingTxt2Img(prompt=prompt, steps=2, width=16, height=16, seed=3)
    return webui.processing.process_images(p).images[0].tobytes()


def _start_paused(webui, jobs, cfg, pause_after: int):
    """Start a run that asks for a pause after `pause_after` steps; returns once it is paused."""
    trace = Trace(jobs, pause_after)
    with webui.call_queue.queue_lock:         # the run waits, so its id is known before its first step
        job = start(jobs, cfg, [trace.hook])
        trace.run_id = job.id
    _wait(lambda: job.state in ("paused", "finished", "failed"), "the pause")
    assert job.state == "paused", job.error
    return job, trace


def _tensors(path: str) -> dict:
    return load_file(path)


def test_pause_frees_the_webui_and_resume_equals_the_uninterrupted_run(fresh_state):
    from lib_lora import train_job
    webui = fresh_state
    sd_model = load_family(webui, "sd1")
    lora_dir = webui.shared.cmd_opts.lora_dir
    before, plain_before = fingerprint(sd_model), _generate(webui, "zkcat")
    clip_skip_before = webui.shared.opts.CLIP_stop_at_last_layers

    straight, jobs = Trace(), new_jobs()
    done = start(jobs, _config(webui.root, "straight"), [straight.hook], background=False)
    assert done.state == "finished", done.error

    job, paused = _start_paused(webui, jobs, _config(webui.root, "paused"), pause_after=STEPS_PER_EPOCH + 1)
    # the WebUI is free: nobody holds the queue, and the model is exactly the user's
    assert webui.call_queue.queue_lock.acquire(blocking=False), "the paused run still holds the queue lock"
    webui.call_queue.queue_lock.release()
    assert differences(before, fingerprint(sd_model)) == []
    assert webui.shared.opts.CLIP_stop_at_last_layers == clip_skip_before
    assert train_job.run_dict(job)["paused"] is True and run_of(job).step == STEPS_PER_EPOCH + 1
    # a generation runs through the WebUI's queue as txt2img does, and equals one before the run
    assert webui.call_queue.wrap_queued_call(_generate)(webui, "zkcat") == plain_before
    # the saved epoch and a "Save now" file are LoRAs the WebUI lists and applies
    train_job.save_now(job)
    _wait(lambda: any("-step" in f for f in run_of(job).files), "the save-now file")
    assert {"paused-000001", f"paused-step{STEPS_PER_EPOCH + 1:08d}"} <= set(webui.networks.available_networks)
    assert _generate(webui, "zkcat <lora:paused-000001:1>") != plain_before
    assert _generate(webui, f"zkcat <lora:paused-step{STEPS_PER_EPOCH + 1:08d}:1>") != plain_before
    torch.manual_seed(999)   # as the WebUI's own generations do (modules/rng.py seeds the global RNG)

    train_job.resume(jobs, job)
    _wait(lambda: job.state not in ("paused", "running", "queued"), "the end of the resumed run")
    assert job.state == "finished", job.error
    assert paused.steps == straight.steps           # losses and learning rates, bit for bit
    for epoch in (2, 3):
        a = _tensors(os.path.join(lora_dir, f"straight-00000{epoch}.safetensors"))
        b = _tensors(os.path.join(lora_dir, f"paused-00000{epoch}.safetensors"))
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), f"epoch {epoch} differs"
    assert differences(before, fingerprint(sd_model)) == []
    assert _generate(webui, "zkcat") == plain_before


def test_resume_on_another_checkpoint_is_refused_and_the_run_stays_paused(fresh_state):
    from lib_lora import train_job
    webui = fresh_state
    sd_model = load_family(webui, "sd1")
    before = fingerprint(sd_model)
    jobs = new_jobs()
    job, _ = _start_paused(webui, jobs, _config(webui.root, "other", epochs=1), pause_after=2)
    started_on = sd_model.sd_checkpoint_info
    # the WebUI loads another checkpoint of the same kind: new weights into the same model object
    other = webui.sd_models.CheckpointInfo(os.path.join(webui.sd_models.model_path, "another.safetensors"))
    weight = sd_model.model.diffusion_model.out[2].weight
    kept = weight.detach().clone()
    with torch.no_grad():
        weight.add_(0.5)
    sd_model.sd_checkpoint_info = other
    train_job.resume(jobs, job)
    _wait(lambda: run_of(job).notice, "the refusal")
    assert job.state == "paused" and job.pause_requested
    assert f"load {started_on.title} again" in run_of(job).notice
    assert f"python -m lib_lora train --resume \"{webui.shared.cmd_opts.lora_dir}\"" in run_of(job).notice
    assert os.path.isfile(os.path.join(webui.shared.cmd_opts.lora_dir, "state", "other.state"))
    assert webui.call_queue.queue_lock.acquire(blocking=False)
    webui.call_queue.queue_lock.release()
    # the user loads the run's checkpoint again: now it resumes and finishes
    with torch.no_grad():
        weight.copy_(kept)
    sd_model.sd_checkpoint_info = started_on
    train_job.resume(jobs, job)
    _wait(lambda: job.state not in ("paused", "running", "queued"), "the end of the run")
    assert job.state == "finished" and run_of(job).notice == "", job.error
    assert differences(before, fingerprint(sd_model)) == []


def test_a_run_paused_too_long_lets_go_and_resumes_from_its_state(fresh_state):
    from lib_lora import train_job
    webui = fresh_state
    load_family(webui, "sd1")
    webui.shared.opts.train_lora_pause_minutes = 0.0005          # 30 ms
    try:
        jobs = new_jobs()
        job, _ = _start_paused(webui, jobs, _config(webui.root, "long", epochs=1), pause_after=2)
        _wait(lambda: run_of(job).gate is None, "the run to let go")
    finally:
        webui.shared.opts.train_lora_pause_minutes = 30
    assert job.state == "paused" and run_of(job).stopped_reason == "paused" and "memory" in run_of(job).notice
    train_job.resume(jobs, job)
    _wait(lambda: job.state not in ("paused", "running", "queued"), "the end of the resumed run")
    assert job.state == "finished", job.error
    assert run_of(job).step == STEPS_PER_EPOCH
    assert [os.path.basename(f) for f in run_of(job).files] == ["long-000001.safetensors"]


def test_after_another_kind_of_model_the_run_goes_on_from_its_saved_state(fresh_state):
    """Loading a model of another kind replaces the model object: loading the run's checkpoint
    again builds a new one, which the paused network's layers are not part of. Resume then goes on
    from the state saved at the pause, on the model it started on."""
    from lib_lora import train_job
    webui = fresh_state
    load_family(webui, "sd1")
    jobs = new_jobs()
    job, _ = _start_paused(webui, jobs, _config(webui.root, "kinds", epochs=1), pause_after=2)
    try:
        load_family(webui, "sd2")
        train_job.resume(jobs, job)
        _wait(lambda: run_of(job).notice, "the refusal")
        assert job.state == "paused" and "tiny-sd2" in run_of(job).notice and "load tiny-sd1" in run_of(job).notice
        rebuilt = load_family(webui, "sd1")
        before = fingerprint(rebuilt)
        train_job.resume(jobs, job)
        _wait(lambda: job.state not in ("paused", "running", "queued"), "the end of the run")
    finally:
        load_family(webui, "sd1")
    assert job.state == "finished" and run_of(job).step == STEPS_PER_EPOCH, job.error
    assert [os.path.basename(f) for f in run_of(job).files] == ["kinds-000001.safetensors"]
    assert differences(before, fingerprint(rebuilt)) == []


def test_a_model_that_cannot_train_now_keeps_the_run_paused(fresh_state):
    """The user turned on FP8 weights during the pause: Resume says why it cannot go on and the run
    stays paused (resumable), instead of failing."""
    from lib_lora import train_job
    webui = fresh_state
    load_family(webui, "sd1")
    jobs = new_jobs()
    job, _ = _start_paused(webui, jobs, _config(webui.root, "fp8", epochs=1), pause_after=2)
    webui.devices.fp8 = True
    try:
        train_job.resume(jobs, job)
        _wait(lambda: run_of(job).notice, "the refusal")
    finally:
        webui.devices.fp8 = False
    notice = run_of(job).notice
    assert job.state == "paused" and "FP8" in notice and "python -m lib_lora train --resume" in notice
    assert webui.call_queue.queue_lock.acquire(blocking=False)
    webui.call_queue.queue_lock.release()
    train_job.resume(jobs, job)
    _wait(lambda: job.state not in ("paused", "running", "queued"), "the end of the run")
    assert job.state == "finished" and run_of(job).step == STEPS_PER_EPOCH, job.error
