"""Stand-in of modules/progress.py: the task queue bookkeeping and the /internal/progress route.

Names, fields and the progress arithmetic follow v1.10.1 (read from its source, not copied):
progressbar.js's requestProgress POSTs {id_task, id_live_preview} here every
live_preview_refresh_period ms until `completed`, or until the task was active and is no
longer. `setup_progress_api(app)` is what webui.py calls after launching Gradio."""
from __future__ import annotations

import base64
import io
import time

from pydantic import BaseModel, Field

from modules import shared

current_task = None
pending_tasks = {}
finished_tasks = []
recorded_results = []
recorded_results_limit = 2


def start_task(id_task):
    global current_task
    current_task = id_task
    pending_tasks.pop(id_task, None)


def finish_task(id_task):
    global current_task
    if current_task == id_task:
        current_task = None
    finished_tasks.append(id_task)
    if len(finished_tasks) > 16:
        finished_tasks.pop(0)


def record_results(id_task, res):
    recorded_results.append((id_task, res))
    if len(recorded_results) > recorded_results_limit:
        recorded_results.pop(0)


def add_task_to_queue(id_job):
    pending_tasks[id_job] = time.time()


class ProgressRequest(BaseModel):
    id_task: str = Field(default=None, title="Task ID")
    id_live_preview: int = Field(default=-1, title="Live preview image ID")
    live_preview: bool = Field(default=True, title="Include live preview")


class ProgressResponse(BaseModel):
    active: bool = Field(title="Whether the task is being worked on right now")
    queued: bool = Field(title="Whether the task is in queue")
    completed: bool = Field(title="Whether the task has already finished")
    progress: float = Field(default=None, title="Progress")
    eta: float = Field(default=None, title="ETA in secs")
    live_preview: str = Field(default=None, title="Live preview image")
    id_live_preview: int = Field(default=None, title="Live preview image ID")
    textinfo: str = Field(default=None, title="Info text")


def setup_progress_api(app):
    return app.add_api_route("/internal/progress", progressapi, methods=["POST"], response_model=ProgressResponse)


def _queue_text(id_task):
    order = sorted(pending_tasks, key=lambda task: pending_tasks[task])
    return f"In queue: {order.index(id_task) + 1}/{len(order)}"


def _live_preview(req):
    """(data URI or None, id): the current image once per new id, as the WebUI sends it."""
    state = shared.state
    if not (shared.opts.live_previews_enable and req.live_preview):
        return None, req.id_live_preview
    state.set_current_image()
    if state.id_live_preview == req.id_live_preview or state.current_image is None:
        return None, req.id_live_preview
    buffered = io.BytesIO()
    state.current_image.save(buffered, format="png")
    return "data:image/png;base64," + base64.b64encode(buffered.getvalue()).decode("ascii"), state.id_live_preview


def progressapi(req: ProgressRequest):
    active = req.id_task == current_task
    queued = req.id_task in pending_tasks
    completed = req.id_task in finished_tasks
    if not active:
        textinfo = _queue_text(req.id_task) if queued else "Waiting..."
        return ProgressResponse(active=active, queued=queued, completed=completed, id_live_preview=-1,
                                textinfo=textinfo)
    state = shared.state
    progress = 0.0
    if state.job_count > 0:
        progress += state.job_no / state.job_count
        if state.sampling_steps > 0:
            progress += 1 / state.job_count * state.sampling_step / state.sampling_steps
    progress = min(progress, 1)
    elapsed = time.time() - state.time_start
    eta = elapsed / progress - elapsed if progress > 0 else None
    live_preview, id_live_preview = _live_preview(req)
    return ProgressResponse(active=active, queued=queued, completed=completed, progress=progress, eta=eta,
                            live_preview=live_preview, id_live_preview=id_live_preview, textinfo=state.textinfo)
