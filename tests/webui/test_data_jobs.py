"""Dataset actions inside the WebUI stand-in: its DeepDanbooru/BLIP as captioners, its upscalers for prep,
and check/import/prep/tag as jobs of the one registry with progress, the WebUI's queue and progress protocol
(the WebUI host, lib_lora/webui/host.py) for the GPU users, and cancel."""
from __future__ import annotations

import threading
import time
import types

import pytest
import torch
from PIL import Image

from lib_lora.config import PrepConfig, TaggingConfig
from lib_lora.errors import ConfigError, TaggerError
from lib_lora.jobs import KEEP_FINISHED, Jobs
from lib_lora.ui.job_view import stoppable, submit
from tests.fixtures.data.datagen import save_image, tree_hash, write_caption

GPU = torch.device("cpu", 0)     # stands for the WebUI's device: distinct from devices.cpu, yet real


@pytest.fixture()
def on_gpu(webui, monkeypatch):
    monkeypatch.setattr(webui.devices, "device", GPU)
    monkeypatch.setattr(webui.devices, "device_interrogate", GPU)
    return webui


def _jobs() -> Jobs:
    from lib_lora.webui.host import WebUIHost
    return Jobs(WebUIHost())


def _backend(tmp_path, jobs: Jobs | None = None):
    """The WebUI backend's capabilities for the data tabs (lib_lora/webui/backend.py passes the same)."""
    from lib_lora.webui.interrogators import captioner_names, make_captioner
    from lib_lora.webui.upscalers import upscale_hook, upscaler_names
    registry = jobs or _jobs()
    return types.SimpleNamespace(tagger_models_dir=tmp_path / "models", datasets_root=tmp_path / "ds",
                                 captioners=captioner_names, make_captioner=make_captioner,
                                 upscalers=upscaler_names, upscale_hook=upscale_hook, jobs=lambda: registry)


def _colours(folder, colours):
    for name, colour in colours.items():
        save_image(folder / f"{name}.png", Image.new("RGB", (48, 32), colour))
    return folder


def _finish(job, timeout=60):
    """Wait until the job has ended and its thread has let go of the host."""
    deadline = time.monotonic() + timeout
    while job.active and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not job.active, job.state
    for thread in threading.enumerate():
        if thread.name == f"train-lora-{job.id}":
            thread.join(timeout)
    return job


def _tag(tmp_path, folder, **cfg):
    from lib_lora.ui.tab_tagging import TagOutcome, tag_folder
    config = TaggingConfig(**cfg)
    backend = _backend(tmp_path)
    job = submit(backend.jobs(), "tag", "tagging", lambda j: TagOutcome(tag_folder(j, backend, folder, config),
                                                                        folder, config),
                 exclusive=True, task_id="task(tagtest)")
    return _finish(job)


def test_deepdanbooru_captions_with_modes_filters_and_is_unloaded(on_gpu, tmp_path):
    from modules import deepbooru, progress
    folder = _colours(tmp_path / "10_sq", {"red": (250, 10, 10), "blue": (10, 10, 250)})
    write_caption(folder / "blue.txt", "old tag")
    job = _tag(tmp_path, folder, captioner="deepdanbooru", trigger_word="sqz", write_mode="append",
               exclude_tags=["1girl"])
    assert job.state == "finished", job.error
    # The WebUI's default opts: threshold 0.5, alphabetical, spaces, escaped brackets (undone by us).
    assert (folder / "red.txt").read_text(encoding="utf-8") == "sqz, red theme, simple background, smile (happy)"
    assert (folder / "blue.txt").read_text(encoding="utf-8") == \
        "sqz, old tag, blue theme, simple background, smile (happy)"
    assert job.result.result.providers == {"DeepDanbooru": str(GPU)}
    model = deepbooru.model.model
    assert model.calls_on and set(model.calls_on) == {GPU}          # ran on the WebUI's device ...
    assert model.placed_on == on_gpu.devices.cpu                    # ... and went back to the CPU after
    assert "task(tagtest)" in progress.finished_tasks and progress.current_task is None
    assert on_gpu.shared.state.job == "" and on_gpu.shared.state.job_count == 0

    job = _tag(tmp_path, folder, captioner="deepdanbooru", write_mode="overwrite", replace_underscores=False,
               remove_junk_tags=False)
    assert (folder / "red.txt").read_text(encoding="utf-8") == \
        "1girl, absurdres, red theme, simple background, smile (happy)"   # junk kept; spaces: WebUI setting


