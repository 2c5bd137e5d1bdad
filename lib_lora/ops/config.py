"""Typed options of the tools: extraction, merging, resizing (same style as lib_lora/config.py).

The CLI (`python -m lib_lora extract|merge|resize`) and the WebUI's tools tab
both build these; `options.validate()` checks ranges and choices and calls
`check()` for the rules across fields. A rank is called `dim`/`conv_dim` here as in
TrainConfig's network section and sd-scripts (`--dim`, `--conv_dim`); configs
written with the old `rank` names still load (`renamed_options`).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import ClassVar

from .. import options
from ..errors import ConfigError
from ..options import opt
from ..precisions import SAVE_PRECISIONS
from .svd import DYNAMIC_METHODS, SVD_METHODS

DEVICES = ("cpu", "cuda")


def _check_dynamic(prefix: str, dynamic: str, param: float) -> None:
    if dynamic == "sv_ratio" and param <= 1.0:
        raise ConfigError(f"{prefix}dynamic_param", param, "a ratio above 1 for sv_ratio, e.g. 20")
    if dynamic in ("sv_fro", "sv_cumulative") and not 0.0 < param <= 1.0:
        raise ConfigError(f"{prefix}dynamic_param", param, f"a share in (0, 1] for {dynamic}, e.g. 0.9")


# the old names of the fields renamed to one word per concept (rank -> dim): still read from files
RANK_RENAMES = {"rank": "dim", "conv_rank": "conv_dim"}


@dataclass
class ExtractConfig:
    renamed_options: ClassVar[dict[str, str]] = RANK_RENAMES

    dim: int = opt(8, "Rank (dim) of linear and 1x1 layers; with a dynamic rule, the most kept",
                   min=1, max=1024)
    conv_dim: int = opt(0, "Rank (dim) of 3x3 convolutions (LoCon); 0 extracts no ResNet/sampler layers",
                        min=0, max=1024)
    dynamic: str = opt("", "Pick each layer's rank by its singular values: sv_ratio (keep s > s_max/param), "
                           "sv_fro (keep param of the Frobenius norm), sv_cumulative (keep param of the sum); "
                           "empty: fixed dim", choices=("",) + DYNAMIC_METHODS)
    dynamic_param: float = opt(0.0, "Threshold of the dynamic rule (sv_ratio: e.g. 20; sv_fro/sv_cumulative: "
                                     "e.g. 0.9)", min=0.0, max=1e6)
    clamp_quantile: float = opt(1.0, "Clip the factors at this quantile of their absolute values; 1.0 is off. "
                                     "sd-scripts uses 0.99, which loses ~10% of a low-rank change",
                                min=0.5, max=1.0)
    svd: str = opt("auto", "SVD: auto (randomized svd_lowrank where it is cheaper, exact otherwise), "
                           "lowrank, or exact", choices=SVD_METHODS)
    niter: int = opt(4, "Power iterations of the randomized SVD (more: closer to exact, slower)", min=0, max=32)
    seed: int = opt(0, "Seed of the randomized SVD, so runs repeat exactly", min=0, max=2**31 - 1)
    text_encoder: str = opt("auto", "Text encoders: auto (kept if they changed more than te_threshold), on, off",
                            choices=("auto", "on", "off"))
    te_threshold: float = opt(1e-3, "Relative change ||dW||/||W|| above which the text encoders count as "
                                    "trained; fp16 rounding alone stays below 3e-4", min=0.0, max=1.0)
    precision: str = opt("fp16", "Precision of the saved LoRA", choices=SAVE_PRECISIONS)
    device: str = opt("cpu", "Where the SVDs run (cuda if a GPU is free)", choices=DEVICES)
    threads: int = opt(0, "CPU threads for the math; 0: one for the randomized SVD (its skinny products gain "
                          "little from more and lose much on a busy CPU: 18 s vs 52 s measured on 2 shared "
                          "cores), torch's default for the exact SVD", min=0, max=256)
    v_parameterization: bool = opt(False, "The models predict v (SD2-768-v); recorded in the metadata")

    def check(self) -> None:
        _check_dynamic("", self.dynamic, self.dynamic_param)

    def summary(self) -> dict:
        return asdict(self)


@dataclass
class MergeConfig:
    renamed_options: ClassVar[dict[str, str]] = {"svd_rank": "svd_dim", "svd_conv_rank": "svd_conv_dim"}

    weights: list[float] = opt([], "Weight of each LoRA, in order (missing ones: 1.0)")
    block_weights: list[str] = opt([], "Per-LoRA block weights: 17 values (BASE,IN01,IN02,IN04,...,OUT11) or 26 "
                                       "(BASE,IN00..IN11,MID,OUT00..OUT11), comma separated; one entry for all "
                                       "LoRAs or one per LoRA")
    precision: str = opt("fp16", "Precision of the output file", choices=SAVE_PRECISIONS)
    drop_ema: bool = opt(False, "Leave out the EMA weights (model_ema.*): junk after a merge")
    mode: str = opt("checkpoint", "checkpoint: LoRAs into a checkpoint; concat: LoRAs into one LoRA, ranks "
                                  "added (exact); svd: LoRAs into one LoRA re-compressed to svd_dim",
                    choices=("checkpoint", "concat", "svd"))
    svd_dim: int = opt(32, "Rank (dim) of the merged LoRA in svd mode (linear and 1x1 layers)", min=1, max=4096)
    svd_conv_dim: int = opt(0, "Rank (dim) of 3x3 convolutions in svd mode (0: same as svd_dim)", min=0, max=4096)
    dynamic: str = opt("", "Dynamic rank rule in svd mode (see extract)", choices=("",) + DYNAMIC_METHODS)
    dynamic_param: float = opt(0.0, "Threshold of the dynamic rule", min=0.0, max=1e6)
    device: str = opt("cpu", "Where the merge math runs", choices=DEVICES)

    def check(self) -> None:
        _check_dynamic("", self.dynamic, self.dynamic_param)

    def summary(self) -> dict:
        return asdict(self)


@dataclass
class ResizeConfig:
    renamed_options: ClassVar[dict[str, str]] = RANK_RENAMES

    dim: int = opt(8, "New rank (dim) (with a dynamic rule: the most kept)", min=1, max=4096)
    conv_dim: int = opt(0, "New rank (dim) of 3x3 convolutions (0: same as dim)", min=0, max=4096)
    dynamic: str = opt("", "Dynamic rank rule (see extract)", choices=("",) + DYNAMIC_METHODS)
    dynamic_param: float = opt(0.0, "Threshold of the dynamic rule", min=0.0, max=1e6)
    precision: str = opt("fp16", "Precision of the saved LoRA", choices=SAVE_PRECISIONS)
    device: str = opt("cpu", "Where the SVDs run", choices=DEVICES)

    def check(self) -> None:
        _check_dynamic("", self.dynamic, self.dynamic_param)

    def summary(self) -> dict:
        return asdict(self)


def validated(cfg):
    """Validate any of the configs above (ranges, choices, cross-field rules, a device this machine
    has) and return it."""
    from ..device_check import check_device
    options.validate(cfg)
    check_device(cfg.device, "--device")
    return cfg
