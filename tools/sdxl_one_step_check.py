"""Train one step of LoRA, LoCon, LoHa and LoKr on a full-size SDXL-base (random weights) and check
the files (a developer check, not part of CI: it needs about 16 GiB of RAM and a few minutes).

    .venv/bin/python tools/sdxl_one_step_check.py [--workdir /tmp/sdxl_one_step]

The pipeline is built from the shipped SDXL-base configs (lib_lora/bench/models.py) in fp32 on the
CPU; each algorithm trains one step at 64 px on both text encoders and the UNet through the real
trainer (`lib_lora.training.train`) and saves its file. Each file must then hold exactly the keys
that the full-size architecture tests (tests/networks/test_sdxl_full_size.py) map key for key in
the WebUI's loader rules, diffusers and ComfyUI's name map, with finite tensors of the shapes the
architecture gives; LoRA and LoCon files are also loaded by diffusers' own `load_lora_weights`
into the same pipeline, which must change the UNet's output. Prints one line per check.

Measured on the 2-core, 24 GiB CPU machine (fp32): LoRA (2958 tensors) and LoCon (3156) pass every
check, both text encoders included (72 lora_te1_ and 192 lora_te2_ modules). LoHa and LoKr ran out
of memory there when every wrapped layer kept its W + dW for backward; they now rebuild it in
backward (networks/recompute.py: the fake-tensor bench puts this setup at 14.4 GiB of live tensors,
26.4 before), but a real run still passed 23.8 GiB of RSS. That gap is glibc's heap, not tensors.
Measured on SD1.5 shapes (same trainer, fp32 CPU, 64 px, one step, text encoder trained), live
tensors by training/mem_tracker.py, RSS by psutil, in GiB:

    algo   tracked peak   RSS peak   RSS - tracked   RSS at end (tensors alive: 3.97)
    LoRA       4.07          4.57         0.50          4.54
    LoHa       4.85          6.94         2.09          6.30
    LoKr       4.59          6.67         2.08          6.03
    LoHa with MALLOC_MMAP_THRESHOLD_=1048576: RSS peak 5.35 (0.50 over tracked), 4.60 at end
    LoKr with it: 5.12 (0.53 over tracked); LoHa two steps: 7.04 without it, 5.45 with it

MALLOC_ARENA_MAX=2 changes nothing (7.13). After the step, gc finds no tensor beyond the model's
weights, and no weight-sized storage outlives a backward (tests/networks/
test_recompute_live_after_backward.py). The cause is glibc's sliding mmap threshold: freeing
an mmapped block raises the threshold to that block's size (up to 32 MiB). After that, the
weight-sized temporaries that LoHa/LoKr make in every layer (dW, W + dW, grad W, in forward and
again in backward) come from the heap, and the heap fragments and is not returned to the OS. So
run this check (and CPU training with LoHa/LoKr) with a fixed threshold, as in
`MALLOC_MMAP_THRESHOLD_=1048576 .venv/bin/python tools/sdxl_one_step_check.py --algos loha`.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "tests" / "networks")]

ALGOS = {"lora": "attn_ff", "locon": "attn_ff_conv", "loha": "attn_ff_conv", "lokr": "attn_ff_conv"}


def train_one(pipe, algo: str, dataset: Path, out: Path, checkpointing: bool) -> Path:
    from lib_lora.config import TrainConfig
    from lib_lora.models.diffusers_adapter import DiffusersModel
    from lib_lora.training import train

    cfg = TrainConfig()
    cfg.dataset.train_dir, cfg.dataset.resolution, cfg.dataset.enable_bucket = str(dataset), 64, False
    cfg.network.algo, cfg.network.dim, cfg.network.alpha = algo, 4, 2.0
    cfg.network.conv_dim, cfg.network.conv_alpha, cfg.network.targets = 2, 1.0, ALGOS[algo]
    cfg.network.train_text_encoder = True
    t = cfg.training
    t.epochs, t.max_train_steps, t.batch_size, t.optimizer, t.mixed_precision = 1, 1, 1, "AdamW", "no"
    t.unet_lr, t.text_encoder_lr, t.seed, t.gradient_checkpointing = 1e-3, 1e-3, 3, checkpointing
    cfg.output.output_dir, cfg.output.output_name, cfg.output.save_state = str(out), f"sdxl-{algo}", False
    cfg.output.tensorboard = False
    model = DiffusersModel(pipe, name="sdxl-random", device="cpu", dtype=torch.float32)
    result = train(cfg, model)
    if not result.files:
        raise SystemExit(f"{algo}: the run saved no file ({result.stopped_reason})")
    return Path(result.files[-1])


def expected_keys(algo: str) -> dict[str, tuple]:
    """Key -> shape of the file the architecture tests map in every reader (meta-built, same options)."""
    from test_sdxl_full_size import build_sdxl_meta, file_tensors

    tensors = file_tensors(build_sdxl_meta(), algo)
    return {k: tuple(v.shape) for k, v in tensors.items()}


def unet_output(pipe) -> torch.Tensor:
    torch.manual_seed(0)
    latents = torch.randn(1, 4, 8, 8)
    cond = {"text_embeds": torch.randn(1, 1280), "time_ids": torch.tensor([[64.0, 64, 0, 0, 64, 64]])}
    with torch.no_grad():
        return pipe.unet(latents, 500, encoder_hidden_states=torch.randn(1, 77, 2048),
                         added_cond_kwargs=cond).sample


def main() -> int:
    from safetensors.torch import load_file

    from lib_lora.bench.models import build_pipeline
    from lib_lora.bench.tiny import make_bench_dataset

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/sdxl_one_step"))
    parser.add_argument("--algos", default=",".join(ALGOS), help="which of lora,locon,loha,lokr")
    parser.add_argument("--checkpointing", action="store_true",
                        help="gradient checkpointing: LoHa/LoKr keep a full-size update per layer for "
                             "backward, about 10 GB more over the whole UNet without it")
    args = parser.parse_args()
    dataset = make_bench_dataset(args.workdir / "dataset", 1, 64, 1)
    pipe = build_pipeline("sdxl", torch.float32)
    failures = 0
    for algo in args.algos.split(","):
        path = train_one(pipe, algo, dataset, args.workdir / "out", args.checkpointing)
        tensors = load_file(str(path))
        shapes = {k: tuple(v.shape) for k, v in tensors.items()}
        want = expected_keys(algo)
        same = shapes == want
        finite = all(torch.isfinite(v).all() for v in tensors.values())
        te = {p: sum(k.startswith(p) and k.endswith(".alpha") for k in shapes) for p in ("lora_te1_", "lora_te2_")}
        print(f"[{'PASS' if same and finite else 'FAIL'}] {algo}: {len(shapes)} tensors, keys and shapes "
              f"{'equal' if same else 'DIFFER from'} the architecture-mapped file, finite={finite}, "
              f"text-encoder modules {te}", flush=True)
        failures += not (same and finite)
        if algo in ("lora", "locon"):
            before = unet_output(pipe)
            pipe.load_lora_weights(str(path), adapter_name=algo)
            changed = not torch.allclose(unet_output(pipe), before)
            pipe.unload_lora_weights()
            print(f"[{'PASS' if changed else 'FAIL'}] {algo}: diffusers load_lora_weights loads it and it "
                  "changes the UNet's output", flush=True)
            failures += not changed
    print("all checks passed" if not failures else f"{failures} check(s) failed")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
