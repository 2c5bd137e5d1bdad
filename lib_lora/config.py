"""Typed configuration for every action, with domain.md's defaults and help text per field.

One dataclass per section. `TrainConfig` composes the sections a training run
needs; the tagging, prep and tools sections stand alone. The WebUI form and the
CLI both build these objects (by dotted field name), so a run started from the
tab can be repeated with `python -m lib_lora train --config run.toml`.
Defaults follow shared/domain.md; a trailing comment says why where it is not obvious.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

from . import options
from .errors import ConfigError
from .options import opt
from .precisions import SAVE_PRECISIONS

# Options the WebUI overrides with its own (its loaded model, its device, its Lora folder, its process's
# threads): shown on the command line and in the standalone tab, not in the WebUI's form.
OUTSIDE_WEBUI = ("headless", "standalone")

ALGOS = ("lora", "locon", "loha", "lokr")
OPTIMIZERS = ("AdamW", "AdamW8bit", "Lion", "Lion8bit", "Prodigy", "DAdaptAdam", "Adafactor",
              "SGDNesterov", "AdamWScheduleFree")
SCHEDULERS = ("constant", "constant_with_warmup", "linear", "cosine", "cosine_with_restarts", "polynomial")
PRECISIONS = ("no", "fp16", "bf16")
TARGETS = ("attn", "attn_ff", "attn_ff_conv")


@dataclass
class ModelConfig:
    pretrained: str = opt("", "Base model: a diffusers folder or a .safetensors/.ckpt checkpoint "
                              "(ignored inside the WebUI, which trains on its loaded model)", hosts=OUTSIDE_WEBUI)
    v_parameterization: bool = opt(False, "Base model predicts v (SD2.x-768-v). A diffusers folder or the WebUI's "
                                          "model says so itself; a single-file checkpoint cannot, so set this for one",
                                   hosts=OUTSIDE_WEBUI)
    config_dir: str = opt("", "Headless, single-file checkpoints only: a diffusers folder (model_index.json, unet/, "
                              "vae/, text_encoder/, tokenizer/, scheduler/) describing a custom architecture. Empty: "
                              "SD1.x, SD2.x and SDXL base are detected and use the configs shipped with the extension",
                          hosts=OUTSIDE_WEBUI)
    clip_skip: int = opt(1, "Text-encoder layers to skip from the end; 2 for anime (NAI-derived) models. "
                            "Must match how the base model is used", min=1, max=12)


@dataclass
class DatasetConfig:
    train_dir: str = opt("", "Parent folder of the <repeats>_<name> concept folders")
    reg_dir: str = opt("", "Optional parent folder of regularization (class) images, also <repeats>_<name>")
    caption_extension: str = opt(".txt", "Extension of caption files beside each image")
    resolution: int = opt(512, "Training size in pixels (512 for SD1.x, 768 for SD2-v, 1024 for SDXL)",
                          min=64, max=4096)
    enable_bucket: bool = opt(True, "Aspect-ratio bucketing: group images of similar shape instead of cropping square")
    min_bucket_reso: int = opt(256, "Smallest bucket side in pixels", min=64, max=4096)
    max_bucket_reso: int = opt(1024, "Largest bucket side in pixels", min=64, max=8192)
    bucket_reso_steps: int = opt(64, "Bucket sides are multiples of this", min=8, max=256)
    bucket_no_upscale: bool = opt(False, "Never upscale a small image to fill its bucket")
    shuffle_caption: bool = opt(True, "Shuffle comma-separated tags each step (after the kept ones)")
    keep_tokens: int = opt(1, "Tags kept in place at the start when shuffling (counts tags, not tokens)",
                           min=0, max=64)
    keep_tokens_separator: str = opt("", "If set, everything before this separator is kept in place")
    caption_dropout_rate: float = opt(0.0, "Chance to train an image with an empty caption", min=0.0, max=1.0)
    caption_tag_dropout_rate: float = opt(0.0, "Chance to drop each (non-kept) tag", min=0.0, max=1.0)
    max_token_length: int = opt(75, "Caption length in tokens, as 77-token chunks like the WebUI",
                                choices=(75, 150, 225))
    flip_aug: bool = opt(False, "Random horizontal flip; leave off for asymmetric subjects")
    color_aug: bool = opt(False, "Small random hue shift (disables the latent cache)")
    cache_latents: str = opt("memory", "Cache VAE latents: in memory, on disk beside the images, or off",
                             choices=("memory", "disk", "off"))
    prior_loss_weight: float = opt(1.0, "Loss weight of regularization images", min=0.0, max=10.0)
    validation_split: float = opt(0.0, "Share of images held out for a validation loss per epoch",
                                  min=0.0, max=0.5)
    trigger_word: str = opt("", "Trigger word expected first in captions (checked, and used in samples)")


@dataclass
class NetworkConfig:
    algo: str = opt("lora", "Network type: lora (linear), locon (+ 3x3 convs), loha (Hadamard), lokr (Kronecker)",
                    choices=ALGOS)
    dim: int = opt(16, "Rank (network_dim) of linear layers", min=1, max=1024)
    alpha: float = opt(8.0, "network_alpha: the update is scaled by alpha/dim (dim/2 is common)",
                       min=0.0, max=1024.0)
    conv_dim: int = opt(4, "Rank of 3x3 convolutions for locon/loha/lokr (at most 8 is advised)",
                        min=1, max=1024)
    conv_alpha: float = opt(1.0, "Alpha of 3x3 convolutions", min=0.0, max=1024.0)
    targets: str = opt("attn_ff", "UNet layers to train: attention, attention + feed-forward, or + ResNet convs",
                       choices=TARGETS)
    train_unet: bool = opt(True, "Train the UNet")
    train_text_encoder: bool = opt(True, "Train the text encoder(s)")
    dora: bool = opt(False, "DoRA: weight-decomposed LoRA (magnitude + direction)")
    lokr_factor: int = opt(-1, "LoKr Kronecker factor (-1 picks the most square split)", min=-1, max=64)
    dropout: float = opt(0.0, "Dropout on the network's input", min=0.0, max=0.9)
    block_include: str = opt("", "Only UNet blocks whose name contains one of these (comma-separated), e.g. up_blocks")
    block_exclude: str = opt("", "Skip UNet blocks whose name contains one of these (comma-separated)")


@dataclass
class TrainingConfig:
    # Options that existed once and do nothing now: configs and presets that still carry them load
    # (the value is dropped) instead of failing as unknown keys.
    retired_options: ClassVar[frozenset[str]] = frozenset({"cpu_attention_kernel"})

    epochs: int = opt(10, "Epochs: passes over images x repeats", min=1, max=10000)
    max_train_steps: int = opt(0, "Stop after this many steps (0: use epochs)", min=0, max=10_000_000)
    batch_size: int = opt(2, "Images per step; larger forgives a high LR and trains faster per image",
                          min=1, max=256)
    gradient_accumulation_steps: int = opt(1, "Steps to accumulate before an optimizer update", min=1, max=1024)
    unet_lr: float = opt(1e-4, "UNet learning rate", min=0.0, max=10.0)
    text_encoder_lr: float = opt(5e-5, "Text-encoder learning rate (half the UNet's is usual)", min=0.0, max=10.0)
    optimizer: str = opt("AdamW8bit", "Optimizer", choices=OPTIMIZERS)
    optimizer_args: str = opt("", "Extra optimizer arguments, e.g. 'weight_decay=0.1 betas=0.9,0.99'")
    weight_decay: float = opt(0.01, "Weight decay", min=0.0, max=1.0)
    lr_scheduler: str = opt("cosine", "Learning-rate schedule", choices=SCHEDULERS)
    lr_warmup: float = opt(0.05, "Warmup: a ratio of total steps if below 1, else a number of steps",
                           min=0.0, max=1_000_000.0)
    lr_scheduler_num_cycles: int = opt(1, "Restarts for cosine_with_restarts (at most 4 is advised)",
                                       min=1, max=100)
    lr_scheduler_power: float = opt(1.0, "Power of the polynomial schedule", min=0.0, max=10.0)
    max_grad_norm: float = opt(1.0, "Clip gradients to this norm (0: off)", min=0.0, max=1000.0)
    mixed_precision: str = opt("fp16", "Mixed precision (bf16 on GPUs that have it; on CPU only bf16 runs, fp16 trains in fp32)",
                               choices=PRECISIONS)
    gradient_checkpointing: bool = opt(False, "Trade compute for memory: recompute activations in backward")
    sdpa: bool = opt(True, "Use PyTorch scaled-dot-product attention")
    min_snr_gamma: float = opt(5.0, "Min-SNR loss weighting gamma (0: off; not with adaptive-LR optimizers)",
                               min=0.0, max=100.0)
    noise_offset: float = opt(0.0, "Noise offset (0.1 helps very dark/bright images)", min=0.0, max=1.0)
    adaptive_noise_scale: float = opt(0.0, "Adds latent mean x this to the noise offset", min=0.0, max=1.0)
    multires_noise_iterations: int = opt(0, "Multires (pyramid) noise iterations (0: off; 6-10 typical)",
                                         min=0, max=20)
    multires_noise_discount: float = opt(0.3, "Multires noise discount per level", min=0.0, max=1.0)
    zero_terminal_snr: bool = opt(False, "Rescale the noise schedule to zero terminal SNR (use with v-prediction)")
    debiased_estimation: bool = opt(False, "Debiased estimation loss weighting")
    cache_text_encoder_outputs: bool = opt(False, "Cache text-encoder outputs (needs a frozen TE and no shuffling)")
    offload_after_caching: bool = opt(False, "Move the VAE (and a frozen text encoder whose outputs are cached) to "
                                      "the CPU once latents are cached, freeing their VRAM for the training "
                                      "steps; they come back for samples and at the end. Needs cached latents")
    ema: bool = opt(False, "Keep an exponential moving average of the LoRA weights and save that")
    ema_decay: float = opt(0.999, "EMA decay per step", min=0.0, max=1.0)
    seed: int = opt(42, "Random seed (fixed seed + no shuffle = reproducible)", min=0, max=2**32 - 1)
    device: str = opt("auto", "Device for headless runs: auto, cpu, cuda, cuda:1, ...", hosts=OUTSIDE_WEBUI)
    num_threads: int = opt(0, "CPU threads for torch (0: leave as is)", min=0, max=256, hosts=OUTSIDE_WEBUI)


@dataclass
class OutputConfig:
    output_dir: str = opt("output", "Folder for the LoRA files, state and logs (inside the WebUI: its Lora folder)",
                          hosts=OUTSIDE_WEBUI)
    output_name: str = opt("my_lora", "File name stem: one <name>-000001.safetensors per saved epoch")
    save_every_n_epochs: int = opt(1, "Save a LoRA file every N epochs", min=1, max=10000)
    save_last_n_epochs: int = opt(0, "Keep only the last N epoch files (0: keep all)", min=0, max=10000)
    save_precision: str = opt("fp16", "Precision of saved LoRA files", choices=SAVE_PRECISIONS)
    save_state: bool = opt(True, "Save optimizer/RNG state each epoch so the run can be resumed")
    tensorboard: bool = opt(True, "Write TensorBoard event files (loss, lr, validation loss)")
    comment: str = opt("", "Training comment stored in the file (ss_training_comment)")


@dataclass
class SampleConfig:
    every_n_epochs: int = opt(0, "Render sample images every N epochs (0: off)", min=0, max=10000)
    prompts: list[str] = opt([], "Sample prompts, one per entry (trigger word + an unseen trait, e.g. 'smile')")
    negative_prompt: str = opt("", "Negative prompt for samples and grids")
    seed: int = opt(1234, "Seed for samples and grids", min=0, max=2**32 - 1)
    steps: int = opt(20, "Sampling steps", min=1, max=150)
    cfg_scale: float = opt(7.0, "CFG scale", min=1.0, max=30.0)
    width: int = opt(512, "Sample width", min=64, max=4096)
    height: int = opt(512, "Sample height", min=64, max=4096)
    sampler: str = opt("Euler a", "Sampler (WebUI name; headless uses the closest diffusers scheduler)")
    grid_weights: list[float] = opt([0.6, 0.7, 0.8, 0.9, 1.0], "LoRA weights for the epoch x weight grid")


@dataclass
class TrainConfig:
    """Everything one training run needs; written as TOML beside its outputs."""
    model: ModelConfig = field(default_factory=ModelConfig)
    dataset: DatasetConfig = field(default_factory=DatasetConfig)
    network: NetworkConfig = field(default_factory=NetworkConfig)
    training: TrainingConfig = field(default_factory=TrainingConfig)
    output: OutputConfig = field(default_factory=OutputConfig)
    sample: SampleConfig = field(default_factory=SampleConfig)

    def check(self) -> None:
        """Rules across fields, beyond per-field ranges."""
        d = self.dataset
        if d.min_bucket_reso > d.max_bucket_reso:
            raise ConfigError("dataset.min_bucket_reso", d.min_bucket_reso,
                              f"a value no larger than dataset.max_bucket_reso ({d.max_bucket_reso})")
        if d.resolution % 8:
            raise ConfigError("dataset.resolution", d.resolution, "a multiple of 8 (64 is usual)")
        if not (self.network.train_unet or self.network.train_text_encoder):
            raise ConfigError("network.train_unet", False, "true, or set network.train_text_encoder = true")
        check_output_name(self.output.output_name)


OUTPUT_NAME_FIELD = "output.output_name"
OUTPUT_NAME_MAX_BYTES = 200
# Windows cannot create these names whatever the extension (CON.safetensors is the console)
RESERVED_NAMES = frozenset({"con", "prn", "aux", "nul", *(f"com{i}" for i in range(1, 10)),
                            *(f"lpt{i}" for i in range(1, 10))})


def check_output_name(name: str, where: str = OUTPUT_NAME_FIELD) -> None:
    """The one rule for a run's output name: a plain file name (no folder separators or characters a
    file system refuses, no reserved name, not '.' or '..'), short enough for `<name>-000001.safetensors`
    plus the atomic write's temp prefix. Raises ConfigError naming `where`, the name and the fix."""
    if not name or name.strip(" .") == "" or any(c in name for c in '/\\:*?"<>|'):
        raise ConfigError(where, name, 'a plain file name without / \\ : * ? " < > | (e.g. my_lora)')
    # a name the file system cannot hold would fail at the first save, after an epoch of training
    if len(name.encode("utf-8", "surrogateescape")) > OUTPUT_NAME_MAX_BYTES or not name.isprintable():
        raise ConfigError(where, name, f"a name of at most {OUTPUT_NAME_MAX_BYTES} bytes without control "
                                       "or invisible characters (newlines, tabs)")
    if name.split(".")[0].strip().lower() in RESERVED_NAMES:
        raise ConfigError(where, name, "a name other than the reserved device names CON, PRN, AUX, NUL, "
                                       "COM1-9, LPT1-9 (e.g. my_lora)")


