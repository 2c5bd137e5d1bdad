"""`python -m lib_lora bench --model tiny`: the TEST STAND, training speed and memory of the tiny model.

Figures of real shapes (SD1.5, SDXL) come from realshape.py; these are for
comparing code changes on the reference work only. The defaults are the reference work of shared/reference/perf.md section 7: the
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

import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

from ..errors import LoraError
from .options import BenchOptions

GOALS = {"steps_per_s": 7.5, "peak_rss_mib": 630.0, "first_step_s": 5.0}  # perf.md section 7, tiny model, 2 cores
SD_SCRIPTS = {"steps_per_s": 5.79, "peak_rss_mib": 630.0, "first_step_s": 11.9}


def run_tiny_bench(opts: BenchOptions, workdir: Path) -> int:
    """The reference work on the tiny model (a test stand), each run in a fresh process."""
    px = opts.px()
    dataset = make_bench_dataset(workdir / f"dataset_{opts.images}x{px}_r{opts.repeats}", opts.images, px,
                                 opts.repeats)
    config_path = write_bench_config(opts, dataset, workdir)
    batch = opts.batches()[0]
    print(f"bench (test stand): tiny model, {opts.images} images at {px} px x {opts.repeats} repeats, "
          f"batch {batch}, {opts.epochs} epochs, dim {opts.rank()}, {opts.optimizer}; {opts.runs} run(s)",
          flush=True)
    runs = []
    for i in range(opts.runs):
        figures = run_child(config_path, opts.model, workdir / "result.json", batch)
        runs.append(figures)
        print(f"run {i + 1}: " + format_figures(figures), flush=True)
    if opts.runs > 1:
        median = {k: statistics.median(r[k] for r in runs) for k in runs[0] if isinstance(runs[0][k], float)}
        print("median: " + format_figures({**runs[0], **median}))
    _print_goals(runs, opts)
    return 0


def make_bench_dataset(root: Path, n_images: int, size: int, repeats: int) -> Path:
    """Distinct captioned images (colour fields with shapes) in <root>/<repeats>_bench; made once, then reused."""
    import random

    from PIL import Image, ImageDraw

    from ..fileio import write_text, write_with

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


def write_bench_config(opts: BenchOptions, dataset: Path, workdir: Path) -> Path:
    from ..config import TrainConfig, dumps_train_config
    from ..fileio import write_text

    cfg = TrainConfig()
    cfg.model.pretrained = opts.model
    d, n, t, o = cfg.dataset, cfg.network, cfg.training, cfg.output
    px = opts.px()
    d.train_dir, d.resolution, d.cache_latents = str(dataset), px, opts.cache_latents
    d.shuffle_caption, d.enable_bucket = True, True
    d.min_bucket_reso, d.max_bucket_reso = min(256, px), max(1024, px)
    n.dim, n.alpha, n.train_text_encoder = opts.rank(), opts.lora_alpha(), opts.trains_text_encoder()
    t.epochs, t.max_train_steps, t.batch_size = opts.epochs, opts.steps, opts.batches()[0]
    t.optimizer, t.lr_scheduler, t.lr_warmup = opts.optimizer, opts.scheduler, 0.0
    t.unet_lr, t.text_encoder_lr, t.min_snr_gamma = 1e-4, 5e-5, 0.0
    t.mixed_precision, t.gradient_checkpointing, t.sdpa = opts.precision("cpu"), opts.checkpointing()[0], True
    t.seed, t.num_threads, t.device = opts.seed, opts.threads, opts.device
    o.output_dir, o.output_name = str(workdir / "out"), "bench"
    o.save_state, o.tensorboard = False, False   # sd-scripts' reference run saved neither
    return write_text(workdir / "bench.toml", dumps_train_config(cfg))


def run_child(config_path: Path, model: str, result_path: Path, batch: int) -> dict:
    """Train in a fresh process; return its figures (see the module docstring)."""
    result_path.unlink(missing_ok=True)
    command = [sys.executable, "-m", "lib_lora.bench", "--child", str(config_path), model, str(result_path)]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(__file__).parents[2]), os.environ.get("PYTHONPATH", "")])}
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


def _print_goals(runs: list[dict], opts: BenchOptions) -> None:
    reference = (opts.model == "tiny" and opts.images == 20 and opts.px() == 256 and opts.batches() == [2]
                 and opts.rank() == 8 and runs[0]["device"] == "cpu")
    if not reference:
        return
    for key, goal in GOALS.items():
        value = statistics.median(r[key] for r in runs)
        better = value >= goal if key == "steps_per_s" else value <= goal
        print(f"  {key}: {value:.2f} (goal {'>=' if key == 'steps_per_s' else '<='} {goal}, "
              f"sd-scripts {SD_SCRIPTS[key]}) {'ok' if better else 'MISSED'}")


# -- the child process -------------------------------------------------------------------------------

def _child(config_path: str, model_kind: str, result_path: str) -> int:
    from ..config import load_train_config
    from ..training import TrainHooks, train
    from ..training.cli_hooks import PrintHooks

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
    from ..models.diffusers_adapter import DiffusersModel
    from ..models.tiny import build_tiny_sd1

    device = cfg.training.device
    if device == "auto":
        import torch

        device = "cuda" if torch.cuda.is_available() else "cpu"
    return DiffusersModel(build_tiny_sd1(seed=0), name="tiny", device=device)
