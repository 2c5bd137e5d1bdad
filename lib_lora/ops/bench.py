"""`python -m lib_lora bench --tool extract`: extraction time, peak memory and error on an SD1.5-sized pair.

The pair is built in code (sd15_layout: SD1.5's 860M-parameter UNet and 123M
text encoder, fp16, random, seeded; no VAE since extraction never reads it):
the tuned copy differs from the base by a known rank-r change on all 128 UNet
attention projections, of Frobenius size `change` x ||W|| per layer, rounded
to fp16 like a real fine-tune. Each SVD method then runs the real `extract`
command in a fresh process, so the wall time includes start-up and reading, and
the peak RSS is that process's own (os.wait4). The error is measured against
the known change, not just against what the files hold. Reference: sd-scripts
needs 102 s and 10.4 GiB here on 2 cores, and loses 10% with its default clamp
(shared/reference/perf.md section 7).
"""
from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from ..checkpoint_io import PlannedTensor, write_safetensors_streaming
from ..networks.keys import checkpoint_param_to_lora_key
from .report import report_paths
from .sd15_layout import attention_projection_names, sd1_shapes

GOAL = {"seconds": 34.0, "peak_gib": 5.0, "error": 0.005}


def _seed_of(index: int, salt: int) -> torch.Generator:
    return torch.Generator().manual_seed(1_000_003 * salt + index)


def base_tensor(index: int, shape: tuple[int, ...]) -> torch.Tensor:
    """A random weight with roughly the scale of a trained one (std 1/sqrt(fan_in)), fp16."""
    fan_in = math.prod(shape[1:]) if len(shape) > 1 else 1
    return (torch.randn(shape, generator=_seed_of(index, 1)) / math.sqrt(fan_in)).half()


def known_change(index: int, weight: torch.Tensor, rank: int, change: float) -> torch.Tensor:
    """A random rank-`rank` matrix of Frobenius norm change * ||weight||, fp32."""
    g = _seed_of(index, 2)
    out_dim, in_dim = weight.shape
    delta = torch.randn(out_dim, rank, generator=g) @ torch.randn(rank, in_dim, generator=g)
    return delta * (change * float(weight.float().norm()) / float(delta.norm()))


def build_pair(workdir: Path, rank: int, change: float) -> tuple[Path, Path, dict[str, int]]:
    """Write base.safetensors and tuned.safetensors; return their paths and {changed param: index}."""
    shapes = sd1_shapes()
    index_of = {name: i for i, name in enumerate(shapes)}
    targets = {name: index_of[name] for name in attention_projection_names(shapes)}

    def base_entry(name: str) -> PlannedTensor:
        return PlannedTensor(name, torch.float16, shapes[name], lambda: base_tensor(index_of[name], shapes[name]))

    def tuned_entry(name: str) -> PlannedTensor:
        def produce() -> torch.Tensor:
            w = base_tensor(index_of[name], shapes[name])
            if name not in targets:
                return w
            return (w.float() + known_change(targets[name], w, rank, change)).half()
        return PlannedTensor(name, torch.float16, shapes[name], produce)

    base, tuned = workdir / "base.safetensors", workdir / "tuned.safetensors"
    recipe, marker = json.dumps({"rank": rank, "change": change}), workdir / "pair.json"
    if base.is_file() and tuned.is_file() and marker.is_file() and marker.read_text() == recipe:
        return base, tuned, targets  # a kept pair built the same way (--workdir with --keep)
    write_safetensors_streaming(base, [base_entry(n) for n in shapes], {})
    write_safetensors_streaming(tuned, [tuned_entry(n) for n in shapes], {})
    marker.write_text(recipe)
    return base, tuned, targets


def error_against_truth(lora_path: Path, base_path: Path, targets: dict[str, int], rank: int,
                        change: float) -> float:
    """||extracted - known||_F / ||known||_F over all changed layers, from the written LoRA file."""
    from safetensors import safe_open
    lost = total = 0.0
    with safe_open(str(lora_path), "pt") as lora, safe_open(str(base_path), "pt") as base:
        names = set(lora.keys())
        for name, index in targets.items():
            truth = known_change(index, base.get_tensor(name), rank, change)
            key = checkpoint_param_to_lora_key(name, "sd1")
            approx = torch.zeros_like(truth)
            if f"{key}.lora_up.weight" in names:
                up = lora.get_tensor(f"{key}.lora_up.weight").float()
                down = lora.get_tensor(f"{key}.lora_down.weight").float()
                approx = up @ down * (float(lora.get_tensor(f"{key}.alpha")) / down.shape[0])
            lost += float((approx - truth).double().square().sum())
            total += float(truth.double().square().sum())
    return math.sqrt(lost / total)


def _run_child(base: Path, tuned: Path, out: Path, method: str, rank: int) -> tuple[float, float, int]:
    """Run `python -m lib_lora extract` in a fresh process: (wall seconds, peak RSS GiB, exit status)."""
    method_flag = [] if method == "auto" else ["--svd", method]
    command = [sys.executable, "-m", "lib_lora", "extract", "--base", str(base), "--tuned", str(tuned),
               "--out", str(out), "--dim", str(rank), "--quiet", *method_flag]
    started = time.perf_counter()
    child = subprocess.Popen(command, env={**os.environ, "PYTHONPATH": str(Path(__file__).parents[2])})
    _, status, usage = os.wait4(child.pid, 0)
    child.returncode = os.waitstatus_to_exitcode(status)
    return time.perf_counter() - started, usage.ru_maxrss / 2**20, child.returncode  # ru_maxrss is KiB on Linux


def run_benchmark(args: argparse.Namespace) -> int:
    workdir = Path(args.workdir) if args.workdir else Path(tempfile.mkdtemp(prefix="lib_lora_bench_"))
    workdir.mkdir(parents=True, exist_ok=True)
    try:
        started = time.perf_counter()
        base, tuned, targets = build_pair(workdir, args.dim, args.change)
        print(f"built an SD1.5-sized fp16 pair in {time.perf_counter() - started:.0f} s ({workdir}); known rank-"
              f"{args.dim} change of {args.change:g} x ||W|| on {len(targets)} attention projections", flush=True)
        rows = []
        for method in [m.strip() for m in args.methods.split(",") if m.strip()]:
            out = workdir / f"extracted_{method}.safetensors"
            wall, peak, status = _run_child(base, tuned, out, method, args.dim)
            if status != 0:
                print(f"{method}: the extract command failed (exit status {status})", file=sys.stderr)
                return 1
            summary = json.loads(report_paths(out)[0].read_text(encoding="utf-8"))["summary"]
            truth = error_against_truth(out, base, targets, args.dim, args.change)
            rows.append((method, wall, summary["settings"]["seconds"], peak, truth, summary))
        _print_table(rows)
    finally:
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)
    return 0


def _print_table(rows: list) -> None:
    print(f"\n{'method':<8} {'wall s':>7} {'extract s':>9} {'peak RSS':>9} {'error vs known':>15} "
          f"{'reported error':>15} {'layers':>6}")
    for method, wall, seconds, peak, truth, summary in rows:
        print(f"{method:<8} {wall:>7.1f} {seconds:>9.1f} {peak:>6.2f} GiB {truth:>14.3%} "
              f"{summary['overall_relative_error']:>14.3%} {summary['layers_written']:>6}")
    print(f"goal: at most {GOAL['seconds']:.0f} s, {GOAL['peak_gib']:.0f} GiB and {GOAL['error']:.1%} error "
          "(sd-scripts: 102 s, 10.4 GiB, 10.1% with its default clamp) on 2 CPU cores")
