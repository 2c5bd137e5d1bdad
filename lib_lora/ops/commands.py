"""Command-line entry points of the tools, for lib_lora/cli.py: extract, merge, resize, bench.

Each command is a pair: `add_<cmd>_args(parser)` declares its options and
`run_<cmd>(args) -> int` builds the typed config, calls the pure function in
this package, writes the file and its report, prints the summary, and returns
the exit status (0 done, 2 a problem the user can fix, printed as one message).
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from ..errors import LoraError
from ..safe_paths import WriteGuard, check_write, guarded, resolved, shown
from .config import ExtractConfig, MergeConfig, ResizeConfig
from .svd import DYNAMIC_METHODS

PRECISION_CHOICES = ("fp16", "bf16", "fp32")


def _progress_printer(what: str):
    """A progress callback printing to stderr at most every 2 s."""
    last = [0.0]

    def progress(done: int, total: int, name: str) -> None:
        now = time.monotonic()
        if done == total or now - last[0] >= 2.0:
            last[0] = now
            print(f"{what}: {done}/{total} {name}", file=sys.stderr, flush=True)
    return progress


def _add_rank_rule_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--dynamic", choices=DYNAMIC_METHODS, default="",
                   help="Pick each layer's rank from its singular values (the rank is then the most kept)")
    p.add_argument("--dynamic-param", type=float, default=0.0,
                   help="sv_ratio: keep s > s_max/X (e.g. 20); sv_fro / sv_cumulative: share kept (e.g. 0.9)")


def _run(action, *args) -> int:
    try:
        return action(*args)
    except LoraError as e:  # exit status 2 for a problem the user can fix, as lib_lora/cli.py does
        print(f"error: {e}", file=sys.stderr)
        return 2


def _output_guard(out: Path, inputs: list, purpose: str) -> WriteGuard:
    """The tool may write only `out` and its reports, beside it, and never one of its inputs.

    Checked before any work (an extract takes minutes), and again by fileio at each write."""
    from .report import report_paths
    if out.suffix.lower() != ".safetensors":
        raise LoraError("The output must be a .safetensors file", where=shown(out),
                        fix="Give --out a name ending in .safetensors")
    given = [Path(p) for p in inputs if p]
    for target in (out, *report_paths(out)):
        clash = next((p for p in given if resolved(p) == resolved(target)), None)
        if clash is not None:
            raise LoraError(f"The output would replace an input of {purpose}", where=shown(target),
                            fix="Give --out a new file name; inputs are never overwritten")
    guard = WriteGuard([resolved(out).parent], protected=given, purpose=purpose)
    for target in (out, *report_paths(out)):
        check_write(target)             # a NUL, a folder or FIFO named like the output, a file in its path
        guard.check(target)
    return guard


def _guarded(action, args: argparse.Namespace, inputs: list, purpose: str) -> int:
    with guarded(_output_guard(Path(args.out), inputs, purpose)):
        return action(args)


def _finish(report, out: Path, quiet: bool) -> None:
    from .report import save_report
    json_path, csv_path = save_report(report, out)
    print(report.format_text(max_rows=0 if quiet else 12))
    print(f"wrote {out}\nreport: {json_path} and {csv_path.name}")


# --- extract -------------------------------------------------------------------------------------

def add_extract_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--base", required=True, help="The original checkpoint (.safetensors, or .ckpt with tensors only)")
    p.add_argument("--tuned", required=True, help="The fine-tuned checkpoint trained from --base")
    p.add_argument("--out", required=True, help="The LoRA file to write (.safetensors)")
    p.add_argument("--rank", type=int, default=8, help="Rank of linear and 1x1 layers (default 8)")
    p.add_argument("--conv-rank", type=int, default=0, help="Rank of 3x3 convs (LoCon); 0: none (default)")
    _add_rank_rule_args(p)
    p.add_argument("--clamp-quantile", type=float, default=1.0,
                   help="Clip factors at this quantile; 1.0 is off (default). sd-scripts' 0.99 loses ~10%% of "
                        "a low-rank change")
    svd = p.add_mutually_exclusive_group()
    svd.add_argument("--lowrank", dest="svd", action="store_const", const="lowrank",
                     help="Always use the randomized torch.svd_lowrank")
    svd.add_argument("--exact", dest="svd", action="store_const", const="exact",
                     help="Always use the exact torch.linalg.svd (slow on CPU)")
    p.set_defaults(svd="auto")
    p.add_argument("--niter", type=int, default=4, help="Power iterations of the randomized SVD (default 4)")
    p.add_argument("--seed", type=int, default=0, help="Seed of the randomized SVD")
    p.add_argument("--text-encoder", choices=("auto", "on", "off"), default="auto",
                   help="auto: keep the text encoders if they changed more than --te-threshold")
    p.add_argument("--te-threshold", type=float, default=1e-3,
                   help="Relative change ||dW||/||W|| of the text encoders that counts as trained (default 1e-3)")
    p.add_argument("--precision", choices=PRECISION_CHOICES, default="fp16", help="Save precision (default fp16)")
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu", help="Where the SVDs run")
    p.add_argument("--threads", type=int, default=0,
                   help="CPU threads; 0: one for the randomized SVD (fastest on shared CPUs), all for --exact")
    p.add_argument("--v-parameterization", action="store_true", help="The models predict v (SD2-768-v)")
    p.add_argument("--quiet", action="store_true", help="Print only the summary, not the worst layers")


def extract_config_from_args(args: argparse.Namespace) -> ExtractConfig:
    return ExtractConfig(rank=args.rank, conv_rank=args.conv_rank, dynamic=args.dynamic or "",
                         dynamic_param=args.dynamic_param, clamp_quantile=args.clamp_quantile, svd=args.svd,
                         niter=args.niter, seed=args.seed, text_encoder=args.text_encoder,
                         te_threshold=args.te_threshold, precision=args.precision, device=args.device,
                         threads=args.threads, v_parameterization=args.v_parameterization)


def _extract(args: argparse.Namespace) -> int:
    from ..networks.metadata import tool_metadata
    from .extract import extract_lora
    from .lora_files import save_lora_file
    config = extract_config_from_args(args)
    out = Path(args.out)
    started = time.perf_counter()
    tensors, report, family = extract_lora(args.base, args.tuned, config, _progress_printer("extract"))
    if not tensors:
        raise LoraError("The two checkpoints do not differ in any layer a LoRA can hold", where=str(args.tuned),
                        fix="Check that --tuned is the fine-tuned model and --base its original")
    report.settings["seconds"] = round(time.perf_counter() - started, 2)
    dim = "Dynamic" if config.dynamic else str(config.rank)
    meta = tool_metadata(family, out, dim, dim, conv_dim=config.conv_rank,
                         v_parameterization=config.v_parameterization, base_name=Path(args.base).name,
                         comment=f"extracted from {Path(args.tuned).name} - {Path(args.base).name} by lib_lora")
    meta["lib_lora_extract"] = json.dumps(report.summary())
    save_lora_file(out, tensors, meta, config.precision)
    _finish(report, out, args.quiet)
    return 0


def run_extract(args: argparse.Namespace) -> int:
    return _run(_guarded, _extract, args, [args.base, args.tuned], "extract")


# --- merge ---------------------------------------------------------------------------------------

def add_merge_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--lora", action="append", required=True, help="A LoRA/LyCORIS file; repeat for several")
    p.add_argument("--weight", action="append", type=float, default=[],
                   help="Weight of each --lora, in order (default 1.0); repeat per LoRA")
    p.add_argument("--block-weights", action="append", default=[],
                   help="17 or 26 comma-separated values (12 or 20 for SDXL), BASE first; once for all LoRAs or "
                        "once per LoRA")
    p.add_argument("--out", required=True, help="The file to write (.safetensors)")
    into = p.add_mutually_exclusive_group(required=True)
    into.add_argument("--base", help="Merge into this checkpoint (written to --out; the base is not modified)")
    into.add_argument("--concat", action="store_true", help="Merge into one LoRA by concatenating ranks (exact)")
    into.add_argument("--svd-rank", type=int, help="Merge into one LoRA re-compressed to this rank by SVD")
    p.add_argument("--svd-conv-rank", type=int, default=0, help="Rank of 3x3 convs with --svd-rank (0: same)")
    _add_rank_rule_args(p)
    p.add_argument("--precision", choices=PRECISION_CHOICES, default="fp16", help="Output precision (default fp16)")
    p.add_argument("--drop-ema", action="store_true", help="Leave out EMA weights (model_ema.*) of the checkpoint")
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu", help="Where the merge math runs")
    p.add_argument("--quiet", action="store_true", help="Print only the summary, not the worst layers")


def _merge(args: argparse.Namespace) -> int:
    from .lora_inputs import load_lora_inputs
    mode = "checkpoint" if args.base else ("concat" if args.concat else "svd")
    config = MergeConfig(weights=args.weight, block_weights=args.block_weights, precision=args.precision,
                         drop_ema=args.drop_ema, mode=mode, svd_rank=args.svd_rank or 32,
                         svd_conv_rank=args.svd_conv_rank, dynamic=args.dynamic or "",
                         dynamic_param=args.dynamic_param, device=args.device)
    inputs = load_lora_inputs(args.lora, config.weights, config.block_weights)
    out = Path(args.out)
    if mode == "checkpoint":
        from .merge_checkpoint import merge_into_checkpoint
        report = merge_into_checkpoint(args.base, inputs, out, config, _progress_printer("merge"))
    else:
        report = _merge_to_lora(inputs, config, out)
    _finish(report, out, args.quiet)
    return 0


def _merge_to_lora(inputs, config: MergeConfig, out: Path):
    from ..networks.metadata import tool_metadata
    from .lora_files import save_lora_file
    from .merge_loras import merge_loras
    family = inputs[0].family()
    tensors, report = merge_loras(inputs, config, family)
    ranks = {row.rank for row in report.written}
    dim = str(ranks.pop()) if len(ranks) == 1 else "Dynamic"
    meta = tool_metadata(family, out, dim, dim, comment="merged from " + ", ".join(
        f"{x.label}:{x.weight:g}" for x in inputs) + " by lib_lora")
    meta["lib_lora_merge"] = json.dumps(report.summary())
    save_lora_file(out, tensors, meta, config.precision)
    return report


def run_merge(args: argparse.Namespace) -> int:
    return _run(_guarded, _merge, args, [*args.lora, args.base], "merge")


# --- resize --------------------------------------------------------------------------------------

def add_resize_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--lora", required=True, help="The LoRA/LyCORIS file to resize")
    p.add_argument("--out", required=True, help="The resized LoRA file to write (.safetensors)")
    p.add_argument("--rank", type=int, required=True, help="New rank (with --dynamic: the most kept)")
    p.add_argument("--conv-rank", type=int, default=0, help="New rank of 3x3 convs (0: same as --rank)")
    _add_rank_rule_args(p)
    p.add_argument("--precision", choices=PRECISION_CHOICES, default="fp16", help="Save precision (default fp16)")
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu", help="Where the SVDs run")
    p.add_argument("--quiet", action="store_true", help="Print only the summary, not the worst layers")


def _resize(args: argparse.Namespace) -> int:
    from .lora_files import load_lora_file, save_lora_file
    from .resize import resize_lora, resized_metadata
    config = ResizeConfig(rank=args.rank, conv_rank=args.conv_rank, dynamic=args.dynamic or "",
                          dynamic_param=args.dynamic_param, precision=args.precision, device=args.device)
    tensors, metadata = load_lora_file(args.lora)
    resized, report = resize_lora(tensors, config, where=args.lora)
    out = Path(args.out)
    save_lora_file(out, resized, resized_metadata(metadata, resized, config, report), config.precision)
    _finish(report, out, args.quiet)
    return 0


def run_resize(args: argparse.Namespace) -> int:
    return _run(_guarded, _resize, args, [args.lora], "resize")


# --- bench ---------------------------------------------------------------------------------------

def add_bench_extract_args(p: argparse.ArgumentParser) -> None:
    if "--tool" not in p._option_string_actions:  # the CLI may declare --tool itself for several benchmarks
        p.add_argument("--tool", choices=("extract",), default="extract", help="What to benchmark")
    p.add_argument("--rank", type=int, default=8, help="Rank of the known change and of the extraction")
    p.add_argument("--change", type=float, default=0.02,
                   help="Size of the known change per layer, relative to the weight (||dW||/||W||, default 0.02)")
    p.add_argument("--methods", default="lowrank,exact", help="SVD methods to time, comma separated")
    p.add_argument("--workdir", default="", help="Where to build the random pair (default: a temp folder)")
    p.add_argument("--keep", action="store_true", help="Keep the pair and outputs for another run")


def run_bench_extract(args: argparse.Namespace) -> int:
    from .bench import run_benchmark
    return _run(run_benchmark, args)
