"""The tools as typed calls from input files to an output file: extract, merge, resize.

What the Tools section of the tab runs as jobs (and what the CLI commands wrap): each takes
the paths and its config (ops/config.py), refuses an output that is not a new .safetensors
beside nothing it reads, writes the file with its metadata and the error report beside it,
and returns the report. `progress(done, total, what)` is called per layer; it may raise to
stop the tool (a job's Cancel): nothing is written then, since every write is atomic and
happens after the math (a merge into a checkpoint streams into a temporary file).
Nothing here prints: the caller shows `ToolResult.text()` wherever it wants.
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from ..errors import LoraError, NetworkFileError
from ..safe_paths import WriteGuard, check_write, guarded, resolved, shown
from .config import ExtractConfig, MergeConfig, ResizeConfig
from .report import OpReport

ProgressFn = Callable[[int, int, str], None]


@dataclass
class ToolResult:
    out: Path
    report: OpReport
    report_files: tuple[Path, Path]          # the JSON and CSV report beside the output

    def text(self, max_rows: int = 12) -> str:
        """The report's table (worst layers first), then what was written."""
        json_path, csv_path = self.report_files
        return (f"{self.report.format_text(max_rows=max_rows)}\n"
                f"wrote {self.out}\nreport: {json_path} and {csv_path.name}")


def output_guard(out: str | Path, inputs: list, purpose: str) -> WriteGuard:
    """The tool may write only `out` and its reports, beside it, and never one of its inputs.

    Checked before any work (an extract takes minutes), and again by fileio at each write."""
    from .report import report_paths
    out = Path(out)
    if out.suffix.lower() != ".safetensors":
        raise LoraError("The output must be a .safetensors file", where=shown(out),
                        fix="Give the output a name ending in .safetensors")
    given = [Path(p) for p in inputs if p]
    for target in (out, *report_paths(out)):
        clash = next((p for p in given if resolved(p) == resolved(target)), None)
        if clash is not None:
            raise LoraError(f"The output would replace an input of {purpose}", where=shown(target),
                            fix="Give the output a new file name; inputs are never overwritten")
    guard = WriteGuard([resolved(out).parent], protected=given, purpose=purpose)
    for target in (out, *report_paths(out)):
        check_write(target)             # a NUL, a folder or FIFO named like the output, a file in its path
        guard.check(target)
    return guard


def _finish(report: OpReport, out: Path) -> ToolResult:
    from .report import save_report
    return ToolResult(out, report, save_report(report, out))


def extract_to_file(base: str | Path, tuned: str | Path, out: str | Path, config: ExtractConfig,
                    progress: ProgressFn | None = None) -> ToolResult:
    """The LoRA of `tuned - base` at config.dim, written to `out`."""
    from ..networks import save_network_file
    from ..networks.metadata import tool_metadata
    from .extract import extract_lora
    out = Path(out)
    with guarded(output_guard(out, [base, tuned], "extract")):
        started = time.perf_counter()
        tensors, report, family = extract_lora(base, tuned, config, progress)
        if not tensors:
            raise LoraError("The two checkpoints do not differ in any layer a LoRA can hold", where=str(tuned),
                            fix="Check that the fine-tuned model is the second one and its original the first")
        report.settings["seconds"] = round(time.perf_counter() - started, 2)
        dim = "Dynamic" if config.dynamic else str(config.dim)
        meta = tool_metadata(family, out, dim, dim, conv_dim=config.conv_dim,
                             v_parameterization=config.v_parameterization, base_name=Path(base).name,
                             comment=f"extracted from {Path(tuned).name} - {Path(base).name} by lib_lora")
        meta["lib_lora_extract"] = json.dumps(report.summary())
        save_network_file(out, tensors, meta, config.precision)
        return _finish(report, out)


def check_loras_exist(loras: list[str | Path]) -> None:
    """The tools' one message for a LoRA path that names no file, before any reading (the networks
    reader, which the tools use as training does, says the same in its own words)."""
    for lora in loras:
        if not Path(lora).is_file():
            raise NetworkFileError("LoRA file not found", where=shown(Path(lora)), fix="Check the path")


def check_merge_target(config: MergeConfig, base: str | Path | None) -> None:
    """mode checkpoint merges into `base`; a LoRA out of LoRAs (concat, svd) takes none."""
    if config.mode == "checkpoint" and not base:
        raise LoraError("Merging into a checkpoint needs the checkpoint", where="merge",
                        fix="Name the checkpoint to merge into, or choose mode concat or svd for one LoRA")
    if config.mode != "checkpoint" and base:
        raise LoraError(f"A checkpoint to merge into is only for mode checkpoint, not {config.mode}",
                        where="merge", fix="Leave the checkpoint out to merge the LoRAs into one LoRA")


def merge_to_file(loras: list[str | Path], out: str | Path, config: MergeConfig, base: str | Path | None = None,
                  progress: ProgressFn | None = None) -> ToolResult:
    """The LoRAs merged into `base` (mode checkpoint) or into one LoRA (concat, svd), written to `out`."""
    from .lora_inputs import load_lora_inputs
    check_merge_target(config, base)
    if not loras:
        raise LoraError("No LoRA to merge", where="merge", fix="Name at least one LoRA file")
    out = Path(out)
    with guarded(output_guard(out, [*loras, base], "merge")):
        check_loras_exist(loras)
        inputs = load_lora_inputs(list(loras), config.weights, config.block_weights)
        if config.mode == "checkpoint":
            from .merge_checkpoint import merge_into_checkpoint
            report = merge_into_checkpoint(base, inputs, out, config, progress)
        else:
            report = _merge_to_lora(inputs, config, out, progress)
        return _finish(report, out)


def _merge_to_lora(inputs, config: MergeConfig, out: Path, progress: ProgressFn | None) -> OpReport:
    from ..networks import save_network_file
    from ..networks.metadata import tool_metadata
    from .merge_loras import merge_loras
    family = inputs[0].family()
    tensors, report = merge_loras(inputs, config, family, progress)
    ranks = {row.rank for row in report.written}
    dim = str(ranks.pop()) if len(ranks) == 1 else "Dynamic"
    meta = tool_metadata(family, out, dim, dim, comment="merged from " + ", ".join(
        f"{x.label}:{x.weight:g}" for x in inputs) + " by lib_lora")
    meta["lib_lora_merge"] = json.dumps(report.summary())
    save_network_file(out, tensors, meta, config.precision)
    return report


def resize_to_file(lora: str | Path, out: str | Path, config: ResizeConfig,
                   progress: ProgressFn | None = None) -> ToolResult:
    """`lora` at the rank config.dim (or by the dynamic rule), written to `out`."""
    from ..networks import load_network_file, save_network_file
    from .resize import resize_lora, resized_metadata
    out = Path(out)
    with guarded(output_guard(out, [lora], "resize")):
        check_loras_exist([lora])
        tensors, metadata = load_network_file(lora)
        resized, report = resize_lora(tensors, config, where=str(lora), progress=progress)
        save_network_file(out, resized, resized_metadata(metadata, resized, config, report), config.precision)
        return _finish(report, out)
