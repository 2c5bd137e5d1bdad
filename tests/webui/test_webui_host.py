"""The WebUI as host of our jobs (lib_lora/webui/host.py), in the stand-in: queue lock, shared.state, progress."""
from __future__ import annotations

import threading
import time


def _wait(predicate, timeout=10.0):
    end = time.monotonic() + timeout
    while not predicate() and time.monotonic() < end:
        time.sleep(0.01)
    assert predicate()


def test_an_exclusive_job_waits_for_the_generation_and_drives_the_progress_bar(webui):
    from lib_lora.jobs import Jobs
    from lib_lora.webui.host import WebUIHost
    progress = __import__("modules.progress", fromlist=["progress"])
    jobs = Jobs(WebUIHost())
    seen = {}

    def work(job):
        job.progress(2, 5, "image 2")
        state = webui.shared.state
        seen.update(job_no=state.job_no, job_count=state.job_count, text=state.textinfo,
                    current=progress.current_task)

    webui.call_queue.queue_lock.acquire()          # a txt2img in progress
    try:
        job = jobs.submit("tag", "tagging <set>", work, exclusive=True, task_id="task(abc)")
        time.sleep(0.2)
        assert job.state == "queued" and not seen
        assert "task(abc)" in progress.pending_tasks
    finally:
        webui.call_queue.queue_lock.release()
    _wait(lambda: not job.active)
    assert job.state == "finished"
    assert seen == {"job_no": 2, "job_count": 5, "text": "Train LoRA tagging &lt;set&gt;: 2/5", "current": "task(abc)"}
    assert progress.current_task is None and "task(abc)" in progress.finished_tasks
    assert webui.call_queue.queue_lock.acquire(timeout=1)      # released
    webui.call_queue.queue_lock.release()


def test_the_webuis_interrupt_stops_the_job_and_cancel_presses_it(webui):
    from lib_lora.jobs import Jobs
    from lib_lora.webui.host import WebUIHost
    jobs = Jobs(WebUIHost())
    started = threading.Event()

    def loop(job):
        started.set()
        while not job.should_stop():
            time.sleep(0.01)

    by_webui = jobs.submit("grid", "grid", loop, exclusive=True)
    assert started.wait(5)
    webui.shared.state.interrupt()                 # the WebUI's Interrupt button
    _wait(lambda: not by_webui.active)
    assert by_webui.state == "cancelled"
    started.clear()
    by_cancel = jobs.submit("grid", "grid", loop, exclusive=True)
    assert started.wait(5)
    jobs.cancel(by_cancel.id)
    _wait(lambda: not by_cancel.active)
    assert by_cancel.state == "cancelled"


def test_a_job_cancelled_in_the_queue_leaves_the_webuis_progress_queue_at_once(webui):
    """The page's progress bar must not say "in queue" until the generation ahead finishes."""
    from lib_lora.jobs import Jobs
    from lib_lora.webui.host import WebUIHost
    progress = __import__("modules.progress", fromlist=["progress"])
    jobs = Jobs(WebUIHost())
    ran = []
    webui.call_queue.queue_lock.acquire()          # a txt2img in progress
    try:
        job = jobs.submit("grid", "grid", lambda job: ran.append(1), exclusive=True, task_id="task(queued)")
        assert "task(queued)" in progress.pending_tasks
        jobs.cancel(job.id)
        assert job.state == "cancelled"
        assert "task(queued)" not in progress.pending_tasks and "task(queued)" in progress.finished_tasks
    finally:
        webui.call_queue.queue_lock.release()
    job.worker.join(5)
    assert ran == [] and progress.current_task != "task(queued)"
