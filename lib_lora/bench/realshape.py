"""`python -m lib_lora bench --model sd15|sdxl`: real shapes, measured per phase, headless and in the WebUI.

Each case (batch x gradient checkpointing x path) runs our training code, train()
itself, on random weights in the published shapes, under the memory tracker
(training/mem_tracker.py) and, on CUDA, torch.cuda.max_memory_allocated. Where a real
step is too slow for a CPU (SDXL, batches above 1; --fake) the same run goes under a
FakeTensorMode: every operator runs on shapes only, so its memory figures are those of
the real run and its times mean nothing (they are not printed). Cases run in this
process one after the other; a case's model is dropped before the next is built.
"""
from __future__ import annotations

import contextlib
import gc
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from .options import BenchOptions
from .phases import BenchHooks, PhaseClock, RunFigures

PRECISION_TEXT = {"no": "fp32", "bf16": "bf16 (weights bf16)", "fp16": "fp16 (weights fp16)"}


@dataclass
class Case:
    path: str                   # 'headless' | 'webui'
    batch: int
    checkpointing: bool
    fake: bool
    precision: str              # the run's training.mixed_precision

    def label(self, opts: BenchOptions) -> str:
        gc_text = "GC" if self.checkpointing else "no GC"
        return (f"{opts.model} {self.path} {opts.px()} px bs{self.batch} {gc_text} {PRECISION_TEXT[self.precision]}"
                + (" [fake]" if self.fake else ""))


@dataclass
class CaseResult:
    case: Case
    figures: RunFigures
    estimate_mb: float           # the estimator's peak on the device during the steps
    lora_state_bytes: int        # LoRA weights + grads + optimizer state (counted, not estimated)
    weights_on_device: int       # base weights still on the device during the steps (measured)
    device: str


def resolve_device(opts: BenchOptions) -> torch.device:
    if opts.device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(opts.device)


def cases(opts: BenchOptions, device: torch.device) -> list[Case]:
    paths = ("headless", "webui") if opts.path == "both" else (opts.path,)
    if opts.path == "both" and opts.model != "sd15":
        paths = ("headless",)     # the stand-in has no SDXL-size sgm model (webui/bench_session.py says why)
    made = []
    for path in paths:
        for batch in opts.batches():
            for ckpt in opts.checkpointing():
                fake = opts.is_fake(device.type, batch, path)
                made.append(Case(path, batch, ckpt, fake, opts.precision(device.type, fake)))
    return made


def train_config(opts: BenchOptions, case: Case, dataset: Path, out_dir: Path, device: torch.device):
    """The run's config: the options above, fixed captions (so text-encoder outputs can be cached), no
    files written (the run is stopped between steps)."""
    from ..config import TrainConfig

    cfg = TrainConfig()
    d, n, t, o = cfg.dataset, cfg.network, cfg.training, cfg.output
    d.train_dir, d.resolution, d.cache_latents, d.shuffle_caption = str(dataset), opts.px(), opts.cache_latents, False
    d.enable_bucket = False
    n.dim, n.alpha, n.train_text_encoder = opts.rank(), opts.lora_alpha(), opts.trains_text_encoder()
    t.batch_size, t.epochs, t.max_train_steps = case.batch, 1, 0
    t.optimizer, t.lr_scheduler, t.lr_warmup = opts.optimizer, opts.scheduler, 0.0
    t.mixed_precision, t.gradient_checkpointing, t.sdpa = case.precision, case.checkpointing, True
    t.cache_text_encoder_outputs = not opts.trains_text_encoder()
    t.offload_after_caching = opts.offloads()
    t.seed, t.num_threads, t.device = opts.seed, opts.threads, str(device)
    o.output_dir, o.output_name, o.save_state, o.tensorboard = str(out_dir), "bench", False, False
    return cfg


def weight_dtype(mode: str, device: torch.device) -> torch.dtype:
    """Half precision as the WebUI holds a checkpoint: fp16 on CUDA; bf16 on CPU (same bytes), where fp16
    weights meet CPU kernels that refuse them under autocast (training/precision.py); fp32 for fp32 runs."""
    if mode == "no":
        return torch.float32
    return torch.bfloat16 if mode == "bf16" or device.type == "cpu" else torch.float16


def steps_for(opts: BenchOptions, case: Case) -> int:
    return opts.steps or (2 if case.fake else 3)


