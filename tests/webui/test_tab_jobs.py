"""The tab's long actions as jobs, through the built tab in the WebUI stand-in (handlers found by their
button's elem_id, called with the components' own values): the Tools run as jobs with progress and
Cancel and show only their own output; their forms are their configs; tagging waits for the WebUI's
queue lock like a generation; so does a grid, which Cancel stops while it waits; merge and resize run
from their typed forms."""
from __future__ import annotations

import dataclasses
import os
import re
import sys
import threading
import time
import types
from pathlib import Path

import pytest
import torch
from PIL import Image
from safetensors.torch import load_file, save_file

from lib_lora.ops.config import ExtractConfig, MergeConfig, ResizeConfig
from lib_lora.ops.report import report_paths
from tests.webui.test_tab_paths import press

ACTIVE = ("queued", "running", "paused")


@pytest.fixture()
def tab(webui, tmp_path):
    """The WebUI tab on the WebUI backend, a dataset of one red image, and a changed tiny checkpoint pair."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "ops"))
    try:
        from ops_fixtures import ATTN_K2, ATTN_Q, PROJ_IN, low_rank, save, tiny_sd1
    finally:
        sys.path.pop(0)
    from lib_lora.webui.backend import on_ui_tabs
    dataset = Path(webui.root, "train_lora", "datasets", "jobs", "10_cat")
    dataset.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (64, 64), (220, 30, 20)).save(dataset / "a.png")
    tools = Path(webui.shared.cmd_opts.lora_dir, f"tools-{tmp_path.name}")
    tools.mkdir(parents=True)
    base = tiny_sd1()
    tuned = {k: v.clone() for k, v in base.items()}
    for i, name in enumerate((ATTN_Q, ATTN_K2, PROJ_IN)):
        tuned[name] += low_rank(tuple(base[name].shape), 2, seed=i)
    save(tools / "base.safetensors", base)
    save(tools / "tuned.safetensors", tuned)
    [(blocks, _title, _id)] = on_ui_tabs()
    yield types.SimpleNamespace(blocks=blocks, dataset=str(dataset.parent), tools=tools, webui=webui)


def _extract(tab, out: Path, task: str = "") -> list:
    return press(tab.blocks, "train_lora_extract_button", train_lora_tools_task=task,
                 train_lora_extract_base=str(tab.tools / "base.safetensors"),
                 train_lora_extract_tuned=str(tab.tools / "tuned.safetensors"), train_lora_extract_out=str(out))


def _poll(tab, section: str, job_id: str) -> list:
    """What the section's hidden poll button brings: [status, *outputs, job state]."""
    return press(tab.blocks, f"train_lora_{section}_poll", **{f"train_lora_{section}_job": job_id})


def _poll_until_ended(tab, section: str, job_id: str, timeout: float = 60) -> list:
    deadline = time.monotonic() + timeout
    while True:
        outputs = _poll(tab, section, job_id)
        if outputs[-1] not in ACTIVE or time.monotonic() > deadline:
            return outputs
        time.sleep(0.05)


def test_a_tools_extract_is_a_job_with_progress_and_cancel_that_does_not_wait_for_the_webui(tab, monkeypatch):
    from lib_lora.ops import extract
    reached, go = threading.Event(), threading.Event()
    calls = []
    real_layer = extract.extract_layer

    def slow_layer(*args, **kwargs):             # hold the tool inside its second layer until the test says
        calls.append(1)
        if len(calls) == 2:
            reached.set()
            go.wait(30)
        return real_layer(*args, **kwargs)
    monkeypatch.setattr(extract, "extract_layer", slow_layer)
    out = tab.tools / "cancelled.safetensors"
    with tab.webui.call_queue.queue_lock:        # a generation runs: a CPU tool does not wait for it
        status, job_id, state, _task, log = _extract(tab, out, task="task(extract_cancel)")
        assert "Extract started" in status and state in ACTIVE and log == ""
        assert reached.wait(30), "the extract did not start while the WebUI was busy"
    status, _log, state = _poll(tab, "tools", job_id)
    done = re.search(r" (\d+)/(\d+) ", status)
    assert state == "running" and done and 0 < int(done.groups()[0]) < int(done.groups()[1]), status
    assert "Stopping" in press(tab.blocks, "train_lora_tools_cancel", train_lora_tools_job=job_id)[0]
    go.set()
    status, log, state = _poll_until_ended(tab, "tools", job_id)
    assert state == "cancelled" and "was cancelled" in status, status
    assert len(calls) == 2                       # stopped before the next layer
    assert not out.exists() and not any(p.exists() for p in report_paths(out))
    assert "Nothing is running" in press(tab.blocks, "train_lora_tools_cancel", train_lora_tools_job=job_id)[0]


