"""The epoch x weight grid rendered by the WebUI itself: txt2img with `<lora:name:w>`.

Every cell goes through modules.processing with the user's loaded checkpoint,
VAE and sampler, so the grid shows what the user will get. Seeds are fixed per
row. The caller holds the WebUI (a job the host ran exclusively: its queue lock
and shared.state, lib_lora/webui/host.py), so a generation started meanwhile
waits, the progress shows on the WebUI's bar and its Interrupt stops the grid.
"""
from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

from lib_lora.config import SampleConfig
from lib_lora.errors import LoraError
from lib_lora.webui.lora_list import refresh_lora_list


def lora_prompt(prompt: str, path: Path | None, weight: float) -> str:
    """The prompt with `<lora:<file stem>:<weight>>` appended (nothing for the baseline)."""
    if path is None or weight == 0:
        return prompt
    return f"{prompt} <lora:{Path(path).stem}:{weight:g}>"


def make_processing(processing: Any, shared: Any, prompt: str, sample: SampleConfig, seed: int):
    p = processing.StableDiffusionProcessingTxt2Img(sd_model=shared.sd_model, do_not_save_grid=True,
                                                    do_not_save_samples=True)
    p.prompt, p.negative_prompt = prompt, sample.negative_prompt
    p.seed, p.steps, p.cfg_scale = seed, sample.steps, sample.cfg_scale
    p.width, p.height, p.sampler_name = sample.width, sample.height, sample.sampler
    p.batch_size = p.n_iter = 1
    return p


class WebUICellRenderer:
    """render_cell for epoch_grid: one txt2img per cell through the WebUI."""

    def __init__(self, sample: SampleConfig):
        from modules import processing, shared   # the WebUI, only inside webui/ and only lazily
        self.processing, self.shared, self.sample = processing, shared, sample

    def __call__(self, prompt: str, path: Path | None, weight: float, seed: int):
        if self.shared.state.interrupted:
            raise LoraError("The grid was interrupted", where="Evaluate", fix="Start it again when ready")
        p = make_processing(self.processing, self.shared, lora_prompt(prompt, path, weight), self.sample, seed)
        with contextlib.closing(p):
            processed = self.processing.process_images(p)
        if not processed.images:
            raise LoraError("The WebUI returned no image for a grid cell", where=p.prompt,
                            fix="Check the WebUI console for the error, then try again")
        self.shared.state.assign_current_image(processed.images[0])
        return processed.images[0]


def render_webui_grid(files: list[Path], sample: SampleConfig, out_path: Path, progress=None,
                      title: str = "") -> Path:
    """Render and save the grid (the caller holds the WebUI); returns the PNG path.
    `progress(done, total, text)` per cell; it may raise to stop the grid."""
    from lib_lora.evaluation.epoch_grid import GridSpec, compose_grid, render_grid_cells, save_grid
    spec = GridSpec(list(files), list(sample.prompts), list(sample.grid_weights), sample.seed,
                    title=title or f"seed {sample.seed}, {sample.steps} steps, {sample.sampler}")
    spec.check()
    refresh_lora_list()
    cells = render_grid_cells(spec, WebUICellRenderer(sample), progress)
    return Path(save_grid(compose_grid(spec, cells), out_path))
