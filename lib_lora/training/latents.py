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


def pixels_for(sample: Sample, flip: bool = False) -> torch.Tensor:
    """(3, H, W) in [-1, 1] for the sample's bucket."""
    img = resize_and_crop_to_bucket(load_image_rgb(sample.item.path), sample.bucket)
    if flip:
        img = ImageOps.mirror(img)
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

    def get(self, samples: list[Sample], flips: list[bool]) -> torch.Tensor:
        if self.mode == "off":
            pixels = torch.stack([pixels_for(s, f) for s, f in zip(samples, flips)])
            return self.model.encode_images(pixels).float()
        return torch.stack([self._memory[self.key(s, f)] for s, f in zip(samples, flips)])


def color_jitter(img: Image.Image, rng) -> Image.Image:
    """Small hue shift, as sd-scripts' color_aug (applied to pixels, so it bypasses the cache)."""
    hsv = np.asarray(img.convert("HSV"), dtype=np.int16)
    hsv[..., 0] = (hsv[..., 0] + rng.randint(-8, 8)) % 256
    return Image.fromarray(hsv.astype(np.uint8), "HSV").convert("RGB")
