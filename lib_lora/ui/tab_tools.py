"""Tools section: extract a LoRA from two checkpoints, merge LoRAs, resize a LoRA's rank.

Each form builds the same arguments as its CLI twin (`python -m lib_lora extract|merge|resize`)
and calls lib_lora.ops.commands, so the tab and the command line cannot drift apart.
"""
from __future__ import annotations

import argparse
import contextlib
import io

from lib_lora.errors import LoraError
from lib_lora.ui.path_checks import check_paths
from lib_lora.ui.tab_common import elem, guarded
from lib_lora.ui.render import message_html


def run_tool(command: str, argv: list[str]) -> str:
    """Run an ops command with CLI arguments; returns what it printed; raises LoraError on failure."""
    from lib_lora.ops import commands
    parser = argparse.ArgumentParser(prog=command, exit_on_error=False)
    getattr(commands, f"add_{command}_args")(parser)
    try:
        args = parser.parse_args(argv)
    except (argparse.ArgumentError, SystemExit) as err:
        raise LoraError(f"The {command} form is incomplete: {err}", where=command,
                        fix="Fill in every file path and number") from None
    out, err_out = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err_out):
        code = getattr(commands, f"run_{command}")(args)
    text = (out.getvalue() + err_out.getvalue()).strip()
    if code:
        raise LoraError(text or f"{command} failed", where=command, fix="Check the paths and numbers, then retry")
    return text


# the form fields that name files, by their position among each tool's inputs (LoRA lists: one per line)
PATH_INPUTS = {"extract": {0: "Base checkpoint", 1: "Fine-tuned checkpoint", 2: "LoRA to write"},
               "merge": {0: "LoRA files", 2: "File to write", 3: "Checkpoint to merge into"},
               "resize": {0: "LoRA file", 1: "File to write"}}


def check_tool_paths(backend, command: str, values: tuple) -> None:
    """Every file a tool form names passes the path policy before the tool starts."""
    fields = [(label, line, False) for index, label in PATH_INPUTS[command].items()
              for line in (values[index] or "").splitlines()]
    check_paths(backend, fields)


def extract_argv(base: str, tuned: str, out: str, rank: float, conv_rank: float, device: str) -> list[str]:
    return ["--base", base.strip(), "--tuned", tuned.strip(), "--out", out.strip(), "--rank", str(int(rank or 8)),
            "--conv-rank", str(int(conv_rank or 0)), "--device", device or "cpu", "--quiet"]


def merge_argv(loras: str, weights: str, out: str, base: str, svd_rank: float, device: str) -> list[str]:
    argv = []
    for lora in [line.strip() for line in (loras or "").splitlines() if line.strip()]:
        argv += ["--lora", lora]
    for weight in [w.strip() for w in (weights or "").replace("\n", ",").split(",") if w.strip()]:
        argv += ["--weight", weight]
    argv += ["--out", out.strip(), "--device", device or "cpu", "--quiet"]
    if base and base.strip():
        argv += ["--base", base.strip()]
    elif svd_rank:
        argv += ["--svd-rank", str(int(svd_rank))]
    else:
        argv += ["--concat"]
    return argv


def resize_argv(lora: str, out: str, rank: float, device: str) -> list[str]:
    return ["--lora", lora.strip(), "--out", out.strip(), "--rank", str(int(rank or 8)), "--device",
            device or "cpu", "--quiet"]


def build_tools_section(ctx) -> None:
    import gradio as gr
    status = gr.HTML(elem_id=elem("tools_status"))
    log = gr.Textbox(label="Result", lines=6, interactive=False, elem_id=elem("tools_log"))
    device = gr.Dropdown(["cpu", "cuda"], value="cpu", label="Device", elem_id=elem("tools_device"))
    with gr.Accordion("Extract a LoRA from two checkpoints", open=False):
        with gr.Row():
            base = gr.Textbox(label="Base checkpoint", elem_id=elem("extract_base"))
            tuned = gr.Textbox(label="Fine-tuned checkpoint", elem_id=elem("extract_tuned"))
            out = gr.Textbox(label="LoRA to write", elem_id=elem("extract_out"))
        with gr.Row():
            rank = gr.Number(value=8, precision=0, label="Rank", elem_id=elem("extract_rank"))
            conv_rank = gr.Number(value=0, precision=0, label="Conv rank (0: none)", elem_id=elem("extract_conv"))
            extract = gr.Button("Extract", elem_id=elem("extract_button"))
    with gr.Accordion("Merge LoRAs (into a checkpoint, or into one LoRA)", open=False):
        with gr.Row():
            loras = gr.Textbox(label="LoRA files, one per line", lines=3, elem_id=elem("merge_loras"))
            weights = gr.Textbox(label="Weights, comma-separated", elem_id=elem("merge_weights"))
        with gr.Row():
            merge_base = gr.Textbox(label="Checkpoint to merge into (empty: make one LoRA)",
                                    elem_id=elem("merge_base"))
            svd_rank = gr.Number(value=0, precision=0, label="Rank of the merged LoRA (0: concatenate ranks)",
                                 elem_id=elem("merge_rank"))
            merge_out = gr.Textbox(label="File to write", elem_id=elem("merge_out"))
            merge = gr.Button("Merge", elem_id=elem("merge_button"))
    with gr.Accordion("Resize a LoRA's rank", open=False):
        with gr.Row():
            resize_in = gr.Textbox(label="LoRA file", elem_id=elem("resize_in"))
            resize_out = gr.Textbox(label="File to write", elem_id=elem("resize_out"))
            resize_rank = gr.Number(value=8, precision=0, label="New rank", elem_id=elem("resize_rank"))
            resize = gr.Button("Resize", elem_id=elem("resize_button"))

    def tool(command: str, make_argv):
        @guarded(2, command.capitalize())
        def run(*values):
            check_tool_paths(ctx.backend, command, values)
            text = run_tool(command, make_argv(*values))
            return message_html(f"{command.capitalize()} done"), text
        return run

    extract.click(tool("extract", extract_argv), [base, tuned, out, rank, conv_rank, device], [status, log])
    merge.click(tool("merge", merge_argv), [loras, weights, merge_out, merge_base, svd_rank, device], [status, log])
    resize.click(tool("resize", resize_argv), [resize_in, resize_out, resize_rank, device], [status, log])
