"""Images -> VAE latents, cached: a VAE encode costs more than a UNet step (perf.md).

Keyed by image content + bucket size + flip + VAE fingerprint, so an edited
image, another bucket or another VAE never reuses a stale latent. The memory
cache lives for the run; the disk cache goes under the run's output folder
(never beside the user's images).
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


LATENT_SEED = 0x5EED  # the VAE samples its posterior: a fixed seed makes cached latents repeatable


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
    def __init__(self, model, mode: str, folder: Path | None, batch_size: int = 4):
        self.model, self.mode, self.folder, self.batch_size = model, mode, folder, batch_size
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

    def prepare(self, samples: list[Sample], flips: tuple[bool, ...], progress=None) -> None:
        """Encode every (sample, flip) not cached yet, a bucket at a time."""
        if self.mode == "off":
            return
        todo = []
        seen = set()
        for s in samples:
            for flip in flips:
                k = self.key(s, flip)
                if k in seen or k in self._memory:
                    continue
                seen.add(k)
                if self.mode == "disk" and self._disk_path(k).exists():
                    from safetensors.torch import load_file
                    self._memory[k] = load_file(str(self._disk_path(k)))["latent"]
                    continue
                todo.append((s, flip, k))
        todo.sort(key=lambda t: t[0].bucket)
        with torch.random.fork_rng(devices=[]):  # repeatable latents, and the run's RNG stream untouched
            torch.manual_seed(LATENT_SEED)
            self._encode_all(todo, progress)

    def _encode_all(self, todo, progress) -> None:
        for i in range(0, len(todo), self.batch_size):
            chunk = [t for t in todo[i:i + self.batch_size] if t[0].bucket == todo[i][0].bucket]
            self._encode(chunk)
            if progress:
                progress(min(i + len(chunk), len(todo)), len(todo))
        # chunks cut short at a bucket change leave some behind: encode those one by one
        for s, flip, k in todo:
            if k not in self._memory:
                self._encode([(s, flip, k)])

    def _encode(self, chunk) -> None:
        pixels = torch.stack([pixels_for(s, flip) for s, flip, _ in chunk])
        latents = self.model.encode_images(pixels).float().cpu()
        for (_, _, k), lat in zip(chunk, latents):
            self._memory[k] = lat.clone()
            if self.mode == "disk":
                from safetensors.torch import save_file
                write_with(self._disk_path(k), lambda tmp, lat=lat: save_file({"latent": lat.contiguous()}, str(tmp)))

    def get(self, samples: list[Sample], flips: list[bool], hue_shifts: list[int] | None = None) -> torch.Tensor:
        """(B, 4, h, w) latents; hue shifts (colour aug) need mode 'off', since they change the pixels."""
        if self.mode == "off":
            shifts = hue_shifts or [0] * len(samples)
            pixels = torch.stack([pixels_for(s, f, h) for s, f, h in zip(samples, flips, shifts)])
            return self.model.encode_images(pixels).float()
        return torch.stack([self._memory[self.key(s, f)] for s, f in zip(samples, flips)])


def shift_hue(img: Image.Image, shift: int) -> Image.Image:
    """Rotate the hue by `shift`/256 of a turn (colour aug draws -8..8, about +-11 degrees, like sd-scripts)."""
    hsv = np.asarray(img.convert("HSV"), dtype=np.int16)
    hsv[..., 0] = (hsv[..., 0] + shift) % 256
    return Image.fromarray(hsv.astype(np.uint8), "HSV").convert("RGB")
