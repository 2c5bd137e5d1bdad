"""`python -m lib_lora bench`: measured time and memory of training (or, with --tool extract, of extraction).

--model sd15 | sdxl: random weights in the published shapes, per phase time and measured
peak memory, headless and inside the WebUI stand-in (realshape.py); the figures users
meet. --model tiny (the default): the TEST STAND of perf.md section 7 (tiny.py), for
comparing code changes on a small model only. Every option is declared once in
options.BenchOptions and the flags are built from it.
"""
from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from .options import BenchOptions, add_option_flags, options_from_args
from .tiny import make_bench_dataset, run_tiny_bench, write_bench_config

__all__ = ["BenchOptions", "add_bench_args", "make_bench_dataset", "run_bench", "write_bench_config"]


def add_bench_args(p: argparse.ArgumentParser) -> None:
    add_option_flags(p)


def run_bench(args: argparse.Namespace) -> int:
    opts = options_from_args(args)
    if opts.tool == "extract":
        from ..ops.commands import run_bench_extract

        return run_bench_extract(opts)
    if opts.real_shape:
        from .realshape import run_realshape_bench

        return run_realshape_bench(opts)
    workdir = Path(opts.workdir or Path(tempfile.gettempdir()) / "lib_lora_bench").resolve()
    return run_tiny_bench(opts, workdir)