def test_blip_captions_one_sentence_per_image_and_unloads(on_gpu, tmp_path):
    folder = _colours(tmp_path / "5_sq", {"g": (0, 200, 0), "r": (200, 0, 0)})
    write_caption(folder / "r.txt", "kept as is")
    job = _tag(tmp_path, folder, captioner="blip", trigger_word="sqz", write_mode="skip")
    assert job.state == "finished", job.error
    assert (folder / "g.txt").read_text(encoding="utf-8") == "sqz, a picture of a green square"
    assert (folder / "r.txt").read_text(encoding="utf-8") == "kept as is"
    interrogator = on_gpu.shared.interrogator
    assert interrogator.blip_model.placed_on == on_gpu.devices.cpu
    assert interrogator.clip_model.placed_on == on_gpu.devices.cpu
    assert job.result.result.written == 1 and job.result.result.skipped == 1


def test_interrogator_that_cannot_load_is_a_clear_error_and_is_released(on_gpu, tmp_path, monkeypatch):
    from modules import deepbooru
    from lib_lora.webui.interrogators import DeepDanbooruCaptioner

    def offline():
        raise OSError("Connection refused")
    monkeypatch.setattr(deepbooru.model, "load", offline)
    monkeypatch.setattr(deepbooru.model, "model", None)
    with pytest.raises(TaggerError, match="DeepDanbooru.*Connection refused.*WD14"):
        DeepDanbooruCaptioner()


def _with_test_upscaler(webui, calls):
    from modules import upscaler

    class DoublingUpscaler(upscaler.Upscaler):
        name = "Doubler"

        def __init__(self):
            super().__init__(False)
            self.scalers = [upscaler.UpscalerData("Doubler 2x", "/models/doubler.pth", self, 2)]

        def do_upscale(self, img, selected_model=None):
            calls.append((img.size, selected_model))
            return img.resize((img.width * 2, img.height * 2), Image.NEAREST)
    return DoublingUpscaler().scalers[0]


def test_prep_upscales_with_the_webuis_upscaler_in_a_queued_job(webui, tmp_path, monkeypatch):
    from lib_lora.webui import upscalers
    from lib_lora.ui.tab_dataset import DatasetOutcome, prep_outcome, upscaler_choices, uses_gpu
    calls = []
    monkeypatch.setattr(webui.shared, "sd_upscalers", webui.shared.sd_upscalers + [_with_test_upscaler(webui, calls)])
    backend = _backend(tmp_path)
    assert upscaler_choices(backend) == ["Lanczos", "Doubler 2x"]
    src = _colours(tmp_path / "src" / "3_sq", {"a": (200, 0, 0), "b": (0, 0, 200)})
    before = tree_hash(tmp_path / "src")
    cfg = PrepConfig(resolution=64, upscaler="Doubler 2x", dedupe=False)
    assert uses_gpu(cfg) and not uses_gpu(PrepConfig()) and not uses_gpu(PrepConfig(upscaler="Lanczos"))
    assert not uses_gpu(PrepConfig(upscaler="Doubler 2x", upscale_small=False))
    job = _finish(submit(backend.jobs(), "prep", "prep", lambda j: prep_outcome(
        j, backend, str(tmp_path / "src"), str(tmp_path / "out"), cfg), exclusive=True))
    assert job.state == "finished", job.error and isinstance(job.result, DatasetOutcome)
    assert calls == [((48, 32), "/models/doubler.pth")] * 2          # the model path goes with the call
    assert Image.open(tmp_path / "out/3_sq/a.png").size == (96, 64)   # short side 32 -> 64 (2x at most)
    assert "2 upscaled (Doubler 2x)" in job.result.message and job.result.report["images"] == 2
    assert tree_hash(tmp_path / "src") == before
    with pytest.raises(ConfigError, match="Doubler 2x"):
        upscalers.upscale_hook("R-ESRGAN 4x+")
    assert upscalers.upscale_hook("lanczos") is None


