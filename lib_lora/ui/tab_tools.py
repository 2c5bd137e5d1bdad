"""Tools section: extract a LoRA from two checkpoints, merge LoRAs, resize a LoRA's rank.

Each form is built from its typed config (ops/config.py: ExtractConfig, MergeConfig,
ResizeConfig) by form.field_specs, like the Train form, so an option, its default, help and
range are declared once and the CLI (`python -m lib_lora extract|merge|resize`) offers the
same. A tool runs as a job of the one registry (job_view.py) calling lib_lora/ops/tool_files
with that config: progress per layer, Cancel between layers, and its result shown from the
report it returns (nothing is captured from stdout, which other threads share). On cuda it
waits for the host like any GPU job; on the CPU it does not wait for a training run.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from lib_lora.errors import LoraError
from lib_lora.ops.config import ExtractConfig, MergeConfig, ResizeConfig
from lib_lora.ui import form, gradio_compat
from lib_lora.ui.job_view import cancel_text, poll_view, started, stoppable, submit
from lib_lora.ui.path_checks import check_paths
from lib_lora.ui.render import message_html
from lib_lora.ui.tab_common import elem, guarded, job_widgets


@dataclass(frozen=True)
class PathField:
    key: str                     # its elem_id is train_lora_<tool>_<key>
    label: str
    required: bool = True
    lines: int = 1               # more than one: one path per line


@dataclass(frozen=True)
class Tool:
    kind: str                    # the job kind and the CLI command
    title: str
    config: type
    paths: tuple[PathField, ...]
    button: str


TOOLS = (
    Tool("extract", "Extract a LoRA from two checkpoints", ExtractConfig,
         (PathField("base", "Base checkpoint"), PathField("tuned", "Fine-tuned checkpoint"),
          PathField("out", "LoRA to write")), "Extract"),
    Tool("merge", "Merge LoRAs (into a checkpoint, or into one LoRA)", MergeConfig,
         (PathField("loras", "LoRA files, one per line", lines=3),
          PathField("base", "Checkpoint to merge into (mode checkpoint)", required=False),
          PathField("out", "File to write")), "Merge"),
    Tool("resize", "Resize a LoRA's rank", ResizeConfig,
         (PathField("in", "LoRA file"), PathField("out", "File to write")), "Resize"),
)
JOB_KINDS = tuple(t.kind for t in TOOLS)


def _lines(text: str) -> list[str]:
    return [line.strip() for line in (text or "").splitlines() if line.strip()]


def tool_paths(backend: Any, tool: Tool, values: list[str]) -> dict[str, list[str]]:
    """The form's paths by key (a list each), once filled in and allowed by the path policy."""
    paths = {f.key: _lines(v) for f, v in zip(tool.paths, values)}
    check_paths(backend, [(f.label, path, False) for f in tool.paths for path in paths[f.key]])
    for f in tool.paths:
        if f.required and not paths[f.key]:
            raise LoraError(f"{f.label} is empty", where=tool.title, fix=f"Fill in {f.label}")
    return paths


def tool_work(tool: Tool, paths: dict[str, list[str]], cfg: Any) -> Callable[..., Any]:
    """What the job calls: the ops function of `tool` with the paths and the config; `progress` may stop it."""
    from lib_lora.ops import tool_files
    one = {key: (values[0] if values else None) for key, values in paths.items()}
    if tool.kind == "extract":
        return lambda progress: tool_files.extract_to_file(one["base"], one["tuned"], one["out"], cfg, progress)
    if tool.kind == "merge":
        tool_files.check_merge_target(cfg, one["base"])          # said now, not after the page polls
        return lambda progress: tool_files.merge_to_file(paths["loras"], one["out"], cfg, one["base"], progress)
    return lambda progress: tool_files.resize_to_file(one["in"], one["out"], cfg, progress)


def start_tool(backend: Any, tool: Tool, task: str, path_values: list[str], specs: list, config_values: list):
    """Check the form, then start the tool as a job; exclusive (waits for the host) when it runs on cuda."""
    from lib_lora.ops.config import validated
    paths = tool_paths(backend, tool, path_values)
    cfg = validated(form.config_from_values(tool.config, specs, list(config_values)))
    work = tool_work(tool, paths, cfg)
    title = f"{tool.kind} {Path(paths['out'][0]).name}"
    return submit(backend.jobs(), tool.kind, title, lambda job: work(stoppable(job)),
                  exclusive=cfg.device == "cuda", task_id=task)


def tool_poll_outputs(jobs: Any, job_id: str) -> list:
    """[status, log, job state] for the hidden poll button: at the end, the report and what was written."""
    from lib_lora.ops.tool_files import ToolResult

    def shown(result: ToolResult) -> list:
        return [message_html(f"{result.report.operation.capitalize()} done: wrote {result.out}"), result.text()]
    return poll_view(jobs, job_id, JOB_KINDS, ToolResult, 1, shown)


def build_tools_section(ctx) -> None:
    import gradio as gr
    with gr.Row():
        status = gr.HTML(elem_id=elem("tools_status"))
        cancel = gr.Button("Cancel", variant="stop", size="sm", elem_id=elem("tools_cancel"), scale=0)
    job = job_widgets("tools", "tool")
    log = gr.Textbox(label="Result", lines=6, interactive=False, elem_id=elem("tools_log"))
    forms = [_tool_form(tool, ctx.backend.host) for tool in TOOLS]
    jobs = ctx.backend.jobs()
    outputs = [status, job["job_id"], job["job_state"], job["webui_task"], log]
    for tool, (button, path_boxes, specs, components) in zip(TOOLS, forms):
        button.click(_start_handler(ctx.backend, tool, len(path_boxes), specs),
                     [job["task_id"], *path_boxes, *components], outputs,
                     **gradio_compat.js_kwargs("trainLoraJobStart"))

    @guarded(1, "Cancel")
    def on_cancel(job_id: str):
        return message_html(cancel_text(jobs, job_id, JOB_KINDS))
    cancel.click(on_cancel, [job["job_id"]], [status], queue=False)
    job["poll"].click(lambda job_id: tool_poll_outputs(jobs, job_id), [job["job_id"]],
                      [status, log, job["job_state"]], show_progress=gradio_compat.HIDE_PROGRESS, queue=False)


def _tool_form(tool: Tool, host: str) -> tuple:
    """One tool's accordion: its paths, every option of its config, its button."""
    import gradio as gr
    specs = form.field_specs(tool.config, host)
    defaults = tool.config()
    with gr.Accordion(tool.title, open=False, elem_id=elem(f"{tool.kind}_accordion")):
        with gr.Row():
            path_boxes = [gr.Textbox(label=f.label, lines=f.lines, elem_id=elem(f"{tool.kind}_{f.key}"))
                          for f in tool.paths]
        with gr.Row():
            components = [form.make_component(s, getattr(defaults, s.name), prefix=elem(f"{tool.kind}_"))
                          for s in specs]
        button = gr.Button(tool.button, variant="primary", elem_id=elem(f"{tool.kind}_button"))
    return button, path_boxes, specs, components


def _start_handler(backend: Any, tool: Tool, n_paths: int, specs: list):
    @guarded(5, tool.button)
    def on_start(task: str, *values):
        job = start_tool(backend, tool, task, list(values[:n_paths]), specs, list(values[n_paths:]))
        return (*started(job, f"{tool.button} started ..."), "")
    return on_start
