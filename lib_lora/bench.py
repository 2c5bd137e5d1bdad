"""`python -m lib_lora bench`: training speed and memory on a chosen model size (`--tool extract`: see ops).

The defaults are the reference work of shared/reference/perf.md section 7: the
tiny model, 20 images at 256 px, 10 repeats, batch 2, 2 epochs = 200 steps,
LoRA dim 8 alpha 4 on UNet + text encoder, AdamW, constant LR, latents cached
in memory, SDPA, fp32, seed 42. sd-scripts does 5.79 steps/s there in 630 MiB
peak RSS with its first step 11.9 s after start (2 CPU cores).

Each run trains in a fresh process (`python -m lib_lora.bench --child ...`), so
the time to the first step includes Python start-up, imports, model build and
latent caching, and the peak RSS is that process's own (os.wait4). Figures:
- steps/s: optimizer steps from the end of step 1 to the end of the last step
  (step 1 pays one-off warm-up; epoch-end saving in between is included);
- samples/s: steps/s x batch size;
- peak memory: the child's peak RSS; on a GPU also torch.cuda.max_memory_allocated;
- first step: process start to the end of the first optimizer step;
- CPU per step: the loop's process CPU time per step, which other processes on a shared
  machine do not inflate (with 1 thread it is what a step takes on a quiet core).
Nothing here is imported by training itself.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from .errors import LoraError

GOALS = {"steps_per_s": 7.5, "peak_rss_mib": 630.0, "first_step_s": 5.0}  # perf.md section 7, tiny model, 2 cores
SD_SCRIPTS = {"steps_per_s": 5.79, "peak_rss_mib": 630.0, "first_step_s": 11.9}


def add_bench_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--tool", choices=("train", "extract"), default="train",
                   help="What to benchmark: the training loop (default) or LoRA extraction")
    g = p.add_argument_group("training benchmark (--tool train)")
    g.add_argument("--model", choices=("tiny", "sd15"), default="tiny",
                   help="tiny: the built-in tiny SD1 model; sd15: SD1.5-sized random weights (for GPUs)")
    g.add_argument("--images", type=int, default=20, help="Images in the generated dataset")
    g.add_argument("--resolution", type=int, default=256, help="Image and training size in pixels")
    g.add_argument("--repeats", type=int, default=10, help="Repeats per image per epoch")
    g.add_argument("--epochs", type=int, default=2, help="Epochs")
    g.add_argument("--batch", type=int, default=2, help="Batch size")
    g.add_argument("--dim", type=int, default=8, help="LoRA rank")
    g.add_argument("--alpha", type=float, default=4.0, help="LoRA alpha")
    g.add_argument("--steps", type=int, default=0, help="Stop after this many steps (0: images x repeats x epochs / batch)")
    g.add_argument("--optimizer", default="AdamW", help="Optimizer name, as training.optimizer")
    g.add_argument("--scheduler", default="constant", help="LR schedule, as training.lr_scheduler")
    g.add_argument("--mixed-precision", choices=("no", "fp16", "bf16"), default="no",
                   help="Mixed precision (used on GPUs; ignored on CPU)")
    g.add_argument("--gradient-checkpointing", action="store_true", help="Turn gradient checkpointing on")
    g.add_argument("--cache-latents", choices=("memory", "disk", "off"), default="memory", help="Latent cache")
    g.add_argument("--unet-only", action="store_true", help="Train the UNet only (no text-encoder LoRA)")
    g.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: the trainer's choice)")
    g.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1, ...")
    g.add_argument("--seed", type=int, default=42, help="Seed")
    g.add_argument("--runs", type=int, default=1, help="Repeat the run and report the median")
    from .ops.commands import add_bench_extract_args  # adds --workdir, --keep and the extraction options

    add_bench_extract_args(p)


def run_bench(args: argparse.Namespace) -> int:
    if args.tool == "extract":
        from .ops.commands import run_bench_extract

        return run_bench_extract(args)
    workdir = Path(args.workdir or Path(tempfile.gettempdir()) / "lib_lora_bench").resolve()
    dataset = make_bench_dataset(workdir / f"dataset_{args.images}x{args.resolution}_r{args.repeats}",
                                 args.images, args.resolution, args.repeats)
    config_path = write_bench_config(args, dataset, workdir)
    print(f"bench: {args.model} model, {args.images} images at {args.resolution} px x {args.repeats} repeats, "
          f"batch {args.batch}, {args.epochs} epochs, dim {args.dim}, {args.optimizer}; {args.runs} run(s)",
          flush=True)
    runs = []
    for i in range(args.runs):
        figures = run_child(config_path, args.model, workdir / "result.json", args.batch)
        runs.append(figures)
        print(f"run {i + 1}: " + format_figures(figures), flush=True)
    if args.runs > 1:
        median = {k: statistics.median(r[k] for r in runs) for k in runs[0] if isinstance(runs[0][k], float)}
        print("median: " + format_figures({**runs[0], **median}))
    _print_goals(runs, args)
    return 0


def make_bench_dataset(root: Path, n_images: int, size: int, repeats: int) -> Path:
    """Distinct captioned images (colour fields with shapes) in <root>/<repeats>_bench; made once, then reused."""
    import random

    from PIL import Image, ImageDraw

    from .fileio import write_text, write_with

    concept = root / f"{repeats}_bench"
    if concept.is_dir() and len(list(concept.glob("*.png"))) == n_images:
        return root
    concept.mkdir(parents=True, exist_ok=True)
    rng = random.Random(0)
    for i in range(n_images):
        colour = tuple(rng.randint(0, 255) for _ in range(3))
        img = Image.new("RGB", (size, size), colour)
        draw = ImageDraw.Draw(img)
        for _ in range(3):
            x, y, r = rng.randint(0, size - 1), rng.randint(0, size - 1), rng.randint(size // 16, size // 4)
            draw.ellipse((x - r, y - r, x + r, y + r), fill=tuple(rng.randint(0, 255) for _ in range(3)))
        write_with(concept / f"{i:03d}.png", lambda tmp, img=img: img.save(tmp, format="PNG"))
        write_text(concept / f"{i:03d}.txt", f"bench, {rng.choice(['red', 'blue', 'green'])} background, "
                                              f"circles, simple background, image {i}")
    return root


def write_bench_config(args: argparse.Namespace, dataset: Path, workdir: Path) -> Path:
    from .config import TrainConfig, dumps_train_config
    from .fileio import write_text

    cfg = TrainConfig()
    cfg.model.pretrained = args.model
    d, n, t, o = cfg.dataset, cfg.network, cfg.training, cfg.output
    d.train_dir, d.resolution, d.cache_latents = str(dataset), args.resolution, args.cache_latents
    d.shuffle_caption, d.enable_bucket = True, True
    d.min_bucket_reso, d.max_bucket_reso = min(256, args.resolution), max(1024, args.resolution)
    n.dim, n.alpha, n.train_text_encoder = args.dim, args.alpha, not args.unet_only
    t.epochs, t.max_train_steps, t.batch_size = args.epochs, args.steps, args.batch
    t.optimizer, t.lr_scheduler, t.lr_warmup = args.optimizer, args.scheduler, 0.0
    t.unet_lr, t.text_encoder_lr, t.min_snr_gamma = 1e-4, 5e-5, 0.0
    t.mixed_precision, t.gradient_checkpointing, t.sdpa = args.mixed_precision, args.gradient_checkpointing, True
    t.seed, t.num_threads, t.device = args.seed, args.threads, args.device
    o.output_dir, o.output_name = str(workdir / "out"), "bench"
    o.save_state, o.tensorboard = False, False   # sd-scripts' reference run saved neither
    return write_text(workdir / "bench.toml", dumps_train_config(cfg))


def run_child(config_path: Path, model: str, result_path: Path, batch: int) -> dict:
    """Train in a fresh process; return its figures (see the module docstring)."""
    result_path.unlink(missing_ok=True)
    command = [sys.executable, "-m", "lib_lora.bench", "--child", str(config_path), model, str(result_path)]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(__file__).parents[1]), os.environ.get("PYTHONPATH", "")])}
    started = time.time()
    child = subprocess.Popen(command, env=env)
    _, status, usage = os.wait4(child.pid, 0)
    wall = time.time() - started
    if os.waitstatus_to_exitcode(status) != 0 or not result_path.exists():
        raise LoraError("The benchmark run failed (see its output above)", where=str(config_path),
                        fix="Run the same config with `python -m lib_lora train --config` to see the full error")
    child_result = json.loads(result_path.read_text(encoding="utf-8"))
    times = child_result["step_end_times"]
    loop_s = times[-1] - times[0]
    steps_per_s = (len(times) - 1) / loop_s if len(times) > 1 and loop_s > 0 else float("nan")
    cpu = child_result["step_end_cpu"]
    cpu_per_step = (cpu[-1] - cpu[0]) / (len(cpu) - 1) if len(cpu) > 1 else float("nan")
    marks = sorted(child_result.get("phases", {}).items(), key=lambda kv: kv[1])
    print("  start-up: " + ", ".join(f"{name} at {t - started:.2f} s" for name, t in marks)
          + f", first step at {times[0] - started:.2f} s", flush=True)
    return {"steps_per_s": steps_per_s, "samples_per_s": steps_per_s * batch,
            "peak_rss_mib": usage.ru_maxrss / 1024.0,  # ru_maxrss is KiB on Linux
            "peak_cuda_mib": float(child_result.get("peak_cuda_mib", 0.0)),
            "cpu_s_per_step": cpu_per_step, "first_step_s": times[0] - started, "wall_s": wall, "steps": float(len(times)),
            "final_loss": float(child_result["final_loss"]), "device": child_result["device"],
            "threads": float(child_result["threads"])}


def format_figures(f: dict) -> str:
    cuda = f", peak CUDA {f['peak_cuda_mib']:.0f} MiB" if f.get("peak_cuda_mib") else ""
    return (f"{f['steps_per_s']:.2f} steps/s ({f['cpu_s_per_step'] * 1000:.0f} ms CPU per step), "
            f"{f['samples_per_s']:.2f} samples/s, peak RSS {f['peak_rss_mib']:.0f} MiB"
            f"{cuda}, first step {f['first_step_s']:.2f} s after start, {f['steps']:.0f} steps in {f['wall_s']:.1f} s "
            f"(final loss {f['final_loss']:.4f}, {f['device']}, {f['threads']:.0f} threads)")


def _print_goals(runs: list[dict], args: argparse.Namespace) -> None:
    reference = (args.model == "tiny" and args.images == 20 and args.resolution == 256 and args.batch == 2
                 and args.dim == 8 and runs[0]["device"] == "cpu")
    if not reference:
        return
    for key, goal in GOALS.items():
        value = statistics.median(r[key] for r in runs)
        better = value >= goal if key == "steps_per_s" else value <= goal
        print(f"  {key}: {value:.2f} (goal {'>=' if key == 'steps_per_s' else '<='} {goal}, "
              f"sd-scripts {SD_SCRIPTS[key]}) {'ok' if better else 'MISSED'}")


# -- the child process -------------------------------------------------------------------------------

def _child(config_path: str, model_kind: str, result_path: str) -> int:
    from .config import load_train_config
    from .training import TrainHooks, train
    from .training.cli_hooks import PrintHooks

    step_end_times: list[float] = []
    step_end_cpu: list[float] = []  # process CPU seconds: what a step costs even when others load the machine
    phases = {"imports done": time.time()}

    class StepClock(TrainHooks):
        def on_status(self, text: str) -> None:
            if text.startswith("Caching latents"):
                phases["network and optimizer ready"] = time.time()

        def on_progress(self, progress) -> None:
            step_end_times.append(time.time())
            step_end_cpu.append(time.process_time())

    cfg = load_train_config(config_path)
    model = build_bench_model(model_kind, cfg)
    phases["model built"] = time.time()
    result = train(cfg, model, [StepClock(), PrintHooks(every_s=5.0)])
    import torch

    peak_cuda = torch.cuda.max_memory_allocated() / 2**20 if model.device.type == "cuda" else 0.0
    payload = {"step_end_times": step_end_times, "step_end_cpu": step_end_cpu, "phases": phases, "final_loss": result.final_loss, "device": str(model.device),
               "peak_cuda_mib": peak_cuda, "threads": torch.get_num_threads()}
    Path(result_path).write_text(json.dumps(payload), encoding="utf-8")
    return 0


def build_bench_model(kind: str, cfg):
    import torch

    from .models.diffusers_adapter import DiffusersModel

    device = cfg.training.device
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if kind == "tiny":
        from .models.tiny import build_tiny_sd1

        return DiffusersModel(build_tiny_sd1(seed=0), name="tiny", device=device)
    dtype = torch.float32 if device == "cpu" or cfg.training.mixed_precision == "no" else \
        (torch.bfloat16 if cfg.training.mixed_precision == "bf16" else torch.float16)
    return DiffusersModel(build_random_sd15(seed=0), name="sd15-random", device=device, dtype=dtype)


def build_random_sd15(seed: int = 0):
    """An SD1.5-shaped pipeline with random (seeded) weights: 860M UNet, ViT-L/14 text model, SD VAE."""
    import torch
    from diffusers import AutoencoderKL, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    from .models.tiny import _scheduler, build_clip_tokenizer

    tokenizer = build_clip_tokenizer()
    torch.manual_seed(seed)
    unet = UNet2DConditionModel(sample_size=64, cross_attention_dim=768, attention_head_dim=8,
                                block_out_channels=(320, 640, 1280, 1280), layers_per_block=2)
    vae = AutoencoderKL(block_out_channels=(128, 256, 512, 512), down_block_types=("DownEncoderBlock2D",) * 4,
                        up_block_types=("UpDecoderBlock2D",) * 4, layers_per_block=2, latent_channels=4,
                        sample_size=512)
    te_config = CLIPTextConfig(hidden_size=768, intermediate_size=3072, num_attention_heads=12, num_hidden_layers=12,
                               max_position_embeddings=77, projection_dim=768, hidden_act="quick_gelu",
                               vocab_size=tokenizer.vocab_size, bos_token_id=tokenizer.bos_token_id,
                               eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    pipe = StableDiffusionPipeline(vae=vae, text_encoder=CLIPTextModel(te_config), tokenizer=tokenizer, unet=unet,
                                   scheduler=_scheduler(), safety_checker=None, feature_extractor=None,
                                   requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)
    return pipe


if __name__ == "__main__" and len(sys.argv) == 5 and sys.argv[1] == "--child":
    sys.exit(_child(*sys.argv[2:]))
