"""Pieces every section of the tab shares: the context object and the error guard.

Every handler is wrapped by `guarded`: a LoraError becomes its message in the
section's status line (first output) and leaves the other outputs unchanged; an
unexpected exception is logged with its traceback and shown as one plain line,
so bad input never breaks the page.
"""
from __future__ import annotations

import functools
import logging
import traceback
from dataclasses import dataclass, field
from typing import Any, Callable

from lib_lora import train_job
from lib_lora.errors import LoraError
from lib_lora.jobs import Job
from lib_lora.ui.render import error_html

log = logging.getLogger(__name__)


@dataclass
class TabContext:
    backend: Any
    saved_form: dict = field(default_factory=dict)    # last form values (flat TrainConfig), loaded at build
    dataset_dir: Any = None                           # the Dataset section's folder textbox, shared
    tagger_model: Any = None                          # the Tagging section's model dropdown (Evaluate uses it)
    train_specs: list = field(default_factory=list)
    train_components: list = field(default_factory=list)
    load_outputs: list = field(default_factory=list)  # (components, fn) filled when the page loads

    def component(self, name: str):
        for spec, comp in zip(self.train_specs, self.train_components):
            if spec.name == name:
                return comp
        raise KeyError(name)


def no_change(n: int) -> list:
    import gradio as gr
    return [gr.update() for _ in range(n)]


def guarded(n_outputs: int, what: str) -> Callable:
    """Decorator: errors go to the first output as plain words; the rest stay as they were."""
    def wrap(fn: Callable) -> Callable:
        @functools.wraps(fn)
        def run(*args: Any) -> Any:
            try:
                return fn(*args)
            except LoraError as err:
                message = str(err)
            except Exception as err:    # an unexpected failure: log it, tell the user in one line
                log.error("Train LoRA: %s failed:\n%s", what, traceback.format_exc())
                message = f"{what} failed unexpectedly ({type(err).__name__}: {err}). The details are in the console."
            outputs = [error_html(message)] + no_change(n_outputs - 1)
            return outputs if n_outputs > 1 else outputs[0]
        run.__annotations__ = {}    # Gradio evaluates hints; ours are strings under `from __future__`
        return run
    return wrap


def run_job(backend: Any, run_id: str, where: str = "Train") -> Job:
    """The training run the page names, from the backend's registry (shared with the HTTP API)."""
    if not run_id:
        raise LoraError("No run is going", where=where, fix="Start a run first")
    return backend.jobs().get(run_id, train_job.KIND)


def elem(name: str) -> str:
    return f"train_lora_{name}"


def job_widgets(prefix: str, what: str) -> dict:
    """The progress bar and hidden parts of a background job's view (task id, job id, state, the
    WebUI task id, the poll button), by the ids javascript/train_lora_data.js looks for."""
    import gradio as gr
    gr.HTML(elem_id=elem(f"{prefix}_progressbar"))
    with gr.Row(elem_classes=["train-lora-hidden"]):
        return {"task_id": gr.Textbox(elem_id=elem(f"{prefix}_task")),
                "job_id": gr.Textbox(elem_id=elem(f"{prefix}_job")),
                "job_state": gr.Textbox(elem_id=elem(f"{prefix}_state")),
                "webui_task": gr.Textbox(elem_id=elem(f"{prefix}_webui_task")),
                "poll": gr.Button(f"refresh {what} job", elem_id=elem(f"{prefix}_poll"))}
