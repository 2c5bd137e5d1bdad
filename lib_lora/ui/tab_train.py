"""Train section: presets, every TrainConfig option bound by field name, steps calculator, run controls,
live progress, the loss + LR chart and sample images as they arrive."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from lib_lora import options, presets, train_job
from lib_lora.config import TrainConfig
from lib_lora.errors import LoraError
from lib_lora.jobs import Job
from lib_lora.ui import form, gradio_compat
from lib_lora.path_policy import check_train_paths
from lib_lora.ui.path_checks import check_paths, check_uploads, policy_for
from lib_lora.ui.tab_common import TabContext, elem, guarded, no_change, run_job
from lib_lora.ui.render import loss_chart, message_html, progress_html

# In view first; a field the host does not show (the base model inside the WebUI) is left out.
BASIC_FIELDS = ("model.pretrained", "dataset.train_dir", "output.output_name", "dataset.trigger_word",
                "network.algo", "network.dim", "network.alpha", "training.epochs", "training.batch_size",
                "training.unet_lr", "training.text_encoder_lr", "training.optimizer", "training.lr_scheduler",
                "dataset.resolution", "model.clip_skip", "output.save_every_n_epochs", "sample.every_n_epochs",
                "sample.prompts")
SECTION_TITLES = {"model": "Model", "dataset": "Dataset and captions", "network": "Network",
                  "training": "Training", "output": "Output", "sample": "Samples"}
# The fields the step count depends on: editing one recounts from the whole form.
STEP_INPUTS = ("dataset.train_dir", "dataset.reg_dir", "dataset.resolution", "dataset.enable_bucket",
               "dataset.min_bucket_reso", "dataset.max_bucket_reso", "dataset.bucket_reso_steps",
               "dataset.bucket_no_upscale", "dataset.validation_split", "training.epochs", "training.batch_size",
               "training.gradient_accumulation_steps", "training.max_train_steps", "training.seed")


def steps_text(cfg: TrainConfig, backend: Any = None) -> str:
    """'12 images x repeats = 60 per epoch -> 30 steps per epoch x 10 epochs = 300 steps'.

    Counted by the trainer's own plan from the whole form (buckets, regularization images,
    validation share, accumulation, max steps), so the number shown is the number run."""
    from lib_lora.training.plan import make_plan
    if not (cfg.dataset.train_dir or "").strip():
        return "Steps: choose a dataset folder to see the number of steps"
    try:
        if backend is not None:
            check_paths(backend, [("Dataset folder", cfg.dataset.train_dir, True),
                                  ("Regularization folder", cfg.dataset.reg_dir, True)])
        plan = make_plan(cfg)
    except LoraError as err:
        return f"Steps: {err}"
    t = cfg.training
    per_epoch = sum(s.repeats for s in plan.train)
    uncapped = plan.steps_per_epoch * t.epochs
    capped = f" (capped at {plan.total_steps} by max train steps)" if plan.total_steps < uncapped else ""
    return (f"Steps: {plan.n_images} images x repeats = {per_epoch} per epoch -> {plan.steps_per_epoch} steps "
            f"per epoch x {t.epochs} epochs = {uncapped} steps{capped}")


def load_saved_form(path: Path) -> dict:
    try:
        data = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):      # a damaged file only loses the remembered values
        return {}


def save_form(path: Path, flat: dict) -> None:
    from lib_lora.fileio import write_text
    write_text(path, json.dumps(flat, indent=1, ensure_ascii=False))


def preset_choices(backend: Any) -> list[str]:
    saved = sorted(p.stem for p in backend.presets_dir.glob("*.toml")) if backend.presets_dir.is_dir() else []
    return list(presets.PRESETS) + saved


def build_option_components(ctx: TabContext) -> None:
    """Basic options in view, the rest in one accordion per config section; all bound by field name."""
    import gradio as gr
    specs = {s.name: s for s in form.field_specs(TrainConfig, ctx.backend.host)}
    values = dict(zip(specs, form.values_from_flat(ctx.saved_form, list(specs.values()), TrainConfig())))
    made: dict[str, Any] = {}
    basic = [name for name in BASIC_FIELDS if name in specs]
    with gr.Group(elem_id=elem("basic_options")):
        for pair in range(0, len(basic), 3):
            with gr.Row():
                for name in basic[pair:pair + 3]:
                    made[name] = form.make_component(specs[name], values[name])
    with gr.Accordion("Advanced options", open=False, elem_id=elem("advanced_options")):
        for section, title in SECTION_TITLES.items():
            rest = [n for n in specs if n.startswith(section + ".") and n not in made]
            with gr.Accordion(title, open=False, elem_id=elem(f"options_{section}")):
                for pair in range(0, len(rest), 3):
                    with gr.Row():
                        for name in rest[pair:pair + 3]:
                            made[name] = form.make_component(specs[name], values[name])
    ctx.train_specs = list(specs.values())
    ctx.train_components = [made[s.name] for s in ctx.train_specs]


def build_train_section(ctx: TabContext) -> None:
    import gradio as gr
    with gr.Row():
        preset = gr.Dropdown(preset_choices(ctx.backend), value="character", label="Preset",
                             elem_id=elem("preset"), allow_custom_value=False)
        apply_preset = gr.Button("Apply preset", elem_id=elem("preset_apply"))
        preset_name = gr.Textbox(label="Save the form as preset", placeholder="name", elem_id=elem("preset_name"))
        save_preset = gr.Button("Save preset", elem_id=elem("preset_save"))
        import_file = gr.File(label="Import TOML / kohya_ss JSON", file_types=[".toml", ".json"],
                              elem_id=elem("preset_import"))
    build_option_components(ctx)
    steps = gr.Markdown(elem_id=elem("steps"))
    with gr.Row():
        task_id = gr.Textbox(visible=False, elem_id=elem("task_id"))
        start = gr.Button("Start training", variant="primary", elem_id=elem("start"))
        pause = gr.Button("Pause", elem_id=elem("pause"))
        resume = gr.Button("Resume", elem_id=elem("resume"))
        save_now = gr.Button("Save now", elem_id=elem("save_now"))
        cancel = gr.Button("Cancel", variant="stop", elem_id=elem("cancel"))
    status = gr.HTML(elem_id=elem("train_status"))
    gr.HTML(elem_id=elem("progressbar"))
    progress = gr.HTML(elem_id=elem("progress"))
    with gr.Row(elem_classes=["train-lora-hidden"]):
        run_id = gr.Textbox(label="run id", elem_id=elem("run_id"))
        run_state = gr.Textbox(label="run state", elem_id=elem("run_state"))
        poll = gr.Button("refresh", elem_id=elem("poll"))
        form_save = gr.Button("save form", elem_id=elem("form_save"))     # clicked by train_lora.js
    with gr.Row():
        chart = gr.Image(label="Loss and learning rate", type="pil", interactive=False, elem_id=elem("loss_chart"))
        samples = gr.Gallery(label="Samples", columns=4, height=300, elem_id=elem("samples"))
    files = gr.Markdown(elem_id=elem("files"))
    from lib_lora.ui.tab_try import build_try_panel
    build_try_panel(ctx, run_id)
    _wire(ctx, locals())


def _wire(ctx: TabContext, c: dict) -> None:
    """Event handlers of the Train section; `c` holds its components by name."""
    _wire_presets(ctx, c)
    _wire_run_controls(ctx, c)
    _wire_progress(ctx, c)
    _wire_form_memory(ctx, c)


def _wire_presets(ctx: TabContext, c: dict) -> None:
    backend, specs, comps = ctx.backend, ctx.train_specs, ctx.train_components
    n_form = len(comps)

    @guarded(1 + n_form, "Applying the preset")
    def on_apply(name: str, *values):
        cfg = form.config_from_values(TrainConfig, specs, list(values))
        if name in presets.PRESETS:
            cfg = presets.apply_preset(cfg, name)
        elif name not in preset_choices(backend):     # the page sends the name; it must be one we listed
            raise LoraError(f"There is no preset {name!r}", where="Preset", fix="Pick a preset from the list")
        else:
            cfg = presets.load_preset(backend.presets_dir / f"{name}.toml").config
        save_form(backend.form_file, options.flatten(cfg))
        return [message_html(f"Preset {name} applied")] + form.values_from_config(cfg, specs)

    @guarded(2, "Saving the preset")
    def on_save_preset(name: str, *values):
        from lib_lora.dataset.importer import safe_name
        if not (name or "").strip():
            raise LoraError("The preset has no name", where="Save the form as preset", fix="Type a name first")
        cfg = form.config_from_values(TrainConfig, specs, list(values))
        path = presets.save_preset(cfg, backend.presets_dir / f"{safe_name(name.strip())}.toml")
        import gradio as gr
        return message_html(f"Saved {path}"), gr.update(choices=preset_choices(backend), value=path.stem)

    @guarded(1 + n_form, "Importing the preset")
    def on_import(upload: Any, *values):
        if upload is None:
            return [message_html("")] + no_change(n_form)
        check_uploads(backend, upload)
        imported = presets.load_preset(gradio_compat.uploaded_path(upload))
        save_form(backend.form_file, options.flatten(imported.config))
        return [message_html(imported.summary())] + form.values_from_config(imported.config, specs)

    c["apply_preset"].click(on_apply, [c["preset"]] + comps, [c["status"]] + comps)
    c["save_preset"].click(on_save_preset, [c["preset_name"]] + comps, [c["status"], c["preset"]])
    c["import_file"].change(on_import, [c["import_file"]] + comps, [c["status"]] + comps)


def _wire_run_controls(ctx: TabContext, c: dict) -> None:
    backend, specs, comps = ctx.backend, ctx.train_specs, ctx.train_components

    @guarded(3, "Starting the run")
    def on_start(task: str, *values):
        cfg = form.config_from_values(TrainConfig, specs, list(values))
        check_train_paths(policy_for(backend), cfg)
        save_form(backend.form_file, form.flat_from_values(specs, list(values)))
        job = train_job.start(backend.jobs(), backend.training, cfg, task_id=task)
        return message_html(f"Run {job.id} started: files go to {cfg.output.output_dir}"), job.id, job.state

    actions = {"pause": train_job.pause, "resume": lambda job: train_job.resume(backend.jobs(), job),
               "save": train_job.save_now, "cancel": Job.cancel}
    done = {"pause": "Pausing after the current step: once the state says paused, txt2img and the "
                     "X/Y/Z plot are free (see Try this epoch)", "resume": "Resumed",
            "save": "A LoRA file will be saved after the current step (at once while paused)",
            "cancel": "Stopping after the current step; saved epochs are kept"}

    def control(action: str):
        @guarded(2, f"{action.capitalize()}")
        def run(run_id_v: str):
            job = run_job(backend, run_id_v)
            actions[action](job)
            return message_html(done[action]), job.state
        return run

    c["start"].click(on_start, [c["task_id"]] + comps, [c["status"], c["run_id"], c["run_state"]],
                     **gradio_compat.js_kwargs("trainLoraStart"))
    for name, action in (("pause", "pause"), ("resume", "resume"), ("save_now", "save"), ("cancel", "cancel")):
        c[name].click(control(action), [c["run_id"]], [c["status"], c["run_state"]])


def _wire_progress(ctx: TabContext, c: dict) -> None:
    """The poll button (clicked by javascript/train_lora.js) refreshes progress, chart, samples and files."""
    backend = ctx.backend
    chart_cache: dict[str, int] = {}      # run id -> number of losses the chart was drawn from

    def on_poll(run_id_v: str):
        import gradio as gr
        if not run_id_v:
            return progress_html("idle", 0, 0, 0, 0, None), gr.update(), gr.update(), "", gr.update()
        try:
            job = run_job(backend, run_id_v)
        except LoraError as err:
            return message_html(str(err), "error"), gr.update(), gr.update(), "", gr.update()
        run = train_job.run_of(job)
        p = run.last
        html = progress_html(job.state, p.step if p else 0, run.total_steps, p.epoch if p else 0, run.total_epochs,
                             p.loss if p else None, p.it_per_s if p else 0.0, p.eta_s if p else float("inf"),
                             run.notice or run.status, job.error)
        chart_value = gr.update()
        if chart_cache.get(run_id_v) != len(run.losses):   # redraw only when new losses arrived
            chart_value = loss_chart(run.losses, run.lrs)
            chart_cache.clear()
            chart_cache[run_id_v] = len(run.losses)
        gallery = [(path, f"epoch {epoch}") for epoch, path in run.samples]
        listing = "\n".join(f"- `{f}`" for f in run.files) or "No files saved yet"
        return html, chart_value, gallery, job.state, listing

    c["poll"].click(on_poll, [c["run_id"]], [c["progress"], c["chart"], c["samples"], c["run_state"], c["files"]],
                    show_progress=gradio_compat.HIDE_PROGRESS)
    specs, comps = ctx.train_specs, ctx.train_components

    def steps_here(*values) -> str:
        try:
            cfg = form.config_from_values(TrainConfig, specs, list(values))
        except LoraError as err:      # a half-typed value elsewhere in the form
            return f"Steps: {err}"
        return steps_text(cfg, backend=ctx.backend)

    shown = {spec.name for spec in specs}
    for name in STEP_INPUTS:
        if name in shown:
            ctx.component(name).change(steps_here, comps, [c["steps"]], show_progress=gradio_compat.HIDE_PROGRESS)


def merge_form_values(saved: dict, specs: list, values: list) -> dict:
    """The remembered form updated with every value that parses; a half-typed number keeps its last
    good value, so a save in the middle of typing loses nothing."""
    flat = dict(saved)
    for spec, value in zip(specs, values):
        try:
            flat[spec.name] = form.from_component_value(spec, value)
        except LoraError:
            continue
    return flat


def _wire_form_memory(ctx: TabContext, c: dict) -> None:
    """Edits are remembered and the form comes back as it was after a page reload.

    One handler saves the whole form: javascript/train_lora.js clicks the hidden save button a
    moment after the user stops editing (one request per pause in typing, instead of one listener
    and one request per field and keystroke)."""
    backend, specs, comps = ctx.backend, ctx.train_specs, ctx.train_components

    def on_save(*values) -> None:
        saved = load_saved_form(backend.form_file)
        flat = merge_form_values(saved, specs, list(values))
        if flat != saved:
            save_form(backend.form_file, flat)

    def on_load():
        import gradio as gr
        saved = load_saved_form(backend.form_file)
        active = [job for job in backend.jobs().list(train_job.KIND) if job.active]
        run_values = [active[-1].id, active[-1].state] if active else [gr.update(), gr.update()]
        return form.values_from_flat(saved, specs, TrainConfig()) + run_values

    c["form_save"].click(on_save, comps, None, queue=False, show_progress=gradio_compat.HIDE_PROGRESS)
    ctx.dataset_dir.change(lambda v: v, [ctx.dataset_dir], [ctx.component("dataset.train_dir")], queue=False)
    ctx.load_outputs.append((on_load, comps + [c["run_id"], c["run_state"]]))