@dataclass
class TaggingConfig:
    models: list[str] = opt(["SmilingWolf/wd-v1-4-convnext-tagger-v2"],
                            "Tagger models: Hugging Face repo ids or local folders with model.onnx + selected_tags.csv; "
                            "several give the union of their tags")
    general_threshold: float = opt(0.35, "Confidence needed for a general tag", min=0.0, max=1.0)
    character_threshold: float = opt(0.85, "Confidence needed for a character tag", min=0.0, max=1.0)
    exclude_tags: list[str] = opt([], "Tags never written (comma separated)")
    remove_junk_tags: bool = opt(True, "Drop booru junk tags (absurdres, highres, commentary, ...)")
    replace_underscores: bool = opt(True, "Write tags with spaces instead of underscores (kaomoji kept)")
    trigger_word: str = opt("", "Put this word first in every caption")
    write_mode: str = opt("skip", "Existing captions: skip, append, prepend or overwrite",
                          choices=("skip", "append", "prepend", "overwrite"))
    caption_extension: str = opt(".txt", "Extension of caption files")
    batch_size: int = opt(8, "Images per tagger batch", min=1, max=256)
    models_dir: str = opt("", "Where downloaded tagger models are kept (the tab uses its own: models/wd14_tagger "
                              "inside the WebUI)", hosts=("headless",))
    decode_workers: int = opt(2, "Threads decoding images while the tagger runs", min=1, max=32)
    captioner: str = opt("wd14", "Who writes the captions: wd14 (ONNX tagger, anywhere); deepdanbooru or blip "
                         "(the WebUI's own interrogators, only inside the WebUI)",
                         choices=("wd14", "deepdanbooru", "blip"))


