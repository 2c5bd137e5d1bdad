"""Tagging section: caption with a WD1.4 tagger (or a captioner the backend offers: inside the WebUI,
its DeepDanbooru or BLIP), bulk tag edits with undo, per-image caption edits.

Tagging runs as a job of the one registry (job_view.py) with progress and Cancel; it uses the
GPU, so it waits for the host (inside the WebUI: its queue) and shows on the WebUI's progress
bar. Bulk and caption edits rewrite text files in seconds and run in the handler.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lib_lora.config import TaggingConfig
from lib_lora.errors import DatasetError
from lib_lora.tagging.captioner import NAMES as CAPTIONER_NAMES
from lib_lora.ui import form, gradio_compat
from lib_lora.safe_paths import is_within
from lib_lora.jobs import Job
from lib_lora.ui.job_view import cancel_text, poll_view, started, submit
from lib_lora.ui.path_checks import check_paths
from lib_lora.ui.tab_common import TabContext, elem, guarded, job_widgets
from lib_lora.ui.render import message_html

TAGGING_FIELDS = ("general_threshold", "character_threshold", "trigger_word", "write_mode", "remove_junk_tags",
                  "replace_underscores", "exclude_tags")
BULK_ACTIONS = ("remove tags", "replace tag", "merge tags into a phrase", "move tags to the front",
                "add trigger word first", "prune tags (patterns)")
GALLERY_LIMIT = 200
JOB_KINDS = ("tag",)


def _folder(text: str) -> Path:
    folder = Path((text or "").strip())
    if not text or not folder.is_dir():
        raise DatasetError("The dataset folder does not exist", where=str(text or "Dataset folder"),
                           fix="Choose or upload a dataset in the Dataset section first")
    return folder


def _checked_folder(backend: Any, text: str) -> Path:
    """The dataset folder, once the path policy allows it (read recursively: symlinks inside checked too)."""
    folder = _folder(text)
    check_paths(backend, [("Dataset folder", str(folder), True)])
    return folder


def _checked_image(backend: Any, folder: Path, image: str) -> str:
    """The gallery's selected image (sent back by the page): one of the dataset folder's own files."""
    check_paths(backend, [("Selected image", image, False)])
    if not is_within(image, folder):
        raise DatasetError("The selected image is not in the dataset folder", where=str(image),
                           fix="Click Refresh, then pick the image in the gallery again")
    return image


def check_tagger_model(backend: Any, model: str) -> None:
    """A tagger given as a local folder (not a Hub repo id) is a path like any other."""
    text = (model or "").strip()
    if text and (os.path.isabs(text) or text.startswith(("~", ".")) or os.path.exists(text)):
        check_paths(backend, [("Tagger model", text, True)])


def _split(text: str) -> list[str]:
    return [t.strip() for t in (text or "").replace("\n", ",").split(",") if t.strip()]


def bulk_edit(action: str, tags: str, replacement: str):
    from lib_lora.tagging import edits
    targets = _split(tags)
    if action == "add trigger word first":
        if not replacement.strip() and not targets:
            raise DatasetError("No trigger word given", where="Bulk edit", fix="Type the trigger word in 'Tags'")
        return edits.add_trigger((replacement or tags).strip())
    if not targets:
        raise DatasetError("No tags given for the bulk edit", where="Tags", fix="Type the tags, comma-separated")
    if action == "remove tags":
        return edits.remove_tags(targets)
    if action == "replace tag":
        return edits.replace_tag(targets[0], replacement.strip())
    if action == "merge tags into a phrase":
        return edits.merge_tags(targets, replacement.strip() or " ".join(targets))
    if action == "move tags to the front":
        return edits.move_to_front(targets)
    return edits.prune_tags(targets)


def tag_summary(folder: Path, caption_extension: str = ".txt", top: int = 30) -> str:
    from lib_lora.tagging.edits import tag_counts
    from lib_lora.tagging.snapshot import describe_snapshot
    counts = tag_counts(folder, caption_extension)
    text = ", ".join(f"{t} ({n})" for t, n in counts.most_common(top)) or "no tags yet"
    undo = describe_snapshot(folder)
    return f"Top tags: {text}" + (f". Undo available: {undo}" if undo else "")


def caption_text(image: Path) -> str:
    """The image's caption, read in whatever encoding it was saved (UTF-8, BOM, UTF-16)."""
    from lib_lora.dataset.textfiles import read_caption_file
    from lib_lora.tagging.caption_writer import caption_path_for
    path = caption_path_for(image, ".txt")
    return read_caption_file(path)[0].strip() if path.is_file() else ""


def gallery_items(folder: Path) -> list[tuple[str, str]]:
    from lib_lora.dataset.files import find_images
    return [(str(image), caption_text(image)[:120]) for image in find_images(folder)[:GALLERY_LIMIT]]


