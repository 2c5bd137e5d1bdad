"""A tiny Stable Diffusion built in code: seeded, offline, in seconds.

The demo, the tests and `bench --model tiny` train on it. Its shape is the one
shared/reference/perf.md section 7 measured sd-scripts on (UNet channels 32/64,
one layer per block, cross-attention 32; a 4-level VAE so 256 px -> 32x32
latents; a 2-layer CLIP text model with the real CLIP vocabulary), so our
figures compare with theirs. The tokenizer is built from the CLIP BPE file that
the open_clip wheel ships (`.ci/setup` extracts it to .cache/clip/), never downloaded
at run time.
"""
from __future__ import annotations

import gzip
import hashlib
import json
import os
from functools import lru_cache
from pathlib import Path

import torch

from ..cache_folders import REPO_ROOT, cache_folder
from ..errors import ModelError
from ..fileio import write_text

DEFAULT_BPE = REPO_ROOT / ".cache" / "clip" / "bpe_simple_vocab_16e6.txt.gz"
CLIP_VOCAB_MERGES = 49152 - 256 - 2  # merges OpenAI CLIP uses from the BPE file


def _bytes_to_unicode() -> dict[int, str]:
    """CLIP's reversible byte -> printable-character table (the GPT-2 scheme)."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + \
        list(range(ord("®"), ord("ÿ") + 1))
    chars = printable[:]
    extra = 0
    for b in range(256):
        if b not in printable:
            printable.append(b)
            chars.append(256 + extra)
            extra += 1
    return dict(zip(printable, (chr(c) for c in chars)))


def find_bpe_file() -> Path:
    path = Path(os.environ.get("LIB_LORA_CLIP_BPE", DEFAULT_BPE))
    if not path.is_file():
        raise ModelError("The CLIP vocabulary file (bpe_simple_vocab_16e6.txt.gz) that the tokenizers of the "
                         "tiny model and of single-file checkpoints are built from is missing", where=str(path),
                         fix="Run `bash .ci/setup` once (it extracts the file from the open_clip wheel), "
                             "or set LIB_LORA_CLIP_BPE to a bpe_simple_vocab_16e6.txt.gz")
    return path


@lru_cache(maxsize=None)
def tokenizer_vocab_files(bpe_path: str) -> str:
    """The folder with vocab.json + merges.txt (the layout transformers' CLIPTokenizer reads) for
    this BPE file: derived once (a quarter second) into the `clip_tokenizer` cache, then reused."""
    data = Path(bpe_path).read_bytes()
    folder = cache_folder("clip_tokenizer", "LIB_LORA_TOKENIZER_CACHE") / hashlib.sha1(data).hexdigest()[:12]
    vocab_file, merges_file = folder / "vocab.json", folder / "merges.txt"
    if vocab_file.is_file() and merges_file.is_file():
        return str(folder)
    lines = gzip.decompress(data).decode("utf-8").split("\n")
    merges = [tuple(line.split()) for line in lines[1:CLIP_VOCAB_MERGES + 1]]
    byte_chars = list(_bytes_to_unicode().values())
    vocab = byte_chars + [c + "</w>" for c in byte_chars] + ["".join(m) for m in merges]
    vocab += ["<|startoftext|>", "<|endoftext|>"]
    folder.mkdir(parents=True, exist_ok=True)
    # merges first: a reader checks vocab.json last, so it never sees vocab without merges
    write_text(merges_file, "#version: 0.2\n" + "\n".join(" ".join(m) for m in merges) + "\n")
    write_text(vocab_file, json.dumps({t: i for i, t in enumerate(vocab)}))
    return str(folder)


def build_clip_tokenizer(bpe_path: str | Path | None = None):
    """The OpenAI CLIP tokenizer (ids match open_clip.tokenize), from the BPE file only."""
    from transformers import CLIPTokenizer

    folder = tokenizer_vocab_files(str(bpe_path or find_bpe_file()))
    return CLIPTokenizer(str(Path(folder, "vocab.json")), str(Path(folder, "merges.txt")),
                         pad_token="<|endoftext|>", model_max_length=77)


def _text_config(tokenizer, hidden: int = 32, layers: int = 2, projection: int = 32):
    from transformers import CLIPTextConfig

    return CLIPTextConfig(hidden_size=hidden, intermediate_size=37, num_attention_heads=4,
                          num_hidden_layers=layers, max_position_embeddings=77, projection_dim=projection,
                          vocab_size=tokenizer.vocab_size, bos_token_id=tokenizer.bos_token_id,
                          eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)


def _tiny_vae():
    from diffusers import AutoencoderKL

    return AutoencoderKL(block_out_channels=(32, 64, 64, 64), down_block_types=("DownEncoderBlock2D",) * 4,
                         up_block_types=("UpDecoderBlock2D",) * 4, layers_per_block=1, latent_channels=4,
                         norm_num_groups=32, sample_size=256)


def _scheduler(prediction_type: str = "epsilon"):
    from diffusers import EulerAncestralDiscreteScheduler

    # SD's training schedule (scaled_linear 0.00085..0.012, 1000 steps); Euler a like the WebUI's default.
    return EulerAncestralDiscreteScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                                           num_train_timesteps=1000, steps_offset=1,
                                           prediction_type=prediction_type)


def build_tiny_sd1(seed: int = 0, prediction_type: str = "epsilon"):
    """A tiny SD1-shaped StableDiffusionPipeline with random (seeded) weights."""
    from diffusers import StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextModel

    tokenizer = build_clip_tokenizer()
    torch.manual_seed(seed)
    unet = UNet2DConditionModel(sample_size=32, block_out_channels=(32, 64), layers_per_block=1,
                                down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
                                up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
                                cross_attention_dim=32, attention_head_dim=4, norm_num_groups=32)
    vae = _tiny_vae()
    text_encoder = CLIPTextModel(_text_config(tokenizer))
    pipe = StableDiffusionPipeline(vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet,
                                   scheduler=_scheduler(prediction_type), safety_checker=None,
                                   feature_extractor=None, requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def build_tiny_sdxl(seed: int = 0):
    """A tiny SDXL-shaped pipeline: two text encoders, text_time conditioning, 3 UNet levels."""
    from diffusers import StableDiffusionXLPipeline, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTextModelWithProjection

    tokenizer = build_clip_tokenizer()
    torch.manual_seed(seed)
    te1 = CLIPTextModel(_text_config(tokenizer, hidden=32))
    te2 = CLIPTextModelWithProjection(_text_config(tokenizer, hidden=32, projection=32))
    unet = UNet2DConditionModel(
        sample_size=32, block_out_channels=(32, 64, 64), layers_per_block=1,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
        transformer_layers_per_block=(1, 1, 2), attention_head_dim=(2, 4, 4), cross_attention_dim=64,
        addition_embed_type="text_time", addition_time_embed_dim=8,
        projection_class_embeddings_input_dim=32 + 6 * 8, use_linear_projection=True, norm_num_groups=32)
    pipe = StableDiffusionXLPipeline(vae=_tiny_vae(), text_encoder=te1, text_encoder_2=te2, tokenizer=tokenizer,
                                     tokenizer_2=tokenizer, unet=unet, scheduler=_scheduler(),
                                     force_zeros_for_empty_prompt=True)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def save_pipeline(pipe, folder: str | Path) -> Path:
    """Write the pipeline as a diffusers folder any tool can load (safetensors weights)."""
    folder = Path(folder)
    pipe.save_pretrained(str(folder), safe_serialization=True)
    return folder
