"""The WebUI as the host of our jobs: its queue lock, shared.state and progress tasks.

A job that uses the GPU or the loaded model waits for the WebUI's queue lock, as txt2img,
img2img and the WebUI's own interrogate and extras buttons do, so it never runs beside a
generation or another job; while it holds the lock it owns shared.state (the WebUI's
progress bar reads job_no / job_count / textinfo from it, and its Interrupt button sets
`interrupted`), and the task id the page sent is queued, started and finished in
modules.progress, so the page's progress bar follows the job. A paused training run
releases the hold and takes it again on resume.

`webui_jobs()` is the one registry of the WebUI process: the tab, the HTTP API and the
X/Y/Z axes all see the same jobs.
"""
from __future__ import annotations

import contextlib
import html
import threading
from typing import Iterator

from lib_lora.jobs import Job, Jobs


class WebUIHold:
    """The WebUI as one job holds it; every method may be called whatever is held (idempotent)."""

    def __init__(self, job: Job):
        from modules import call_queue, progress, shared   # the WebUI, lazily
        self.call_queue, self.progress, self.shared = call_queue, progress, shared
        self.job = job
        self.has_queue = False
        self.task_started = ""
        # a cancel (another thread) checks has_queue and presses Interrupt under this lock, so a release
        # cannot slip in between and let it interrupt the generation that takes the queue next
        self._owning = threading.Lock()

    def take(self) -> None:
        """Wait for the generation in progress (and those queued before us), then own shared.state."""
        if self.has_queue:
            return
        self.job.text = "waiting for the WebUI to finish the current generation or job"
        self.call_queue.queue_lock.acquire()
        self.has_queue = True
        self.shared.state.begin(job=f"train_lora:{self.job.id}")
        if self.job.task_id and not self.job.cancel_requested:   # again after a pause: the bar shows the job
            self.progress.start_task(self.job.task_id)
            self.task_started = self.job.task_id      # finished by this id (a resumed run drops its task id)

    def release(self) -> None:
        with self._owning:
            if not self.has_queue:
                return
            try:
                self.shared.state.end()
            finally:
                self.has_queue = False
                self.call_queue.queue_lock.release()

    def interrupted(self) -> bool:
        return self.has_queue and bool(self.shared.state.interrupted)

    def interrupt(self) -> None:
        with self._owning:
            if self.has_queue:   # only while we own shared.state: never interrupt someone else's job
                self.shared.state.interrupt()

    def report(self, job: Job) -> None:
        if self.has_queue:
            state = self.shared.state
            state.job_count, state.job_no = max(job.total, 1), job.done
            # a run says its step, epoch, loss and speed (its headline); other jobs their count
            line = f": {job.headline}" if job.headline else f" {job.title}: {job.done}/{job.total}"
            state.textinfo = "Train LoRA" + html.escape(line)

    def finish(self) -> None:
        """The job is over: the progress task finished and the queue released."""
        try:
            if self.task_started:
                self.progress.finish_task(self.task_started)
                self.task_started = ""
        finally:
            self.release()


class WebUIHost:
    name = "webui"

    def queued(self, job: Job) -> None:
        if job.task_id:
            from modules import progress
            progress.add_task_to_queue(job.task_id)

    def dropped(self, job: Job) -> None:
        """A job cancelled while queued: its task leaves the WebUI's queue, so the page's progress bar
        ends now instead of saying "in queue" until the generation ahead of it finishes."""
        if job.task_id:
            from modules import progress
            progress.pending_tasks.pop(job.task_id, None)
            progress.finish_task(job.task_id)

    @contextlib.contextmanager
    def exclusive(self, job: Job) -> Iterator[WebUIHold]:
        hold = WebUIHold(job)
        try:
            hold.take()
            yield hold
        finally:
            hold.finish()


_registry: Jobs | None = None
_registry_lock = threading.Lock()


def webui_jobs() -> Jobs:
    """The jobs of this WebUI process (one registry for the tab, the HTTP API and the axes)."""
    global _registry
    with _registry_lock:
        if _registry is None:
            _registry = Jobs(WebUIHost())
        return _registry