def test_a_tools_log_holds_the_tools_own_result_not_what_other_threads_print(tab):
    stop = threading.Event()

    def chatter():                               # another part of the WebUI printing while the tool runs
        while not stop.is_set():
            print("NOISE from another thread", flush=True)
            time.sleep(0.001)
    noisy = threading.Thread(target=chatter, daemon=True)
    noisy.start()
    out = tab.tools / "extracted.safetensors"
    try:
        _status, job_id, _state, _task, _log = _extract(tab, out)
        status, log, state = _poll_until_ended(tab, "tools", job_id)
    finally:
        stop.set()
        noisy.join()
    assert state == "finished", status
    assert "Extract done" in status and f"wrote {out}" in log and "NOISE" not in log
    assert "overall" in log.lower() or "rel.err" in log          # the report's table
    tensors = load_file(str(out))
    assert any(k.endswith("lora_down.weight") for k in tensors) and all(p.exists() for p in report_paths(out))
    assert tensors[next(k for k in tensors if k.endswith("lora_down.weight"))].dtype == torch.float16


@pytest.mark.parametrize("kind, config", [("extract", ExtractConfig), ("merge", MergeConfig),
                                          ("resize", ResizeConfig)])
def test_the_tools_forms_show_every_option_of_their_config_at_its_default(tab, kind, config):
    components = {getattr(b, "elem_id", None): b for b in tab.blocks.blocks.values()}
    for field in dataclasses.fields(config):
        default = field.default if field.default is not dataclasses.MISSING else field.default_factory()
        component = components.get(f"train_lora_{kind}_{field.name}")
        assert component is not None, f"{config.__name__}.{field.name} is not in the {kind} form"
        if isinstance(default, list):
            assert default == [] and component.value == "", field.name      # a list is edited as text
        elif isinstance(default, bool):
            assert component.value is default, field.name
        else:
            assert component.value == default and type(component.value) in (type(default), float), field.name


def test_tagging_waits_for_the_webuis_queue_lock_held_by_a_generation(tab, tmp_path):
    from modules import progress
    from tests.fixtures.data.wd14_model import build_model
    model = build_model(Path(tab.webui.root, "models", "wd14_tagger", f"tiny-{tmp_path.name}"), size=64)
    caption = Path(tab.dataset, "10_cat", "a.txt")
    with tab.webui.call_queue.queue_lock:                # a generation is running
        status, job_id, state, task = press(
            tab.blocks, "train_lora_tag_button", train_lora_tagjob_task="task(tag_waits)",
            train_lora_dataset_dir=tab.dataset, train_lora_tagger_model=str(model))
        assert "Tagging with WD14" in status and task == "task(tag_waits)"
        assert "task(tag_waits)" in progress.pending_tasks     # the page's progress bar shows it queued
        time.sleep(0.5)
        status, _summary, _gallery, state = _poll(tab, "tagjob", job_id)
        assert state == "queued" and "waiting for the WebUI" in status, status
        assert not caption.exists()
    status, summary, _gallery, state = _poll_until_ended(tab, "tagjob", job_id)
    assert state == "finished" and "Tagged 1 images" in status, status
    assert "hatsune miku" in caption.read_text(encoding="utf-8") and "hatsune miku" in summary
    assert "task(tag_waits)" in progress.finished_tasks and os.path.isfile(caption)


def _lora(rank: int, seed: int, key: str = "lora_unet_mid_block_attentions_0_proj_in") -> dict:
    g = torch.Generator().manual_seed(seed)
    return {f"{key}.lora_down.weight": torch.randn(rank, 32, 1, 1, generator=g) * 0.1,
            f"{key}.lora_up.weight": torch.randn(32, rank, 1, 1, generator=g) * 0.1,
            f"{key}.alpha": torch.tensor(float(rank))}