def run_case(opts: BenchOptions, case: Case, device: torch.device, workdir: Path) -> CaseResult:
    from ..training.mem_tracker import MemoryTracker
    from .models import ShapeOnlyMode
    from .tiny import make_bench_dataset

    steps = steps_for(opts, case)
    dataset = make_bench_dataset(workdir / f"dataset_{case.batch}x{opts.px()}_r{steps + 1}", case.batch,
                                 opts.px(), steps + 1)
    # an output folder of its own: a second bench running at the same time holds the run lock of its own
    cfg = train_config(opts, case, dataset, Path(tempfile.mkdtemp(prefix="out-", dir=workdir)), device)
    mode = ShapeOnlyMode() if case.fake else None
    tracker = MemoryTracker()
    clock = PhaseClock(tracker, device)
    if case.path == "webui":
        from ..webui.bench_session import webui_run   # enters the fake mode itself, after the model's shell
        from .models import build_sd15_ldm_parts

        return webui_run(opts.model, cfg, weight_dtype(case.precision, device), mode, tracker,
                         lambda model: measure_training(cfg, case, model, tracker, clock, steps,
                                                        lambda hooks: _train(cfg, model, hooks)),
                         build_sd15_ldm_parts)
    with (mode or contextlib.nullcontext()):
        model = build_model(opts, device, mode, case.precision)
        with tracker:
            return measure_training(cfg, case, model, tracker, clock, steps, lambda hooks: _train(cfg, model, hooks))


def build_model(opts: BenchOptions, device: torch.device, mode, precision: str):
    from ..models.diffusers_adapter import DiffusersModel
    from .models import build_pipeline

    dtype = weight_dtype(precision, device)
    pipe = build_pipeline(opts.model, dtype, mode, opts.seed)
    model = DiffusersModel(pipe, name=f"{opts.model}-random", device=device, dtype=dtype)
    if mode is not None:
        model.vae_fingerprint = lambda: "fake"   # hashes weight bytes, which fake weights do not have
    return model


def _train(cfg, model, hooks) -> None:
    from ..training import train

    train(cfg, model, hooks)


def measure_training(cfg, case: Case, model: Any, tracker, clock: PhaseClock, steps: int, run) -> CaseResult:
    """Run `run(hooks)` (a training run over `model`; the caller has entered the tracker); returns the figures."""
    from ..training import memory, offload
    from ..training.trainer import plan_run

    parts = model.offload_parts()
    tracker.add_base([model.unet] + [m for mods in parts.values() for m in mods])
    clock.mark("model ready")
    plan = plan_run(cfg, model)
    sizes = memory.model_sizes(cfg, model)
    lora_params = sizes.lora_params["unet"] + (sizes.lora_params["text_encoder"] if cfg.network.train_text_encoder
                                               else 0)
    lora_state = lora_params * memory.optimizer_bytes_per_param(cfg.training.optimizer)
    hooks = BenchHooks(clock, model, offload.offloaded_kinds(cfg), steps, lora_params * 4)
    try:
        with hooks.saved_tensors():
            run([hooks])
    finally:
        hooks.close()
    device = str(model.device)
    steady = clock.figures.phase("steady steps") or clock.figures.phase("first step")
    return CaseResult(case, clock.figures, plan.memory.peak_mb, lora_state,
                      steady.memory.base.get(device, 0) if steady else 0, device)


def run_realshape_bench(opts: BenchOptions) -> int:
    from .report import print_case, print_summary

    device = resolve_device(opts)
    if opts.threads:
        torch.set_num_threads(opts.threads)
    workdir = Path(tempfile.gettempdir()) / "lib_lora_bench_real"
    workdir.mkdir(parents=True, exist_ok=True)
    print(f"bench: {opts.model} random weights in the published shapes, {opts.px()} px, rank {opts.rank()}, "
          f"{opts.optimizer}, text encoder {'trained' if opts.trains_text_encoder() else 'frozen, outputs cached'}, "
          f"offload after caching {'on' if opts.offloads() else 'off'}, on {device} ({torch.get_num_threads()} "
          "threads)", flush=True)
    results = []
    for case in cases(opts, device):
        started = time.perf_counter()
        result = run_case(opts, case, device, workdir)
        print_case(opts, result, time.perf_counter() - started)
        results.append(result)
        gc.collect()
    print_summary(opts, results)
    return 0