def captioner_choices(backend: Any) -> list[str]:
    """WD14 everywhere, then what the backend offers (the WebUI's interrogators inside it)."""
    names = backend.captioners() if backend.captioners is not None else ["wd14"]
    return [CAPTIONER_NAMES.get(n, n) for n in names]


def captioner_key(label: str) -> str:
    return next((key for key, name in CAPTIONER_NAMES.items() if name == label), label or "wd14")


def tag_folder(job: Job, backend: Any, folder: Path, cfg: TaggingConfig):
    """The tagging job's work: the chosen captioner over the folder, with the job's progress and cancel."""
    from lib_lora.tagging.run import run_tagging
    captioner = None
    if cfg.captioner != "wd14":
        if backend.make_captioner is None:
            raise DatasetError(f"The captioner {cfg.captioner!r} is not offered here", where="Captioner",
                               fix="Tag with WD14")
        captioner = backend.make_captioner(cfg.captioner)
    return run_tagging(folder, cfg, progress=job.progress, should_stop=job.should_stop, captioner=captioner)


@dataclass
class TagOutcome:
    result: Any                 # tagging.run.TagRunResult
    folder: Path
    cfg: TaggingConfig

    @property
    def cancelled(self) -> bool:
        return bool(self.result.cancelled)


def tag_poll_outputs(jobs: Any, job_id: str) -> list:
    """[status, tag summary, gallery, job state] for the hidden poll button."""
    def shown(out: TagOutcome) -> list:
        return [message_html(tagging_message(out.result, out.cfg)), tag_summary(out.folder), gallery_items(out.folder)]
    return poll_view(jobs, job_id, JOB_KINDS, TagOutcome, 2, shown)


def tagging_message(result: Any, cfg: TaggingConfig) -> str:
    where = ", ".join(f"{name} on {provider}" for name, provider in result.providers.items())
    text = (f"Tagged {result.written + result.skipped + len(result.failed)} images: {result.written} captions "
            f"written, {result.skipped} kept (write mode {cfg.write_mode}; {where})"
            + (f", {len(result.failed)} failed" if result.failed else ""))
    return ("Cancelled. " + text) if result.cancelled else text


def build_tagging_section(ctx: TabContext) -> None:
    import gradio as gr
    specs = [s for s in form.field_specs(TaggingConfig, ctx.backend.host) if s.name in TAGGING_FIELDS]
    defaults = TaggingConfig()
    with gr.Row():
        captioners = captioner_choices(ctx.backend)
        captioner = gr.Dropdown(captioners, value=captioners[0], label="Captioner", elem_id=elem("captioner"),
                                visible=len(captioners) > 1,
                                info="DeepDanbooru and BLIP are the WebUI's interrogators (its Interrogate "
                                     "settings apply); filters, trigger word and write mode apply to all")
        choices = ctx.backend.tagger_choices()
        ctx.tagger_model = gr.Dropdown(choices, value=choices[0], label="Tagger model", allow_custom_value=True,
                                       elem_id=elem("tagger_model"),
                                       info="A local folder with model.onnx + selected_tags.csv, or a Hub repo id")
        tag_button = gr.Button("Tag images", variant="primary", elem_id=elem("tag_button"))
        tag_cancel = gr.Button("Cancel", variant="stop", size="sm", elem_id=elem("tag_cancel"), scale=0)
    with gr.Accordion("Tagger options", open=False):
        components = [form.make_component(s, getattr(defaults, s.name), prefix="train_lora_tagging_")
                      for s in specs]
    status = gr.HTML(elem_id=elem("tagging_status"))
    job = job_widgets("tagjob", "tagging")
    summary = gr.Textbox(label="Tags", interactive=False, lines=3, elem_id=elem("tag_summary"))
    with gr.Row():
        action = gr.Dropdown(list(BULK_ACTIONS), value=BULK_ACTIONS[0], label="Bulk edit", elem_id=elem("bulk_action"))
        tags = gr.Textbox(label="Tags", elem_id=elem("bulk_tags"), info="Comma-separated")
        replacement = gr.Textbox(label="With (replace / merge / trigger)", elem_id=elem("bulk_with"))
    with gr.Row():
        apply = gr.Button("Apply to every caption", elem_id=elem("bulk_apply"))
        undo = gr.Button("Undo last edit", elem_id=elem("bulk_undo"))
        refresh = gr.Button("Show images", elem_id=elem("gallery_refresh"))
    gallery = gr.Gallery(label="Images (click one to edit its caption)", columns=6, height=360,
                         elem_id=elem("tag_gallery"))
    with gr.Row():
        selected = gr.Textbox(label="Image", interactive=False, elem_id=elem("caption_image"), scale=2)
        caption = gr.Textbox(label="Caption", elem_id=elem("caption_text"), scale=4)
        save_caption = gr.Button("Save caption", elem_id=elem("caption_save"), scale=1)

    c = {k: v for k, v in locals().items() if k != "job"}
    _wire_tagging(ctx, specs, {**c, **job})


