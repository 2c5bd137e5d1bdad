"""Images -> VAE latents, cached: a VAE encode costs more than a UNet step (perf.md).

Keyed by image content + bucket size + flip + VAE fingerprint, so an edited
image, another bucket or another VAE never reuses a stale latent. The memory
cache lives for the run; the disk cache goes under the run's output folder
(never beside the user's images).

Latents are encoded when a batch first needs them (training starts after one
batch's encodes, not the whole dataset's; the first epoch runs that much slower),
or all at once by `prepare(..., encode=True)` where every latent must exist
before training (offloading the VAE). Each latent's posterior sample is drawn
with a seed of its own key, so a latent is the same whenever, in whatever order
and on whichever rank it is encoded, and the run's RNG streams are never touched.
"""
from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps

from ..dataset.buckets import resize_and_crop_to_bucket
from ..dataset.images import load_image_rgb
from ..fileio import write_with
from .batches import Sample


LATENT_SEED = 0x5EED  # the VAE samples its posterior: seeds derived from this make latents repeatable


def latent_seed(key: str) -> int:
    return LATENT_SEED ^ int(hashlib.sha1(key.encode()).hexdigest()[:8], 16)


def pixels_for(sample: Sample, flip: bool = False, hue_shift: int = 0) -> torch.Tensor:
    """(3, H, W) in [-1, 1] for the sample's bucket, optionally mirrored and hue-shifted (colour aug)."""
    img = resize_and_crop_to_bucket(load_image_rgb(sample.item.path), sample.bucket)
    if flip:
        img = ImageOps.mirror(img)
    if hue_shift:
        img = shift_hue(img, hue_shift)
    arr = np.asarray(img.convert("RGB"), dtype=np.float32) / 127.5 - 1.0
    return torch.from_numpy(arr).permute(2, 0, 1).contiguous()


def _content_hash(path: Path) -> str:
    h = hashlib.sha1()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


class LatentCache:
    def __init__(self, model, mode: str, folder: Path | None):
        self.model, self.mode, self.folder = model, mode, folder
        self.vae_id = model.vae_fingerprint() if mode != "off" else ""
        self._memory: dict[str, torch.Tensor] = {}
        self._hashes: dict[Path, str] = {}

    def key(self, sample: Sample, flip: bool) -> str:
        if sample.item.path not in self._hashes:
            self._hashes[sample.item.path] = _content_hash(sample.item.path)
        w, h = sample.bucket
        return f"{self._hashes[sample.item.path]}_{w}x{h}_{int(flip)}_{self.vae_id}"

    def _disk_path(self, key: str) -> Path:
        return self.folder / f"{key}.safetensors"

    def prepare(self, samples: list[Sample], flips: tuple[bool, ...], encode: bool = False, progress=None) -> None:
        """Load what the disk cache holds for these (sample, flip) pairs; with `encode`, also encode
        every one still missing now (else `get` encodes them on first use)."""
        if self.mode == "off":
            return
        todo = []
        for s in samples:
            for flip in flips:
                k = self.key(s, flip)
                if k not in self._memory and not self._load_from_disk(k) and encode:
                    todo.append((s, flip, k))
        todo = list({k: (s, flip, k) for s, flip, k in todo}.values())
        for i, (s, flip, k) in enumerate(todo):
            self._encode(s, flip, k)
            if progress:
                progress(i + 1, len(todo))

    def _load_from_disk(self, key: str) -> bool:
        if self.mode != "disk" or not self._disk_path(key).exists():
            return False
        from safetensors.torch import load_file

        self._memory[key] = load_file(str(self._disk_path(key)))["latent"]
        return True

    def _encode(self, sample: Sample, flip: bool, key: str) -> torch.Tensor:
        # One image at a time, its posterior sampled with a seed of its own: on the CPU this is also
        # the fastest way (batching the VAE's 256-px activations only spills the caches).
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(latent_seed(key))
            latent = self.model.encode_images(pixels_for(sample, flip)[None]).float().cpu()[0].clone()
        self._memory[key] = latent
        if self.mode == "disk":
            from safetensors.torch import save_file
            write_with(self._disk_path(key), lambda tmp: save_file({"latent": latent.contiguous()}, str(tmp)))
        return latent

    def get(self, samples: list[Sample], flips: list[bool], hue_shifts: list[int] | None = None) -> torch.Tensor:
        """(B, 4, h, w) latents; hue shifts (colour aug) need mode 'off', since they change the pixels."""
        if self.mode == "off":
            shifts = hue_shifts or [0] * len(samples)
            pixels = torch.stack([pixels_for(s, f, h) for s, f, h in zip(samples, flips, shifts)])
            return self.model.encode_images(pixels).float()
        latents = []
        for s, f in zip(samples, flips):
            k = self.key(s, f)
            latent = self._memory.get(k)
            if latent is None and not self._load_from_disk(k):
                latent = self._encode(s, f, k)
            latents.append(self._memory[k] if latent is None else latent)
        return torch.stack(latents)


def shift_hue(img: Image.Image, shift: int) -> Image.Image:
    """Rotate the hue by `shift`/256 of a turn (colour aug draws -8..8, about +-11 degrees, like sd-scripts)."""
    hsv = np.asarray(img.convert("HSV"), dtype=np.int16)
    hsv[..., 0] = (hsv[..., 0] + shift) % 256
    return Image.fromarray(hsv.astype(np.uint8), "HSV").convert("RGB")
