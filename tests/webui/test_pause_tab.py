"""The tab's "Try this epoch" panel while a run is paused: the latest saved file rendered through
the WebUI's own processing at the grid weights beside a no-LoRA column, and the run's epochs sent
to txt2img as an X/Y/Z plot ("LoRA epoch" x "LoRA weight") that renders with those files."""
from __future__ import annotations

import csv
import io
import os
import re
import types

from tests.webui.conftest import load_family
from tests.webui.test_pause import Trace, _config, _wait, run_of, start

# the WebUI's infotext parameter syntax (modules/infotext_utils.py re_param): key: value or key: "value"
INFOTEXT_PARAM = re.compile(r'\s*(\w[\w \-/]+):\s*("(?:\\.|[^\\"])+"|[^,]*)(?:,|$)')


def _handler(blocks, elem_id: str):
    target = next(b for b in blocks.blocks.values() if getattr(b, "elem_id", None) == elem_id)._id
    deps = blocks.config["dependencies"]
    [index] = [i for i, d in enumerate(deps) if d["targets"] == [target] and d["trigger"] == "click"]
    return blocks.fns[index].fn


def _params(infotext: str) -> tuple[str, dict[str, str]]:
    *lines, last = infotext.split("\n")
    params = {k: (v[1:-1].replace('\\"', '"') if v.startswith('"') else v) for k, v in INFOTEXT_PARAM.findall(last)}
    return lines[0], params


def _csv(text: str) -> list[str]:
    return [x.strip() for row in csv.reader(io.StringIO(text)) for x in row if x.strip()]


def test_try_this_epoch_and_send_to_xyz_while_paused(fresh_state):
    from fastapi import FastAPI
    from fastapi.testclient import TestClient

    from lib_lora import train_job
    from lib_lora.webui import api, xyz_axes
    from lib_lora.webui.backend import on_ui_tabs
    from lib_lora.webui.host import webui_jobs
    webui = fresh_state
    load_family(webui, "sd1")
    [(blocks, _title, _id)] = on_ui_tabs()
    cfg = _config(webui.root, "trycat", epochs=2)
    s = cfg.sample
    s.prompts, s.grid_weights, s.steps, s.width, s.height, s.seed = ["zkcat", "zkcat smile"], [0.5, 1.0], 2, 64, 64, 5
    jobs = webui_jobs()                       # the tab's registry, which the HTTP API lists too
    trace = Trace(jobs, pause_after=5)
    with webui.call_queue.queue_lock:
        job = start(jobs, cfg, [trace.hook])
        trace.run_id = job.id
    try_render, send = _handler(blocks, "train_lora_try_render"), _handler(blocks, "train_lora_try_xyz")
    _wait(lambda: job.state in ("paused", "finished", "failed"), "the pause")
    assert job.state == "paused", job.error

    webui.processing.processed_prompts.clear()
    status, image = try_render(job.id)
    assert image and os.path.isfile(image), status
    # the render was a grid job of the tab's registry: the HTTP API lists it beside the run
    app = FastAPI()
    assert api.register(app, cmd_opts=types.SimpleNamespace(api=True, api_auth=None))
    listed = {j["id"]: j for j in TestClient(app).get("/train_lora/v1/jobs").json()["jobs"]}
    assert listed[job.id]["kind"] == "train" and listed[job.id]["state"] == "paused"
    [grid] = [j for j in listed.values() if j["title"] == "trying trycat-000001"]
    assert grid["kind"] == "grid" and grid["state"] == "finished"
    tag = "<lora:trycat-000001:{}>"
    assert webui.processing.processed_prompts == [
        "zkcat", "zkcat smile", f"zkcat {tag.format(0.5)}", f"zkcat {tag.format(1)}",
        f"zkcat smile {tag.format(0.5)}", f"zkcat smile {tag.format(1)}"]

    status, infotext = send(job.id)
    prompt, params = _params(infotext)
    assert prompt == "zkcat <lora:trycat-000001:1>", status
    assert (params["Script"], params["X Type"], params["Y Type"]) == ("X/Y/Z plot", "LoRA epoch", "LoRA weight")
    assert _csv(params["X Values"]) == ["trycat-000001"] and _csv(params["Y Values"]) == ["0.5", "1"]
    assert (params["Steps"], params["Seed"], params["Size"]) == ("2", "5", "64x64")
    # what the plot will do with those values: every cell names a saved file the Lora extension applies
    p = types.SimpleNamespace(prompt=prompt, hr_prompt="")
    xyz_axes.apply_epoch(p, _csv(params["X Values"])[0], None)
    xyz_axes.apply_weight(p, _csv(params["Y Values"])[0], None)
    assert p.prompt == f"zkcat {tag.format(0.5)}"
    plain = webui.processing.process_images(webui.processing.StableDiffusionProcessingTxt2Img(
        prompt="zkcat", steps=2, width=16, height=16, seed=5)).images[0].tobytes()
    cell = webui.processing.process_images(webui.processing.StableDiffusionProcessingTxt2Img(
        prompt=p.prompt, steps=2, width=16, height=16, seed=5)).images[0].tobytes()
    assert cell != plain and not webui.networks.unmatched_keys

    train_job.resume(jobs, job)
    _wait(lambda: job.state not in ("paused", "running", "queued"), "the end of the run")
    assert job.state == "finished", job.error
    assert [os.path.basename(f) for f in run_of(job).files] == ["trycat-000001.safetensors",
                                                                 "trycat-000002.safetensors"]
    status, _ = try_render(job.id)
    assert "not paused" in status and "Press Pause" in status
