"""Evaluate section: the epoch x weight grid of a chosen run, and the best-epoch hint.

The grid is a job of the one registry (job_view.py): it renders with the host's model (inside the
WebUI, its txt2img), so it waits for the host like a generation; the hidden poll button brings its
progress and, at the end, the image; Cancel stops it after the current cell.
"""
from __future__ import annotations

import time
from pathlib import Path

from lib_lora.config import SampleConfig
from lib_lora.errors import LoraError
from lib_lora.evaluation.epoch_grid import epoch_files, run_names
from lib_lora.evaluation.run_hint import hint_for_run
from lib_lora.ui import form, gradio_compat
from lib_lora.ui.job_view import cancel_text, poll_view, started, stoppable, submit
from lib_lora.ui.tab_common import TabContext, elem, guarded, job_widgets
from lib_lora.ui.tab_tagging import check_tagger_model
from lib_lora.ui.render import best_epoch_html, message_html

GRID_FIELDS = ("prompts", "negative_prompt", "grid_weights", "seed", "steps", "cfg_scale", "width", "height",
               "sampler")
JOB_KINDS = ("grid",)


def build_evaluate_section(ctx: TabContext) -> None:
    import gradio as gr
    with gr.Row():
        names = run_names(ctx.backend.lora_dir)
        run = gr.Dropdown(names, value=names[0] if names else None, label="Run", allow_custom_value=True,
                          elem_id=elem("eval_run"))
        refresh = gr.Button("Refresh runs", elem_id=elem("eval_refresh"))
        draw = gr.Button("Draw grid", variant="primary", elem_id=elem("grid_button"))
        suggest = gr.Button("Suggest best epoch", elem_id=elem("best_button"))
        cancel = gr.Button("Cancel", variant="stop", size="sm", elem_id=elem("grid_cancel"), scale=0)
    specs = [s for s in form.field_specs(SampleConfig, ctx.backend.host) if s.name in GRID_FIELDS]
    defaults = SampleConfig(prompts=["a photo"])
    with gr.Accordion("Grid settings", open=True):
        components = [form.make_component(s, getattr(defaults, s.name), prefix="train_lora_eval_") for s in specs]
    status = gr.HTML(elem_id=elem("eval_status"))
    job = job_widgets("grid", "grid")
    grid = gr.Image(label="Epoch x weight grid", type="filepath", interactive=False, elem_id=elem("grid_image"))
    hint = gr.HTML(elem_id=elem("best_epoch"))
    table = gr.Dataframe(headers=["epoch", "validation loss", "tag recall", "score", ""], interactive=False,
                         elem_id=elem("best_table"))

    c = {k: v for k, v in locals().items() if k != "job"}
    _wire_evaluate(ctx, specs, {**c, **job})


def known_run(backend, name: str) -> str:
    """A run the Lora folder holds, by name: the page sends it back, and it names files we read and write."""
    name = (name or "").strip()
    if not name:
        raise LoraError("No run is chosen", where="Run", fix="Train a run first, then press Refresh runs")
    if name not in run_names(backend.lora_dir):
        raise LoraError(f"There is no run {name!r} in the Lora folder", where=str(backend.lora_dir),
                        fix="Press Refresh runs and pick one from the list")
    return name


def _wire_evaluate(ctx: TabContext, specs: list, c: dict) -> None:
    """Event handlers of the Evaluate section; `c` holds its components by name."""
    backend, jobs = ctx.backend, ctx.backend.jobs()

    @guarded(5, "Drawing the grid")
    def on_draw(task: str, name: str, *values):
        name = known_run(backend, name)
        sample = form.config_from_values(SampleConfig, specs, list(values))
        files = epoch_files(backend.lora_dir, name)
        if not files:
            raise LoraError(f"The run {name!r} has no epoch files", where=str(backend.lora_dir),
                            fix="Pick another run, or train until an epoch is saved")
        out = backend.grids_dir / f"{name}-grid-{time.strftime('%Y%m%d-%H%M%S')}.png"
        job = submit(jobs, "grid", f"grid of {name}",
                     lambda j: Path(backend.render_grid(files, sample, out, stoppable(j))),
                     exclusive=True, task_id=task)
        words = f"Drawing {len(files)} epochs x {len(sample.grid_weights)} weights ..."
        return (*started(job, words), None)

    def on_poll(job_id: str):
        return poll_view(jobs, job_id, JOB_KINDS, Path, 1,
                         lambda path: [message_html(f"Grid saved: {path}"), str(path)])

    @guarded(1, "Cancel")
    def on_cancel(job_id: str):
        return message_html(cancel_text(jobs, job_id, JOB_KINDS))

    @guarded(3, "The best-epoch hint")
    def on_suggest(name: str, tagger: str):
        check_tagger_model(backend, tagger)
        result = hint_for_run(backend.lora_dir, known_run(backend, name), tagger or "", str(backend.tagger_models_dir))
        return message_html(""), best_epoch_html(result), result.to_rows()

    def on_refresh():
        import gradio as gr
        names_now = run_names(backend.lora_dir)
        return gr.update(choices=names_now, value=names_now[0] if names_now else None)

    c["draw"].click(on_draw, [c["task_id"], c["run"]] + c["components"],
                    [c["status"], c["job_id"], c["job_state"], c["webui_task"], c["grid"]],
                    **gradio_compat.js_kwargs("trainLoraJobStart"))
    c["poll"].click(on_poll, [c["job_id"]], [c["status"], c["grid"], c["job_state"]],
                    show_progress=gradio_compat.HIDE_PROGRESS, queue=False)
    c["cancel"].click(on_cancel, [c["job_id"]], [c["status"]], queue=False)
    c["suggest"].click(on_suggest, [c["run"], ctx.tagger_model], [c["status"], c["hint"], c["table"]])
    c["refresh"].click(on_refresh, [], [c["run"]])
    ctx.load_outputs.append((on_refresh, [c["run"]]))
