"""Dataset section: choose a folder on the server or upload files / a folder / a zip, see the report, preprocess."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from lib_lora.config import PrepConfig
from lib_lora.errors import DatasetError
from lib_lora.webui import form
from lib_lora.webui.tab_common import TabContext, elem, guarded
from lib_lora.webui.ui_render import message_html, report_html

KINDS = ("character", "style", "concept")


def _uploaded_paths(files: Any) -> list[str]:
    """Gradio 3 gives temp-file objects (with .name) or plain paths, one per file."""
    if not files:
        return []
    items = files if isinstance(files, list) else [files]
    return [getattr(f, "name", f) for f in items if f]


def dataset_report(folder: str, kind: str, epochs: float, batch_size: float) -> dict:
    from lib_lora.dataset.report import ReportOptions, build_report
    folder = (folder or "").strip()
    if not folder:
        raise DatasetError("No dataset folder is chosen", where="Dataset folder",
                           fix="Type the folder that holds the <repeats>_<name> folders, or upload images")
    options = ReportOptions(kind=kind or "character", epochs=max(1, int(epochs or 1)),
                            batch_size=max(1, int(batch_size or 1)))
    return build_report(folder, options).to_dict()


def import_upload(backend: Any, name: str, concept: str, repeats: float, files: Any, folder_files: Any) -> Path:
    from lib_lora.dataset.importer import import_dataset
    sources = _uploaded_paths(files) + _uploaded_paths(folder_files)
    if not sources:
        raise DatasetError("Nothing was uploaded", where="Upload",
                           fix="Drop images, a folder or a zip into one of the upload boxes first")
    result = import_dataset(sources, backend.datasets_root, (name or "dataset").strip(), concept=concept or "",
                            repeats=int(repeats or 10))
    return result.train_dir


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
    status = gr.HTML(elem_id=elem("dataset_status"))
    report = gr.HTML(elem_id=elem("dataset_report"))
    with gr.Accordion("Preprocess (writes fixed copies; originals stay untouched)", open=False,
                      elem_id=elem("prep_accordion")):
        prep_specs = form.field_specs(PrepConfig)
        prep_components = [form.make_component(s, getattr(PrepConfig(), s.name), prefix="train_lora_prep_")
                           for s in prep_specs]
        prep_out = gr.Textbox(label="Write the copies to", elem_id=elem("prep_out"),
                              info="Empty: next to the dataset, with _prep added")
        prep = gr.Button("Preprocess", elem_id=elem("prep_button"))

    def epochs_batch() -> tuple[float, float]:
        return ctx.saved_form.get("training.epochs", 10), ctx.saved_form.get("training.batch_size", 2)

    @guarded(2, "The dataset check")
    def on_check(folder_text: str, kind_value: str):
        epochs, batch = epochs_batch()
        return message_html("Report ready"), report_html(dataset_report(folder_text, kind_value, epochs, batch))

    @guarded(3, "The import")
    def on_upload(name_v, concept_v, repeats_v, files_v, folder_v, kind_value):
        train_dir = import_upload(ctx.backend, name_v, concept_v, repeats_v, files_v, folder_v)
        epochs, batch = epochs_batch()
        report_dict = dataset_report(str(train_dir), kind_value, epochs, batch)
        return (message_html(f"Imported {report_dict['images']} images into {train_dir}"), str(train_dir),
                report_html(report_dict))

    @guarded(3, "Preprocessing")
    def on_prep(folder_text: str, out_text: str, *prep_values):
        from lib_lora.dataset.prep import run_prep
        cfg = form.config_from_values(PrepConfig, prep_specs, list(prep_values))
        src = Path((folder_text or "").strip())
        dst = Path(out_text.strip()) if out_text and out_text.strip() else src.with_name(src.name + "_prep")
        result = run_prep(src, None if cfg.in_place else dst, cfg)
        target = src if cfg.in_place else dst
        text = (f"Preprocessed into {target}: {len(result.written)} images changed, {len(result.copied)} copied, "
                f"{len(result.skipped)} skipped")
        return message_html(text), str(target), report_html(dataset_report(str(target), "character", 10, 2))

    check.click(on_check, [ctx.dataset_dir, kind], [status, report])
    upload.click(on_upload, [name, concept, repeats, files, folder, kind], [status, ctx.dataset_dir, report])
    prep.click(on_prep, [ctx.dataset_dir, prep_out] + prep_components, [status, ctx.dataset_dir, report])

