"""Long dataset actions (check, import, prep, tag) as background jobs the tab polls, with cancel.

The Gradio handler starts a job and returns at once, so the page never waits
on a folder of thousands of images; a hidden poll button (javascript/
train_lora_data.js) fetches progress until the job ends, and Cancel stops it
after the current image (or batch).

Inside the WebUI, jobs that use the GPU (tagging; prep with a model upscaler)
wait for the WebUI's queue lock like its own interrogate and extras buttons,
so they never run beside a generation or a training run, and they report
through the WebUI's progress protocol: the task id the page sent is queued,
started and finished in modules.progress, and shared.state carries job_no /
job_count / textinfo, so the WebUI's progress bar (requestProgress) follows
the job, and its Interrupt stops it. Jobs that only read and write files
(check, import, prep with Lanczos) do not take the lock: they must not wait
hours behind a training run, and they leave shared.state, which belongs to
whatever holds the lock, alone.
"""
from __future__ import annotations

import html
import itertools
import re
import threading
from typing import Any, Callable

from lib_lora.errors import LoraError
from lib_lora.ui.runs import BackgroundTask

ACTIVE = ("queued", "running")
KEEP_FINISHED = 10


class DataJob(BackgroundTask):
    """One dataset action: fn(job) reads job.should_stop() and calls job.progress(done, total, text)."""

    def __init__(self, job_id: str, name: str, fn: Callable[["DataJob"], Any], *, webui_queue: bool = False,
                 task_id: str = ""):
        super().__init__(name, fn)
        self.job_id, self.webui_queue, self.task_id = job_id, webui_queue, task_id
        self.state = "queued"
        self._state = None           # modules.shared.state while this job holds the WebUI's queue

    def should_stop(self) -> bool:
        return self.cancel_requested or bool(self._state is not None and self._state.interrupted)

    def progress(self, done: int, total: int, text: str = "") -> None:
        super().progress(done, total, text)
        state = self._state
        if state is not None:
            state.job_count, state.job_no = max(total, 1), done
            state.textinfo = f"Train LoRA {html.escape(self.name)}: {done}/{total}"

    def cancel(self) -> None:
        self.cancel_requested = True
        if self._state is not None:      # only while we own shared.state: never interrupt someone else's job
            self._state.interrupt()

    def _run(self) -> None:
        if self.webui_queue:
            self._run_in_webui_queue()
        else:
            self.state = "running"
            super()._run()
        self._settle()

    def _run_in_webui_queue(self) -> None:
        from modules import call_queue, progress, shared
        self.text = "waiting for the WebUI to finish the current generation or training"
        with call_queue.queue_lock:
            if self.task_id:
                progress.start_task(self.task_id)
            shared.state.begin(job=f"train_lora_{self.name}")
            self._state, self.state = shared.state, "running"
            try:
                if not self.cancel_requested:     # cancelled while it waited: nothing to do
                    super()._run()
            finally:
                self._state, self.finished = None, True
                shared.state.end()
                if self.task_id:
                    progress.finish_task(self.task_id)

    def _settle(self) -> None:
        if self.cancel_requested or getattr(self.result, "cancelled", False):
            self.state = "cancelled"
        elif self.error:
            self.state = "failed"
        else:
            self.state = "finished"