@dataclass
class PrepConfig:
    crop: str = opt("none", "Crop mode: none (bucketed later), centre, focal (on the subject), split (oversized)",
                    choices=("none", "centre", "focal", "split"))
    resolution: int = opt(512, "Target size for cropping, resizing and the too-small check", min=64, max=4096)
    upscale_small: bool = opt(True, "Upscale images smaller than the target, at most 2x")
    flatten_alpha: bool = opt(True, "Flatten transparency onto white and fix the transparent-background tag")
    dedupe: bool = opt(True, "Skip exact and near duplicates")
    in_place: bool = opt(False, "Modify the originals instead of writing copies (not advised)")
    max_aspect: float = opt(2.0, "Flag images whose long side exceeds this ratio of the short side",
                            min=1.0, max=10.0)
    caption_extension: str = opt(".txt", "Extension of caption files (copied, and rewritten when alpha is flattened)")
    upscaler: str = opt("lanczos", "Upscaler for small images: lanczos anywhere, or inside the WebUI one of its "
                        "upscalers by name (e.g. R-ESRGAN 4x+)")


CONFIG_MAX_BYTES = 16 << 20      # a run config is a few KiB; more is a wrong file


def _check_config_file(path: Path) -> None:
    """Refuse a FIFO, device or folder (reading one would hang or fail late) and a file no config could be."""
    import stat

    from .errors import LoraError
    info = path.stat()
    if not stat.S_ISREG(info.st_mode):
        raise LoraError("The config file is a folder, FIFO or device, not a TOML file", where=str(path),
                        fix="Give the run's .toml file; a template is written by `python -m lib_lora config --out run.toml`")
    if info.st_size > CONFIG_MAX_BYTES:
        raise LoraError(f"The config file is {info.st_size} bytes, more than a config can be ({CONFIG_MAX_BYTES})",
                        where=str(path), fix="Give the run's .toml file, not another file")


def load_train_config(path: str | Path, overrides: list[str] | None = None) -> TrainConfig:
    """Read a run config from TOML, apply `section.key=value` overrides, validate."""
    from .errors import LoraError

    path = Path(path)
    try:
        _check_config_file(path)
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as e:
        raise LoraError(f"The config file is not UTF-8 text (byte 0x{e.object[e.start]:02x} at offset {e.start})",
                        where=str(path), fix="Save it as UTF-8 (any editor's 'Save with encoding' does), "
                        "or write a fresh one with `python -m lib_lora config --out run.toml`") from None
    except OSError as e:
        raise LoraError(f"Cannot read the config file: {e.strerror}", where=str(path),
                        fix="Check the path; a template is written by `python -m lib_lora config --out run.toml`") from None
    cfg = options.from_dict(TrainConfig, options.loads_toml(text, str(path)))
    return options.apply_overrides(TrainConfig, cfg, overrides or [])


def dumps_train_config(cfg: TrainConfig) -> str:
    help_by_field = {k: meta["help"] for k, (_, meta) in options.field_info(TrainConfig).items()}
    return options.dumps_toml(options.to_dict(cfg), help_by_field)