def test_tools_merge_and_resize_run_as_jobs_from_their_typed_forms(tab):
    a, b = tab.tools / "a.safetensors", tab.tools / "b.safetensors"
    save_file(_lora(4, 1), str(a))
    save_file(_lora(4, 2), str(b))
    merged = tab.tools / "merged.safetensors"
    _status, job_id, _state, _task, _log = press(
        tab.blocks, "train_lora_merge_button", train_lora_merge_loras=f"{a}\n{b}", train_lora_merge_out=str(merged),
        train_lora_merge_mode="concat", train_lora_merge_weights="1, 0.5", train_lora_merge_precision="fp32")
    status, log, state = _poll_until_ended(tab, "tools", job_id)
    assert state == "finished" and "Merge done" in status and f"wrote {merged}" in log, status
    key = "lora_unet_mid_block_attentions_0_proj_in"
    assert load_file(str(merged))[f"{key}.lora_down.weight"].shape[0] == 8        # ranks concatenated

    resized = tab.tools / "resized.safetensors"
    _status, job_id, _state, _task, _log = press(
        tab.blocks, "train_lora_resize_button", train_lora_resize_in=str(merged), train_lora_resize_out=str(resized),
        train_lora_resize_dim=2)
    status, log, state = _poll_until_ended(tab, "tools", job_id)
    assert state == "finished" and "Resize done" in status, status
    assert load_file(str(resized))[f"{key}.lora_down.weight"].shape[0] == 2

    status = press(tab.blocks, "train_lora_merge_button", train_lora_merge_loras=str(a),
                   train_lora_merge_out=str(tab.tools / "m2.safetensors"))[0]       # mode checkpoint, no checkpoint
    assert "needs the checkpoint" in status


def test_a_grid_is_a_job_that_waits_for_the_webuis_queue_and_can_be_cancelled_there(tab, tmp_path):
    from modules import progress
    from tests.webui.conftest import load_family
    load_family(tab.webui, "sd1")
    name = "gridjob" + re.sub(r"\W", "", tmp_path.name)[-4:]
    lora_dir = Path(tab.webui.shared.cmd_opts.lora_dir)
    for epoch in (1, 2):      # epochs the Lora extension cannot apply to the tiny model: only their names matter
        save_file(_lora(2, epoch, key="lora_unet_not_in_the_model"), str(lora_dir / f"{name}-{epoch:06d}.safetensors"))
    fields = dict(train_lora_eval_run=name, train_lora_eval_prompts="zkcat", train_lora_eval_grid_weights="1.0",
                  train_lora_eval_width=64, train_lora_eval_height=64, train_lora_eval_steps=2)
    tab.webui.processing.processed_prompts.clear()
    with tab.webui.call_queue.queue_lock:                 # a generation is running
        status, job_id, state, task, _image = press(tab.blocks, "train_lora_grid_button",
                                                    train_lora_grid_task="task(grid_cancel)", **fields)
        assert "Drawing 2 epochs" in status and task == "task(grid_cancel)"
        time.sleep(0.3)
        assert _poll(tab, "grid", job_id)[-1] == "queued"
        assert "Stopping" in press(tab.blocks, "train_lora_grid_cancel", train_lora_grid_job=job_id)[0]
        assert not tab.webui.shared.state.interrupted    # the generation is not interrupted by our Cancel
    status, image, state = _poll_until_ended(tab, "grid", job_id)
    assert state == "cancelled" and not tab.webui.processing.processed_prompts

    with tab.webui.call_queue.queue_lock:
        _status, job_id, _state, _task, _image = press(tab.blocks, "train_lora_grid_button",
                                                       train_lora_grid_task="task(grid_draws)", **fields)
        time.sleep(0.3)
        assert _poll(tab, "grid", job_id)[-1] == "queued" and not tab.webui.processing.processed_prompts
    status, image, state = _poll_until_ended(tab, "grid", job_id)
    assert state == "finished" and "Grid saved" in status and os.path.isfile(image), status
    assert tab.webui.processing.processed_prompts == ["zkcat", f"zkcat <lora:{name}-000001:1>",
                                                      f"zkcat <lora:{name}-000002:1>"]
    assert "task(grid_draws)" in progress.finished_tasks and tab.webui.shared.state.job == ""
    tab.webui.networks.unmatched_keys.clear()