class DataJobs:
    """The tab's dataset jobs of this session, by id."""

    def __init__(self, inside_webui: bool):
        self.inside_webui = inside_webui
        self.jobs: dict[str, DataJob] = {}
        self._ids = itertools.count(1)
        self._lock = threading.Lock()

    def start(self, name: str, fn: Callable[[DataJob], Any], *, uses_gpu: bool = False,
              task_id: str = "") -> DataJob:
        with self._lock:
            busy = [j for j in self.jobs.values() if j.name == name and j.state in ACTIVE]
            if busy:
                raise LoraError(f"A {name} job is already going", where="Dataset",
                                fix="Wait for it to finish, or cancel it first")
            for old in [j for j in self.jobs.values() if j.state not in ACTIVE][:-KEEP_FINISHED]:
                del self.jobs[old.job_id]          # results hold reports and captions: keep the recent ones only
            job_id = f"{name}{next(self._ids)}"
            queue = self.inside_webui and uses_gpu
            job = DataJob(job_id, name, fn, webui_queue=queue, task_id=task_id if queue else "")
            self.jobs[job_id] = job
        if job.task_id:
            from modules import progress
            progress.add_task_to_queue(job.task_id)
        return job.start()

    def get(self, job_id: str) -> DataJob:
        if job_id not in self.jobs:
            raise LoraError(f"There is no dataset job {job_id!r}", where="Dataset",
                            fix="Start the action again")
        return self.jobs[job_id]

    def cancel(self, job_id: str) -> DataJob:
        job = self.get(job_id)
        if job.state in ACTIVE:
            job.cancel()
        return job


class JobCancelled(LoraError):
    """Raised from a progress callback to stop an action that has no should_stop of its own."""

    def __init__(self, name: str):
        super().__init__(f"The {name} was cancelled", where="Dataset", fix="Start it again when you want")


def stoppable(job: DataJob) -> Callable[[int, int, str], None]:
    """A progress callback for `job` that raises JobCancelled once Cancel was pressed."""
    def report(done: int, total: int, text: str = "") -> None:
        job.progress(done, total, text)
        if job.should_stop():
            raise JobCancelled(job.name)
    return report


def job_progress_html(job: DataJob) -> str:
    """A bar and one line: what the job is doing now."""
    share = min(1.0, job.done / job.total) if job.total else 0.0
    current = html.escape(re.split(r"[\\/]", job.text or "")[-1][:80])    # the file name, not its folders
    count = f"{job.done}/{job.total}" if job.total else ""
    return (f"<div class='train-lora-progress' data-state='{job.state}'><div class='train-lora-bar'>"
            f"<div class='train-lora-bar-fill' style='width:{share * 100:.1f}%'></div></div>"
            f"<p><b>{html.escape(job.name)}</b> {job.state} {count} {current}</p></div>")


_registries: dict[int, tuple[Any, DataJobs]] = {}


def jobs_for(backend: Any) -> DataJobs:
    """One job registry per tab backend (the Dataset and Tagging sections share it)."""
    key = id(backend)
    if key not in _registries or _registries[key][0] is not backend:
        _registries[key] = (backend, DataJobs(inside_webui=getattr(backend, "kind", "") == "webui"))
    return _registries[key][1]


def poll_view(jobs: DataJobs, job_id: str, outcome_type: type, n_outputs: int,
              finished: Callable[[Any], list]) -> list:
    """[status, *n_outputs section outputs, job state] for a section's hidden poll button.

    While the job runs: its progress, outputs unchanged. At the end: finished(outcome) gives the status
    and outputs; a failure or a cancel before any outcome leaves the outputs as they were."""
    import gradio as gr

    from lib_lora.ui.render import error_html, message_html
    keep = [gr.update() for _ in range(n_outputs)]
    if not job_id:
        return [gr.update(), *keep, ""]
    if job_id not in jobs.jobs:          # a page left open across a restart of the WebUI: stop polling
        return [message_html("That job belongs to an earlier session; start it again"), *keep, ""]
    job = jobs.get(job_id)
    if job.state in ACTIVE:
        return [job_progress_html(job), *keep, job.state]
    if not isinstance(job.result, outcome_type):
        status = error_html(job.error) if job.state == "failed" else message_html(f"The {job.name} was cancelled")
        return [status, *keep, job.state]
    return [*finished(job.result), job.state]


def cancel_text(jobs: DataJobs, job_id: str) -> str:
    """Cancel the section's job if it runs; the words for its status line."""
    if not job_id or jobs.get(job_id).state not in ACTIVE:
        return "Nothing is running"
    jobs.cancel(job_id)
    return "Stopping after the current image or batch ..."
