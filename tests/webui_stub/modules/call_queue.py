"""Stand-in of modules/call_queue.py: the queue lock and the Gradio call wrappers."""
from __future__ import annotations

import html
import threading
import time

from modules import devices, errors, progress, shared

queue_lock = threading.Lock()   # FIFOLock in the WebUI; the same acquire/release/with API


def wrap_queued_call(func):
    def f(*args, **kwargs):
        with queue_lock:
            return func(*args, **kwargs)
    return f


def wrap_gradio_gpu_call(func, extra_outputs=None):
    def f(*args, **kwargs):
        is_task = bool(args) and isinstance(args[0], str) and args[0].startswith("task(") and args[0].endswith(")")
        id_task = args[0] if is_task else None
        if id_task:
            progress.add_task_to_queue(id_task)
        with queue_lock:
            shared.state.begin(job=id_task or "(unknown)")
            progress.start_task(id_task)
            try:
                res = func(*args, **kwargs)
                progress.record_results(id_task, res)
            finally:
                progress.finish_task(id_task)
            shared.state.end()
        return res
    return wrap_gradio_call(f, extra_outputs=extra_outputs, add_stats=True)


def wrap_gradio_call(func, extra_outputs=None, add_stats=False):
    def f(*args, extra_outputs_array=extra_outputs, **kwargs):
        started = time.perf_counter()
        try:
            res = list(func(*args, **kwargs))
        except Exception as e:
            errors.report(f"Error completing request\nArguments: {args} {kwargs}"[:131072], exc_info=True)
            shared.state.job = ""
            shared.state.job_count = 0
            if extra_outputs_array is None:
                extra_outputs_array = [None, '']
            res = extra_outputs_array + [f"<div class='error'>{html.escape(f'{type(e).__name__}: {e}')}</div>"]
        shared.state.skipped = False
        shared.state.interrupted = False
        shared.state.stopping_generation = False
        shared.state.job_count = 0
        devices.torch_gc()
        if add_stats:
            elapsed = time.perf_counter() - started
            res[-1] += f"<div class='performance'><p class='time'>Time taken: <wbr>{elapsed:.2f}s</p></div>"
        return tuple(res)
    return f
