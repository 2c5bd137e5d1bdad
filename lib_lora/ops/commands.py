"""Command-line entry points of the tools, for lib_lora/cli.py: extract, merge, resize, bench.

Each command is a pair: `add_<cmd>_args(parser)` declares its options and
`run_<cmd>(args) -> int` builds the typed config, calls the tool in
ops/tool_files.py (the same call the tab's Tools jobs make), prints the report,
and returns the exit status (0 done, 2 a problem the user can fix, printed as one
message). The options of each config are generated from its declaration
(ops/config.py); only the files (inputs, --out) and --quiet are written here.
"""
from __future__ import annotations

import argparse
import dataclasses
import sys
import time

from ..errors import LoraError
from ..options import add_arguments, from_namespace
from .config import ExtractConfig, MergeConfig, ResizeConfig

EXTRACT_BENCH_DIM = 8       # the rank of the known change and of the extraction when bench --dim is 0


def _progress_printer(what: str):
    """A progress callback printing to stderr at most every 2 s."""
    last = [0.0]

    def progress(done: int, total: int, name: str) -> None:
        now = time.monotonic()
        if done == total or now - last[0] >= 2.0:
            last[0] = now
            print(f"{what}: {done}/{total} {name}", file=sys.stderr, flush=True)
    return progress


def _run(action, *args) -> int:
    try:
        return action(*args)
    except LoraError as e:  # exit status 2 for a problem the user can fix, as lib_lora/cli.py does
        print(f"error: {e}", file=sys.stderr)
        return 2


def _print_result(result, quiet: bool) -> int:
    print(result.text(max_rows=0 if quiet else 12))
    return 0


def _add_out_and_quiet(p: argparse.ArgumentParser, what: str) -> None:
    p.add_argument("--out", required=True, help=f"The {what} to write (.safetensors)")
    p.add_argument("--quiet", action="store_true", help="Print only the summary, not the worst layers")


# --- extract -------------------------------------------------------------------------------------

def add_extract_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--base", required=True, help="The original checkpoint (.safetensors, or .ckpt with tensors only)")
    p.add_argument("--tuned", required=True, help="The fine-tuned checkpoint trained from --base")
    _add_out_and_quiet(p, "LoRA file")
    add_arguments(p, ExtractConfig)


def _extract(args: argparse.Namespace) -> int:
    from .tool_files import extract_to_file
    config = from_namespace(ExtractConfig, args)
    return _print_result(extract_to_file(args.base, args.tuned, args.out, config, _progress_printer("extract")),
                         args.quiet)


def run_extract(args: argparse.Namespace) -> int:
    return _run(_extract, args)


# --- merge ---------------------------------------------------------------------------------------

def add_merge_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--lora", action="append", required=True, help="A LoRA/LyCORIS file; repeat for several")
    p.add_argument("--base", help="The checkpoint to merge into (--mode checkpoint, implied by --base; written to "
                                  "--out, the base is not modified)")
    _add_out_and_quiet(p, "file")
    add_arguments(p, MergeConfig)


def merge_config_from_args(args: argparse.Namespace) -> MergeConfig:
    """--base alone means --mode checkpoint; without it, say concat or svd (one LoRA out of LoRAs)."""
    if args.mode is None and not args.base:
        raise LoraError("Say what to merge into", where="command line",
                        fix="Give --base CHECKPOINT, or --mode concat or --mode svd for one LoRA")
    return from_namespace(MergeConfig, args)     # no --mode: MergeConfig's default, checkpoint


def _merge(args: argparse.Namespace) -> int:
    from .tool_files import merge_to_file
    config = merge_config_from_args(args)
    return _print_result(merge_to_file(args.lora, args.out, config, args.base, _progress_printer("merge")),
                         args.quiet)


def run_merge(args: argparse.Namespace) -> int:
    return _run(_merge, args)


# --- resize --------------------------------------------------------------------------------------

def add_resize_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--lora", required=True, help="The LoRA/LyCORIS file to resize")
    _add_out_and_quiet(p, "resized LoRA file")
    add_arguments(p, ResizeConfig)


def _resize(args: argparse.Namespace) -> int:
    from .tool_files import resize_to_file
    config = from_namespace(ResizeConfig, args)
    return _print_result(resize_to_file(args.lora, args.out, config, _progress_printer("resize")), args.quiet)


def run_resize(args: argparse.Namespace) -> int:
    return _run(_resize, args)


# --- bench ---------------------------------------------------------------------------------------

def run_bench_extract(opts) -> int:
    """`bench --tool extract`; `opts` are bench's options (dim, change, methods, workdir, keep)."""
    from .bench import run_benchmark
    return _run(run_benchmark, dataclasses.replace(opts, dim=opts.dim or EXTRACT_BENCH_DIM))