def test_gpu_job_waits_for_the_webui_queue_and_cancel_while_queued(webui, tmp_path):
    from modules import call_queue, progress
    ran = []
    jobs = _jobs()
    with call_queue.queue_lock:                    # a generation is running
        job = submit(jobs, "tag", "tagging", lambda j: ran.append(1), exclusive=True, task_id="task(waiting)")
        assert progress.pending_tasks.get("task(waiting)") is not None
        time.sleep(0.3)
        assert job.state == "queued" and "waiting" in job.text
        jobs.cancel(job.id)
        assert not webui.shared.state.interrupted  # the generation is not interrupted by our Cancel
    _finish(job)
    assert job.state == "cancelled" and not ran and "task(waiting)" in progress.finished_tasks


def test_cancel_and_webui_interrupt_stop_prep_and_tagging(webui, tmp_path):
    from lib_lora.dataset.prep import run_prep
    src = tmp_path / "src" / "1_x"
    for i in range(12):
        save_image(src / f"{i:02d}.png", Image.new("RGB", (40, 40), (i * 20, 0, 0)))
    jobs = _jobs()
    reached, interrupted = threading.Event(), threading.Event()
    seen = []

    def prep(job):
        def progress(done, total, path):
            job.progress(done, total, path)
            seen.append((webui.shared.state.job_no, webui.shared.state.job_count))
            if done == 3:                          # hold here until the test pressed Interrupt
                reached.set()
                interrupted.wait(30)
        return run_prep(tmp_path / "src", tmp_path / "out", PrepConfig(resolution=64, dedupe=False),
                        progress=progress, should_stop=job.should_stop)
    job = submit(jobs, "prep", "prep", prep, exclusive=True)
    assert reached.wait(30)
    webui.shared.state.interrupt()                 # the WebUI's Interrupt button, while the job holds the queue
    interrupted.set()
    _finish(job)
    assert job.state == "cancelled" and len(job.result.written) == 3
    assert seen[0] == (1, 12)                      # progress went through shared.state
    assert webui.shared.state.job == ""


def test_check_and_import_report_progress_without_taking_the_queue(webui, tmp_path):
    from modules import call_queue
    from lib_lora.ui.tab_dataset import DatasetOutcome, dataset_report, import_upload, poll_outputs
    photos = _colours(tmp_path / "photos", {"a": (250, 0, 0), "b": (0, 250, 0), "c": (0, 0, 250)})
    backend = _backend(tmp_path)
    jobs = backend.jobs()

    def work(job):
        train = import_upload(backend, "sq", "sqz", 5, [str(p) for p in sorted(photos.iterdir())], None,
                              stoppable(job))
        return DatasetOutcome("imported", str(train), dataset_report(str(train), "style", 10, 2, stoppable(job)))
    with call_queue.queue_lock:                    # a training run holds the queue: check/import still run
        job = _finish(submit(jobs, "import", "import", work, exclusive=False))
    assert job.state == "finished", job.error
    assert job.done == job.total == 3 and job.result.report["images"] == 3
    status, folder, report, state = poll_outputs(jobs, job.id)
    assert state == "finished" and folder.endswith("train") and "3 images" in report

    def cancelled_check(job):
        job.cancel()
        return dataset_report(folder, "style", 10, 2, stoppable(job))
    job = _finish(submit(jobs, "check", "check", cancelled_check, exclusive=False))
    assert job.state == "cancelled" and "cancelled" in poll_outputs(jobs, job.id)[0]


def test_a_job_id_from_an_earlier_session_stops_the_polling(webui):
    from lib_lora.ui.tab_dataset import poll_outputs
    jobs = _jobs()
    for _ in range(KEEP_FINISHED + 5):
        _finish(submit(jobs, "check", "check", lambda j: None, exclusive=False))
    assert len(jobs.jobs) == KEEP_FINISHED + 1            # the last finished ones and the newest
    status, _folder, _report, state = poll_outputs(jobs, "prep99-abcdef")
    assert state == "" and "earlier session" in status
    tagging = _finish(submit(jobs, "tag", "tagging", lambda j: None, exclusive=False))
    status, _folder, _report, state = poll_outputs(jobs, tagging.id)     # another section's job
    assert state == "" and "earlier session" in status
