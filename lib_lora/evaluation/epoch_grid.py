"""The epoch x weight grid, independent of who renders the cells.

Columns: a no-LoRA baseline, then every saved epoch; rows: each prompt x each
weight. The same seed is used in every cell of a row so only the LoRA differs.
`render_cell(prompt, file_or_None, weight, seed)` is supplied by the renderer:
the WebUI's txt2img with `<lora:name:w>` (webui/grid.py) or the diffusers
pipeline (render_diffusers.py). Cells are rendered file by file, so a renderer
that keeps one network attached can change only its multiplier between weights.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from PIL import Image

from ..errors import LoraError
from .grid_image import labelled_grid

RenderCell = Callable[[str, "Path | None", float, int], Image.Image]
ProgressFn = Callable[[int, int, str], None]


@dataclass
class GridSpec:
    files: list[Path]
    prompts: list[str]
    weights: list[float] = field(default_factory=lambda: [0.6, 0.7, 0.8, 0.9, 1.0])
    seed: int = 1234
    baseline: bool = True
    title: str = ""

    def column_labels(self) -> list[str]:
        return (["no LoRA"] if self.baseline else []) + [epoch_label(f) for f in self.files]

    def row_labels(self) -> list[str]:
        many = len(self.prompts) > 1
        return [(f"{short_prompt(p)} | w {w:g}" if many else f"w {w:g}") for p in self.prompts for w in self.weights]

    def check(self) -> None:
        if not self.files:
            raise LoraError("The run has no saved epoch files", where="grid",
                            fix="Train at least one epoch (files are saved every N epochs), then draw the grid")
        if not self.weights:
            raise LoraError("No weights were given for the grid", where="grid weights",
                            fix="Enter weights such as 0.6, 0.7, 0.8, 0.9, 1.0")
        if not [p for p in self.prompts if p.strip()]:
            raise LoraError("No prompt was given for the grid", where="grid prompts",
                            fix="Enter one prompt per line: the trigger word plus a trait never in the data")


def short_prompt(prompt: str, limit: int = 18) -> str:
    return prompt if len(prompt) <= limit else prompt[:limit - 1] + "…"


def epoch_of(path: Path) -> int | None:
    """The epoch of a run's epoch file, None for any other file."""
    from ..training.saving import parse_epoch_file   # the trainer's naming; torch only when asked
    parsed = parse_epoch_file(path)
    return parsed[1] if parsed else None


def epoch_label(path: Path) -> str:
    epoch = epoch_of(path)
    return f"epoch {epoch}" if epoch is not None else Path(path).stem


def epoch_files(folder: str | Path, name: str) -> list[Path]:
    """The run's epoch files sorted by epoch (training.saving.list_epoch_files, the one rule)."""
    from ..training.saving import list_epoch_files
    return list_epoch_files(folder, name)


def run_names(folder: str | Path) -> list[str]:
    """Names of runs with epoch files in `folder`, newest first."""
    from ..training.saving import parse_epoch_file
    found: dict[str, float] = {}
    for p in Path(folder).iterdir() if Path(folder).is_dir() else []:
        parsed = parse_epoch_file(p)
        if parsed and p.is_file():
            found[parsed[0]] = max(found.get(parsed[0], 0.0), p.stat().st_mtime)
    return sorted(found, key=lambda n: -found[n])


def render_grid_cells(spec: GridSpec, render_cell: RenderCell,
                      progress: ProgressFn | None = None) -> list[list[Image.Image]]:
    """cells[row][col]; rendered column by column (one file at a time), rows = prompts x weights."""
    spec.check()
    prompts = [p for p in spec.prompts if p.strip()]
    spec.prompts = prompts
    n_rows = len(prompts) * len(spec.weights)
    columns: list[list[Image.Image]] = []
    total = len(prompts) * (1 if spec.baseline else 0) + len(spec.files) * n_rows
    done = 0
    if spec.baseline:
        base = []
        for prompt in prompts:
            image = render_cell(prompt, None, 0.0, spec.seed)
            base += [image] * len(spec.weights)
            done += 1
            if progress:
                progress(done, total, f"no LoRA: {prompt}")
        columns.append(base)
    for path in spec.files:
        column = []
        for prompt in prompts:
            for weight in spec.weights:
                column.append(render_cell(prompt, path, weight, spec.seed))
                done += 1
                if progress:
                    progress(done, total, f"{epoch_label(path)} at {weight:g}")
        columns.append(column)
    return [[col[r] for col in columns] for r in range(n_rows)]


def compose_grid(spec: GridSpec, cells: list[list[Image.Image]]) -> Image.Image:
    return labelled_grid(cells, spec.column_labels(), spec.row_labels(), title=spec.title)


def save_grid(image: Image.Image, out_path: str | Path) -> Path:
    from ..fileio import write_with
    return write_with(out_path, lambda tmp: image.save(tmp, format="PNG"))
