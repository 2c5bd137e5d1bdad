"""Every option of `python -m lib_lora bench`, declared once; the flags are built from it.

Options whose best value depends on the model say so and take 0 / "" / "auto" for
"the model's own": the tiny model keeps perf.md section 7's reference work (a test
stand), SD1.5 and SDXL default to the issue's goal settings (rank 16, weights in
half precision, UNet only with the text-encoder outputs cached, VAE and text
encoders offloaded after caching, batch 1 and 4, with and without gradient
checkpointing). `--tool extract` reads --dim, --change, --methods, --workdir and --keep.
"""
from __future__ import annotations

import argparse
from dataclasses import dataclass

from ..errors import ConfigError
from ..options import add_arguments, from_namespace, opt

MODELS = ("tiny", "sd15", "sdxl")
NATIVE_RESOLUTION = {"tiny": 256, "sd15": 512, "sdxl": 1024}


@dataclass
class BenchOptions:
    tool: str = opt("train", "What to measure: the training loop, or LoRA extraction (an SD1.5-sized pair "
                             "built in code; reads --dim, --change, --methods)", choices=("train", "extract"))
    model: str = opt("tiny", "tiny: the built-in tiny SD1 model (a test stand, perf.md's reference work); "
                             "sd15 / sdxl: random weights in the published SD1.5 / SDXL-base shapes",
                     choices=MODELS)
    resolution: int = opt(0, "Training size in pixels; 0: the model's own (tiny 256, sd15 512, sdxl 1024)",
                          min=0)
    batch: str = opt("", "Batch size, or several comma separated (each is a run); '': tiny 2, sd15/sdxl 1,4")
    gradient_checkpointing: str = opt("", "off, on, or both (a run each); '': tiny off, sd15/sdxl both",
                                      choices=("", "off", "on", "both"))
    dim: int = opt(0, "LoRA rank; 0: tiny 8, sd15/sdxl 16, extract 8", min=0)
    alpha: float = opt(0.0, "LoRA alpha; 0: half the rank", min=0.0)
    text_encoder: str = opt("auto", "Train a text-encoder LoRA: auto (tiny yes; sd15/sdxl no, with its outputs "
                                    "cached and the encoders offloaded), yes, no", choices=("auto", "yes", "no"))
    offload_after_caching: str = opt("auto", "Move the VAE (and cached text encoders) off the device after "
                                             "caching: auto (tiny no, sd15/sdxl yes), yes, no",
                                     choices=("auto", "yes", "no"))
    mixed_precision: str = opt("auto", "auto: tiny fp32; sd15/sdxl fp16 on CUDA, bf16 on CPU (weights held in "
                                       "bf16, the bytes of the WebUI's fp16) except real runs on a CPU without "
                                       "bf16 instructions (fp32 there); or no, fp16, bf16",
                               choices=("auto", "no", "fp16", "bf16"))
    fake: str = opt("auto", "Run under FakeTensorMode (our real training code, shapes only, no arithmetic): "
                            "auto (on CPU: SDXL and batches above 1, whose real steps take minutes, and the WebUI "
                            "path, whose half-precision ldm model cannot compute on CPU), yes, no",
                    choices=("auto", "yes", "no"))
    path: str = opt("both", "sd15/sdxl: headless (diffusers model), webui (the ldm model inside the WebUI "
                            "stand-in, through the model bridge), or both", choices=("headless", "webui", "both"))
    steps: int = opt(0, "Stop after this many optimizer steps; 0: tiny all (images x repeats x epochs / batch), "
                        "sd15/sdxl 3 real or 2 fake", min=0)
    images: int = opt(20, "Images in the generated dataset (tiny); sd15/sdxl use one batch's worth", min=1)
    repeats: int = opt(10, "Repeats per image per epoch (tiny)", min=1)
    epochs: int = opt(2, "Epochs (tiny)", min=1)
    optimizer: str = opt("AdamW", "Optimizer name, as training.optimizer")
    scheduler: str = opt("constant", "LR schedule, as training.lr_scheduler")
    cache_latents: str = opt("memory", "Latent cache", choices=("memory", "disk", "off"))
    threads: int = opt(0, "torch CPU threads (0: the trainer's choice)", min=0)
    device: str = opt("auto", "auto, cpu, cuda, cuda:1, ...")
    seed: int = opt(42, "Seed", min=0)
    runs: int = opt(1, "tiny: repeat the run and report the median", min=1)
    change: float = opt(0.02, "extract: size of the known change per layer, relative to the weight "
                              "(||dW||/||W||)", min=0.0)
    methods: str = opt("lowrank,exact", "extract: SVD methods to time, comma separated (auto, lowrank, exact)")
    workdir: str = opt("", "Where to build the dataset (tiny) or the random pair (extract); empty: a temp folder")
    keep: bool = opt(False, "extract: keep the pair and outputs for another run")

    # -- the model's own values for the options left at 0 / '' / auto -----------------------------
    @property
    def real_shape(self) -> bool:
        return self.model != "tiny"

    def px(self) -> int:
        return self.resolution or NATIVE_RESOLUTION[self.model]

    def batches(self) -> list[int]:
        text = self.batch or ("1,4" if self.real_shape else "2")
        parts = [b.strip() for b in text.split(",") if b.strip()]
        if not parts or not all(b.isdigit() and 1 <= int(b) <= 1024 for b in parts):
            raise ConfigError("bench --batch", self.batch, "batch sizes from 1 to 1024, comma separated (e.g. 1,4)")
        return [int(b) for b in parts]

    def checkpointing(self) -> list[bool]:
        choice = self.gradient_checkpointing or ("both" if self.real_shape else "off")
        return {"off": [False], "on": [True], "both": [False, True]}[choice]

    def rank(self) -> int:
        return self.dim or (16 if self.real_shape else 8)

    def lora_alpha(self) -> float:
        return self.alpha or self.rank() / 2

    def trains_text_encoder(self) -> bool:
        return self.text_encoder == "yes" or (self.text_encoder == "auto" and not self.real_shape)

    def offloads(self) -> bool:
        return self.offload_after_caching == "yes" or (self.offload_after_caching == "auto" and self.real_shape)

    def precision(self, device_type: str, fake: bool = True) -> str:
        """auto: fp16 on CUDA; on CPU bf16 for fake runs (the bytes of a GPU's fp16) and for real runs on a
        CPU with bf16 instructions, fp32 for real runs on one without (bf16 is emulated there, ~20x slower)."""
        if self.mixed_precision != "auto":
            return self.mixed_precision
        if not self.real_shape:
            return "no"
        if device_type == "cuda":
            return "fp16"
        from ..training.precision import cpu_has_bf16

        return "bf16" if fake or cpu_has_bf16() else "no"

    def is_fake(self, device_type: str, batch: int, path: str = "headless") -> bool:
        if self.fake != "auto":
            return self.fake == "yes"
        return device_type == "cpu" and self.real_shape and (self.model == "sdxl" or batch > 1 or path == "webui")


def add_option_flags(p: argparse.ArgumentParser) -> None:
    """One --flag per field of BenchOptions, typed, with its help, default and choices."""
    add_arguments(p, BenchOptions)


def options_from_args(args: argparse.Namespace) -> BenchOptions:
    return from_namespace(BenchOptions, args)
