"""The tab's long actions as jobs of the one registry (lib_lora/jobs.py), and how a section shows them.

Dataset check/import/prep, tagging, grids and the Tools start a `Job` and return at once; the
section's hidden poll button (javascript/train_lora_data.js) brings its progress until it
ends, and Cancel stops it after the current image, batch, cell or layer. Which jobs wait for
the host (`exclusive`: the WebUI's queue lock, or the standalone's model lock) is the caller's
call: GPU users do, file-only jobs do not. The registry is the backend's (`backend.jobs()`:
the one of the WebUI process, shared with training and the HTTP API, or the standalone server's).
"""
from __future__ import annotations

import html
import re
from typing import Any, Callable

from lib_lora.errors import LoraError
from lib_lora.jobs import ACTIVE, Job, Jobs

class JobCancelled(LoraError):
    """Raised from a progress callback to stop an action that has no should_stop of its own."""

    def __init__(self, title: str):
        super().__init__(f"The {title} was cancelled", where=title, fix="Start it again when you want")


def stoppable(job: Job) -> Callable[..., None]:
    """A progress callback for `job` that raises JobCancelled once Cancel (or the host's stop) was pressed."""
    def report(done: int, total: int, text: str = "") -> None:
        job.progress(done, total, text)
        if job.should_stop():
            raise JobCancelled(job.title)
    return report


def submit(jobs: Jobs, kind: str, title: str, fn: Callable[[Job], Any], *, exclusive: bool,
           task_id: str = "") -> Job:
    """Start `fn(job)` as a `kind` job; a JobCancelled out of it ends the job cancelled, not failed."""
    def work(job: Job) -> Any:
        try:
            return fn(job)
        except JobCancelled:
            job.state = "cancelled"
            return None
    return jobs.submit(kind, title, work, exclusive=exclusive, task_id=task_id if exclusive else "")


def section_job(jobs: Jobs, job_id: str, kinds: tuple[str, ...]) -> Job | None:
    """The job a section's page names, if it is one of the section's kinds in this process."""
    job = jobs.jobs.get(job_id or "")
    return job if job is not None and job.kind in kinds else None


def job_progress_html(job: Job) -> str:
    """A bar and one line: what the job is doing now."""
    share = min(1.0, job.done / job.total) if job.total else 0.0
    current = html.escape(re.split(r"[\\/]", job.text or "")[-1][:80])    # the file name, not its folders
    count = f"{job.done}/{job.total}" if job.total else ""
    return (f"<div class='train-lora-progress' data-state='{job.state}'><div class='train-lora-bar'>"
            f"<div class='train-lora-bar-fill' style='width:{share * 100:.1f}%'></div></div>"
            f"<p><b>{html.escape(job.title)}</b> {job.state} {count} {current}</p></div>")


def started(job: Job, words: str = "") -> tuple:
    """[status, job id, job state, host task id] right after a start; the page polls from here."""
    from lib_lora.ui.render import message_html
    return message_html(words or f"{job.title.capitalize()} started ..."), job.id, job.state, job.task_id


def poll_view(jobs: Jobs, job_id: str, kinds: tuple[str, ...], outcome_type: type, n_outputs: int,
              finished: Callable[[Any], list]) -> list:
    """[status, *n_outputs section outputs, job state] for a section's hidden poll button.

    While the job runs: its progress, outputs unchanged. At the end: finished(outcome) gives the status
    and outputs; a failure or a cancel before any outcome leaves the outputs as they were."""
    import gradio as gr

    from lib_lora.ui.render import error_html, message_html
    keep = [gr.update() for _ in range(n_outputs)]
    if not job_id:
        return [gr.update(), *keep, ""]
    job = section_job(jobs, job_id, kinds)
    if job is None:              # a page left open across a restart of the WebUI: stop polling
        return [message_html("That job belongs to an earlier session; start it again"), *keep, ""]
    if job.state in ACTIVE:
        return [job_progress_html(job), *keep, job.state]
    if not isinstance(job.result, outcome_type):
        status = error_html(job.error) if job.state == "failed" else message_html(f"The {job.title} was cancelled")
        return [status, *keep, job.state]
    return [*finished(job.result), job.state]


def cancel_text(jobs: Jobs, job_id: str, kinds: tuple[str, ...]) -> str:
    """Cancel the section's job if it runs; the words for its status line."""
    job = section_job(jobs, job_id, kinds)
    if job is None or job.state not in ACTIVE:
        return "Nothing is running"
    job.cancel()
    return "Stopping after the current step ..."