def _wire_tagging(ctx: TabContext, specs: list, c: dict) -> None:
    """Event handlers of the Tagging section; `c` holds its components by name."""
    import gradio as gr

    _wire_tag_job(ctx, specs, c)

    @guarded(3, "The bulk edit")
    def on_apply(folder_text: str, action_v: str, tags_v: str, with_v: str):
        from lib_lora.tagging.edits import apply_bulk_edit
        folder = _checked_folder(ctx.backend, folder_text)
        result = apply_bulk_edit(folder, bulk_edit(action_v, tags_v, with_v), action_v)
        return (message_html(f"{action_v}: {result.changed} of {result.total} captions changed"),
                tag_summary(folder), gallery_items(folder))

    @guarded(3, "Undo")
    def on_undo(folder_text: str):
        from lib_lora.tagging.snapshot import undo_last
        folder = _checked_folder(ctx.backend, folder_text)
        restored = undo_last(folder)
        return message_html(f"Restored {restored} captions"), tag_summary(folder), gallery_items(folder)

    @guarded(3, "Listing the images")
    def on_refresh(folder_text: str):
        folder = _checked_folder(ctx.backend, folder_text)
        return message_html(""), tag_summary(folder), gallery_items(folder)

    def on_select(folder_text, evt):
        items = gallery_items(_checked_folder(ctx.backend, folder_text))
        if evt is None or evt.index is None or evt.index >= len(items):
            return "", ""
        image = items[evt.index][0]
        return image, caption_text(Path(image))

    @guarded(2, "Saving the caption")
    def on_save(folder_text: str, image: str, text: str):
        from lib_lora.tagging.edits import edit_caption
        if not image:
            raise DatasetError("No image is selected", where="Caption", fix="Click an image in the gallery first")
        folder = _checked_folder(ctx.backend, folder_text)
        edit_caption(_checked_image(ctx.backend, folder, image), text)
        return message_html(f"Saved the caption of {Path(image).name}"), tag_summary(folder)

    on_select.__annotations__ = {"evt": gr.SelectData}   # how Gradio knows to pass the selection
    listing = [c["status"], c["summary"], c["gallery"]]
    c["apply"].click(on_apply, [ctx.dataset_dir, c["action"], c["tags"], c["replacement"]], listing)
    c["undo"].click(on_undo, [ctx.dataset_dir], listing)
    c["refresh"].click(on_refresh, [ctx.dataset_dir], listing)
    c["gallery"].select(on_select, [ctx.dataset_dir], [c["selected"], c["caption"]])
    c["save_caption"].click(on_save, [ctx.dataset_dir, c["selected"], c["caption"]], [c["status"], c["summary"]])


def _wire_tag_job(ctx: TabContext, specs: list, c: dict) -> None:
    """Tag images as a background job: start, Cancel, and the hidden poll that brings progress and results."""
    jobs = ctx.backend.jobs()

    @guarded(4, "Tagging")
    def on_tag(task: str, folder_text: str, captioner_label: str, model: str, *values):
        folder = _checked_folder(ctx.backend, folder_text)
        check_tagger_model(ctx.backend, model)
        cfg = form.config_from_values(TaggingConfig, specs, list(values))
        cfg.models, cfg.captioner = [model], captioner_key(captioner_label)
        cfg.models_dir = str(ctx.backend.tagger_models_dir)
        job = submit(jobs, "tag", f"tagging {folder.name}",
                     lambda j: TagOutcome(tag_folder(j, ctx.backend, folder, cfg), folder, cfg),
                     exclusive=True, task_id=task)
        return started(job, f"Tagging with {CAPTIONER_NAMES[cfg.captioner]} ...")

    @guarded(1, "Cancel")
    def on_cancel(job_id_v: str):
        return message_html(cancel_text(jobs, job_id_v, JOB_KINDS))

    c["tag_button"].click(on_tag, [c["task_id"], ctx.dataset_dir, c["captioner"], ctx.tagger_model] + c["components"],
                          [c["status"], c["job_id"], c["job_state"], c["webui_task"]],
                          **gradio_compat.js_kwargs("trainLoraJobStart"))
    c["tag_cancel"].click(on_cancel, [c["job_id"]], [c["status"]], queue=False)
    c["poll"].click(lambda job_id_v: tag_poll_outputs(jobs, job_id_v), [c["job_id"]],
                    [c["status"], c["summary"], c["gallery"], c["job_state"]],
                    show_progress=gradio_compat.HIDE_PROGRESS, queue=False)
