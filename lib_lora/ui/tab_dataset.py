"""Dataset section: choose a folder on the server or upload files / a folder / a zip, see the report, preprocess.

Check, import and preprocess run as jobs of the one registry (job_view.py): the
button returns at once, a hidden poll button brings the progress and, at the end,
the report; Cancel stops the job after the current image. Check and import only
read and write files, so they never wait for the host; a prep with a model
upscaler uses the GPU and waits for it. The upscalers are the backend's (the
WebUI's inside it); Lanczos everywhere.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lib_lora import options
from lib_lora.config import PrepConfig, TrainConfig
from lib_lora.errors import DatasetError, LoraError
from lib_lora.ui import form, gradio_compat
from lib_lora.jobs import Job
from lib_lora.ui.job_view import cancel_text, poll_view, started, stoppable, submit
from lib_lora.ui.path_checks import check_paths, check_uploads
from lib_lora.ui.tab_common import TabContext, elem, guarded, job_widgets
from lib_lora.ui.render import message_html, report_html

KINDS = ("character", "style", "concept")
JOB_KINDS = ("check", "import", "prep")
PLAIN_UPSCALERS = ("", "none", "lanczos", "nearest")      # plain resizes: no model, no GPU


@dataclass
class DatasetOutcome:
    """What a finished dataset job shows: a message, maybe a new dataset folder, maybe a report."""
    message: str
    folder: str | None = None
    report: dict | None = None
    cancelled: bool = False


def _chosen_folder(folder: str) -> str:
    folder = (folder or "").strip()
    if not folder:
        raise DatasetError("No dataset folder is chosen", where="Dataset folder",
                           fix="Type the folder that holds the <repeats>_<name> folders, or upload images")
    return folder


def dataset_report(folder: str, kind: str, epochs: float, batch_size: float, progress=None, *,
                   run: TrainConfig | None = None) -> dict:
    """The report of `folder`; with `run` (the Train form) its steps are counted as that run takes
    them (buckets, regularization images, accumulation), else from epochs and batch size alone."""
    from lib_lora.dataset.report import ReportOptions, build_report
    if run is not None:
        report_options = ReportOptions.for_run(run, kind or "character")
    else:
        report_options = ReportOptions(kind=kind or "character", epochs=max(1, int(epochs or 1)),
                                       batch_size=max(1, int(batch_size or 1)))
    return build_report(_chosen_folder(folder), report_options, progress).to_dict()


def remembered_run(ctx: TabContext) -> TrainConfig | None:
    """The Train form as last remembered (edits are saved as they happen); None when it does not parse."""
    from lib_lora.ui.tab_train import load_saved_form
    flat = load_saved_form(ctx.backend.form_file) or ctx.saved_form
    try:
        return options.from_dict(TrainConfig, options.unflatten(flat))
    except LoraError:
        return None


def import_upload(backend: Any, name: str, concept: str, repeats: float, files: Any, folder_files: Any,
                  progress=None) -> Path:
    from lib_lora.dataset.importer import import_dataset
    sources = gradio_compat.uploaded_paths(files) + gradio_compat.uploaded_paths(folder_files)
    if not sources:
        raise DatasetError("Nothing was uploaded", where="Upload",
                           fix="Drop images, a folder or a zip into one of the upload boxes first")
    result = import_dataset(sources, backend.datasets_root, (name or "dataset").strip(), concept=concept or "",
                            repeats=int(repeats or 10), progress=progress)
    return result.train_dir


def prep_outcome(job: Job, backend: Any, folder: str, out: str, cfg: PrepConfig) -> DatasetOutcome:
    """Preprocess `folder` (the job's work): copies into `out` (default: beside it, with _prep added)."""
    from lib_lora.dataset.prep import run_prep
    src = Path(_chosen_folder(folder))
    dst = Path(out.strip()) if out and out.strip() else src.with_name(src.name + "_prep")
    hook = None
    if cfg.upscale_small and backend.upscale_hook is not None:
        hook = backend.upscale_hook(cfg.upscaler)
    result = run_prep(src, None if cfg.in_place else dst, cfg, upscaler=hook, progress=job.progress,
                      should_stop=job.should_stop)
    target = src if cfg.in_place else dst
    text = (f"Preprocessed into {target}: {len(result.written)} images changed, {len(result.copied)} copied, "
            f"{len(result.skipped)} skipped, {result.upscaled} upscaled ({cfg.upscaler})")
    if result.renamed:
        text += (f". {len(result.renamed)} renamed so no two images share a name: "
                 + ", ".join(f"{s.name} -> {o.name}" for s, o in result.renamed[:5])
                 + (" ..." if len(result.renamed) > 5 else ""))
    if result.cancelled:
        return DatasetOutcome("Cancelled. " + text, str(target), None, cancelled=True)
    return DatasetOutcome(text, str(target), dataset_report(str(target), "character", 10, 2))


def prep_target(folder: str, out: str, cfg: PrepConfig) -> str:
    """Where prep will write: the folder itself (in place), the chosen folder, or beside the dataset."""
    if cfg.in_place:
        return folder
    if out and out.strip():
        return out
    src = Path(folder)
    return str(src.with_name(src.name + "_prep")) if src.name else ""


def uses_gpu(cfg: PrepConfig) -> bool:
    """Model upscalers run on the GPU: such a prep waits for the host (inside the WebUI, its queue)."""
    return cfg.upscale_small and cfg.upscaler.strip().lower() not in PLAIN_UPSCALERS


def upscaler_choices(backend: Any) -> list[str]:
    """The backend's upscalers (the WebUI's: Lanczos and its models); Lanczos alone elsewhere."""
    if backend.upscalers is not None:
        return backend.upscalers()
    return [PrepConfig().upscaler]


def poll_outputs(jobs: Any, job_id: str) -> list:
    """[status, dataset folder, report, job state] for the hidden poll button."""
    import gradio as gr

    def shown(outcome: DatasetOutcome) -> list:
        report = report_html(outcome.report) if outcome.report is not None else gr.update()
        return [message_html(outcome.message), outcome.folder or gr.update(), report]
    return poll_view(jobs, job_id, JOB_KINDS, DatasetOutcome, 2, shown)


def build_dataset_section(ctx: TabContext) -> None:
    import gradio as gr
    with gr.Row():
        ctx.dataset_dir = gr.Textbox(label="Dataset folder", elem_id=elem("dataset_dir"), scale=4,
                                     value=ctx.saved_form.get("dataset.train_dir", ""),
                                     info="Parent of the <repeats>_<name> folders (a path on the server)")
        kind = gr.Dropdown(list(KINDS), value="character", label="Kind", elem_id=elem("dataset_kind"), scale=1)
        check = gr.Button("Check dataset", elem_id=elem("dataset_check"), scale=1)
    with gr.Accordion("Upload images, a folder or a zip", open=True, elem_id=elem("upload_accordion")):
        with gr.Row():
            name = gr.Textbox(label="Dataset name", value="my_dataset", elem_id=elem("upload_name"))
            concept = gr.Textbox(label="Concept (trigger word)", value="", elem_id=elem("upload_concept"))
            repeats = gr.Number(label="Repeats", value=10, precision=0, elem_id=elem("upload_repeats"))
        with gr.Row():
            files = gr.File(label="Files or a zip", file_count="multiple", elem_id=elem("upload_files"))
            folder = gr.File(label="A folder", file_count="directory", elem_id=elem("upload_folder"))
        upload = gr.Button("Import upload", variant="primary", elem_id=elem("upload_button"))
    with gr.Row():
        status = gr.HTML(elem_id=elem("dataset_status"))
        cancel = gr.Button("Cancel", variant="stop", size="sm", elem_id=elem("data_cancel"), scale=0)
    job = job_widgets("data", "dataset")
    report = gr.HTML(elem_id=elem("dataset_report"))
    with gr.Accordion("Preprocess (writes fixed copies; originals stay untouched)", open=False,
                      elem_id=elem("prep_accordion")):
        prep_specs = form.field_specs(PrepConfig, ctx.backend.host)
        prep_components = [_prep_component(ctx, s) for s in prep_specs]
        prep_out = gr.Textbox(label="Write the copies to", elem_id=elem("prep_out"),
                              info="Empty: next to the dataset, with _prep added")
        prep = gr.Button("Preprocess", elem_id=elem("prep_button"))
    c = {k: v for k, v in locals().items() if k != "job"}
    _wire_dataset(ctx, prep_specs, {**c, **job})


def _prep_component(ctx: TabContext, spec: form.FieldSpec):
    import gradio as gr
    if spec.name != "upscaler":
        return form.make_component(spec, getattr(PrepConfig(), spec.name), prefix="train_lora_prep_")
    choices = upscaler_choices(ctx.backend)
    return gr.Dropdown(choices, value=choices[0], label="Upscaler", elem_id=elem("prep_upscaler"),
                       info="For images smaller than the target (at most 2x): the WebUI's upscalers inside it, "
                            "Lanczos elsewhere")


def _wire_dataset(ctx: TabContext, prep_specs: list, c: dict) -> None:
    """Event handlers of the Dataset section; `c` holds its components by name."""
    backend, jobs = ctx.backend, ctx.backend.jobs()

    def report_of(folder: str, kind_value: str, job: Job) -> dict:
        run = remembered_run(ctx)
        if run is not None:       # the report reads the run's regularization folder too
            check_paths(backend, [("Regularization folder", run.dataset.reg_dir, True)])
        return dataset_report(folder, kind_value, ctx.saved_form.get("training.epochs", 10),
                              ctx.saved_form.get("training.batch_size", 2), stoppable(job), run=run)

    @guarded(4, "The dataset check")
    def on_check(task: str, folder_text: str, kind_value: str):
        folder = _chosen_folder(folder_text)
        check_paths(backend, [("Dataset folder", folder, True)])
        return started(submit(jobs, "check", "check", lambda job: DatasetOutcome(
            "Report ready", None, report_of(folder, kind_value, job)), exclusive=False))

    @guarded(4, "The import")
    def on_upload(task: str, name_v, concept_v, repeats_v, files_v, folder_v, kind_value):
        if not (gradio_compat.uploaded_paths(files_v) or gradio_compat.uploaded_paths(folder_v)):
            import_upload(backend, name_v, concept_v, repeats_v, files_v, folder_v)   # says what is missing
        check_uploads(backend, files_v, folder_v)

        def work(job: Job) -> DatasetOutcome:
            train_dir = import_upload(backend, name_v, concept_v, repeats_v, files_v, folder_v, stoppable(job))
            report_dict = report_of(str(train_dir), kind_value, job)
            return DatasetOutcome(f"Imported {report_dict['images']} images into {train_dir}", str(train_dir),
                                  report_dict)
        return started(submit(jobs, "import", "import", work, exclusive=False))

    @guarded(4, "Preprocessing")
    def on_prep(task: str, folder_text: str, out_text: str, *prep_values):
        cfg = form.config_from_values(PrepConfig, prep_specs, list(prep_values))
        folder = _chosen_folder(folder_text)
        target = prep_target(folder, out_text, cfg)
        check_paths(backend, [("Dataset folder", folder, True), ("Write the copies to", target, False)])
        return started(submit(jobs, "prep", "preprocessing", lambda job: prep_outcome(job, backend, folder,
                                                                                       out_text, cfg),
                              exclusive=uses_gpu(cfg), task_id=task))

    @guarded(1, "Cancel")
    def on_cancel(job_id_v: str):
        return message_html(cancel_text(jobs, job_id_v, JOB_KINDS))

    job_outputs = [c["status"], c["job_id"], c["job_state"], c["webui_task"]]
    start_js = gradio_compat.js_kwargs("trainLoraJobStart")
    c["check"].click(on_check, [c["task_id"], ctx.dataset_dir, c["kind"]], job_outputs, **start_js)
    c["upload"].click(on_upload, [c["task_id"], c["name"], c["concept"], c["repeats"], c["files"], c["folder"],
                                  c["kind"]], job_outputs, **start_js)
    c["prep"].click(on_prep, [c["task_id"], ctx.dataset_dir, c["prep_out"]] + c["prep_components"], job_outputs,
                    **start_js)
    c["cancel"].click(on_cancel, [c["job_id"]], [c["status"]], queue=False)
    c["poll"].click(lambda job_id_v: poll_outputs(jobs, job_id_v), [c["job_id"]],
                    [c["status"], ctx.dataset_dir, c["report"], c["job_state"]],
                    show_progress=gradio_compat.HIDE_PROGRESS, queue=False)
