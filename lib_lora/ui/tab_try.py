"""Try this epoch: while a run is paused, judge its saved epochs in the WebUI itself.

Pause gives the WebUI back (pause_gate.py), so this panel can render with the
WebUI's own processing: the run's sample prompts with its latest saved file at
the grid weights, beside a no-LoRA column (webui/grid.py, the Evaluate grid's
renderer). "Send to X/Y/Z plot" fills txt2img the way the WebUI's own "Send to
txt2img" buttons do (modules.infotext_utils: an infotext pasted into txt2img's
fields): the prompt with `<lora:NAME-00000N:1>`, the X/Y/Z plot script chosen,
its X axis "LoRA epoch" over the run's epoch files and Y axis "LoRA weight" over
the grid weights (lib_lora/webui/xyz_axes.py), so the user only presses Generate.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from lib_lora import train_job
from lib_lora.config import SampleConfig, TrainConfig
from lib_lora.errors import LoraError
from lib_lora.jobs import Job
from lib_lora.evaluation.epoch_grid import epoch_files
from lib_lora.ui import gradio_compat
from lib_lora.ui.tab_common import TabContext, elem, guarded, run_job
from lib_lora.ui.render import error_html, message_html

# The X/Y/Z plot axes Train LoRA adds (lib_lora/webui/xyz_axes.py registers them under these names).
EPOCH_LABEL = "LoRA epoch"
WEIGHT_LABEL = "LoRA weight"
XYZ_TITLE = "X/Y/Z plot"           # the built-in script's title(), which its infotext "Script" names


def paused_run(backend: Any, run_id: str) -> tuple[Job, TrainConfig]:
    """The paused run and its config; only a run paused on a host that frees the model for the
    pause (the WebUI) leaves it free to try the run's files."""
    job = run_job(backend, run_id, "Try this epoch")
    if job.state != "paused":
        raise LoraError(f"The run is {job.state}, not paused", where="Try this epoch",
                        fix="Press Pause and wait until the state says paused: then the WebUI is free")
    if not backend.training.pause_frees_model:
        raise LoraError("Trying epochs while paused needs the WebUI", where="Try this epoch",
                        fix="Use the Evaluate section's grid when the run has finished")
    return job, train_job.run_of(job).cfg


def sample_prompts(cfg: TrainConfig) -> list[str]:
    prompts = [p for p in cfg.sample.prompts if p.strip()] or [w for w in [cfg.dataset.trigger_word] if w.strip()]
    if not prompts:
        raise LoraError("The run has no sample prompts and no trigger word", where="Samples > prompts",
                        fix="Type the prompts in the X/Y/Z plot yourself, or give the next run sample prompts")
    return prompts


def latest_file(files: list[str]) -> Path:
    """The newest LoRA file the run saved: an epoch, or a "Save now" file."""
    existing = [Path(f) for f in files if Path(f).is_file()]
    if not existing:
        raise LoraError("The run has saved no LoRA file yet", where="Try this epoch",
                        fix="Press Save now (it saves at once while paused), or resume until an epoch is saved")
    return max(existing, key=lambda p: p.stat().st_mtime_ns)


def try_latest(backend: Any, run_id: str) -> Path:
    """Render the run's sample prompts with its newest file at the grid weights (and without it), as a
    grid job of the registry: it holds the host (the WebUI's queue) while it renders."""
    job, cfg = paused_run(backend, run_id)
    path = latest_file(train_job.run_of(job).files)
    sample = SampleConfig(**{**vars(cfg.sample), "prompts": sample_prompts(cfg)})
    out = backend.grids_dir / f"{cfg.output.output_name}-try-{time.strftime('%Y%m%d-%H%M%S')}.png"
    grid = backend.jobs().submit("grid", f"trying {path.stem}", exclusive=True, background=False,
                                 fn=lambda j: backend.render_grid([path], sample, out, j.progress))
    if grid.state != "finished":
        raise LoraError(grid.error or f"The grid was {grid.state}", where="Try this epoch")
    return grid.result


def xyz_infotext(cfg: TrainConfig, epochs: list[str]) -> str:
    """txt2img parameters as the WebUI writes them under an image, for its paste to fill in."""
    s = cfg.sample
    prompt = f"{sample_prompts(cfg)[0]} <lora:{epochs[-1]}:1>"
    lines = [prompt] + ([f"Negative prompt: {s.negative_prompt}"] if s.negative_prompt.strip() else [])
    params = {"Steps": s.steps, "Sampler": s.sampler, "CFG scale": f"{s.cfg_scale:g}", "Seed": s.seed,
              "Size": f"{s.width}x{s.height}", "Script": XYZ_TITLE,
              "X Type": EPOCH_LABEL, "X Values": _quoted(", ".join(epochs)),
              "Y Type": WEIGHT_LABEL, "Y Values": _quoted(", ".join(f"{w:g}" for w in s.grid_weights))}
    return "\n".join(lines + [", ".join(f"{k}: {v}" for k, v in params.items())])


def _quoted(text: str) -> str:
    """A value holding commas is written in quotes, as the WebUI's infotext does."""
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def run_epochs(backend: Any, job: Job) -> list[str]:
    stems = [p.stem for p in epoch_files(backend.lora_dir, train_job.run_of(job).output_name)]
    if not stems:
        raise LoraError("The run has saved no epoch yet", where="Send to X/Y/Z plot",
                        fix="Resume until an epoch is saved (Output > save every N epochs), then pause again")
    return stems


def build_try_panel(ctx: TabContext, run_id: Any) -> None:
    import gradio as gr
    with gr.Accordion("Try this epoch (while paused)", open=False, elem_id=elem("try_panel")):
        gr.Markdown("Pause the run: the WebUI is free while it waits. Render the sample prompts with the newest "
                    "saved file at the grid weights, or send every saved epoch to the X/Y/Z plot in txt2img.")
        with gr.Row(elem_classes=["train-lora-hidden"]):
            infotext = gr.Textbox(elem_id=elem("try_infotext"))
            paste = gr.Button("paste into txt2img", elem_id=elem("try_xyz_paste"))   # clicked by train_lora.js
        paste_fn = ctx.backend.paste_to_txt2img            # only the WebUI has a txt2img to paste into
        can_send = paste_fn is not None and paste_fn(paste, infotext)
        with gr.Row():
            render = gr.Button("Try the latest epoch", elem_id=elem("try_render"))
            send = gr.Button("Send epochs to X/Y/Z plot", elem_id=elem("try_xyz"), visible=can_send)
        status = gr.HTML(elem_id=elem("try_status"))
        image = gr.Image(label="Latest epoch at the grid weights", type="filepath", interactive=False,
                         elem_id=elem("try_image"))
    backend = ctx.backend

    @guarded(2, "Trying the latest epoch")
    def on_render(run_id_v: str):
        path = try_latest(backend, run_id_v)
        return message_html(f"Rendered with the WebUI: {path}"), str(path)

    def on_send(run_id_v: str):
        """An empty infotext tells train_lora.js not to paste (the WebUI would paste its last generation)."""
        try:
            job, cfg = paused_run(backend, run_id_v)
            text = xyz_infotext(cfg, run_epochs(backend, job))
        except LoraError as err:
            return error_html(str(err)), ""
        return message_html("Sent to txt2img: press Generate there"), text

    render.click(on_render, [run_id], [status, image])
    event = send.click(on_send, [run_id], [status, infotext])
    event.then(None, None, None, **gradio_compat.js_kwargs("trainLoraPasteToTxt2img"))
