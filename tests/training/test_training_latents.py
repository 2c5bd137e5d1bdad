"""The latent cache: keyed by image content + bucket + flip + VAE; on disk it survives runs; colour aug bypasses it."""
from __future__ import annotations

import pytest
import torch
from PIL import Image

from lib_lora.training import train
from lib_lora.training.batches import Sample
from lib_lora.training.latents import LatentCache, pixels_for

from training_fixtures import fast_config, write_dataset


def _samples(root):
    from lib_lora.dataset.scan import scan_dataset

    return [Sample(item, "thing", 1, False, (64, 64)) for item in scan_dataset(root).items]


class _CountingVae:
    """The model's encode_images, counted."""

    def __init__(self, model):
        self.model, self.encoded = model, 0

    def __getattr__(self, name):
        return getattr(self.model, name)

    def encode_images(self, pixels):
        self.encoded += pixels.shape[0]
        return self.model.encode_images(pixels)


def test_disk_cache_is_reused_and_invalidated_by_an_edited_image(tiny_model, tmp_path):
    root = write_dataset(tmp_path / "data", n_images=3)
    samples = _samples(root)
    model = _CountingVae(tiny_model)
    first = LatentCache(model, "disk", tmp_path / "cache")
    first.prepare(samples, (False, True), encode=True)
    assert model.encoded == 6 and len(list((tmp_path / "cache").glob("*.safetensors"))) == 6
    again = LatentCache(model, "disk", tmp_path / "cache")
    again.prepare(samples, (False, True), encode=True)
    assert model.encoded == 6  # all six read back from disk
    torch.testing.assert_close(again.get(samples, [False] * 3), first.get(samples, [False] * 3))
    Image.new("RGB", (64, 64), (0, 0, 255)).save(samples[1].item.path)  # edit one image in place
    edited = LatentCache(model, "disk", tmp_path / "cache")
    edited.prepare(samples, (False, True), encode=True)
    assert model.encoded == 8  # only the edited image, both flips, is encoded again
    assert not torch.allclose(edited.get(samples[1:2], [False]), first.get(samples[1:2], [False]))


def test_cache_key_changes_with_bucket_flip_and_vae(tiny_model, tmp_path):
    root = write_dataset(tmp_path / "data", n_images=1)
    s = _samples(root)[0]
    cache = LatentCache(tiny_model, "memory", None)
    wide = Sample(s.item, "thing", 1, False, (96, 64))
    keys = {cache.key(s, False), cache.key(s, True), cache.key(wide, False)}
    assert len(keys) == 3
    other_vae = LatentCache(tiny_model, "memory", None)
    other_vae.vae_id = "another-vae"
    assert other_vae.key(s, False) != cache.key(s, False)


def test_cached_latents_are_repeatable_and_leave_the_global_rng_alone(tiny_model, tmp_path):
    samples = _samples(write_dataset(tmp_path / "data", n_images=2))
    torch.manual_seed(1)
    a = LatentCache(tiny_model, "memory", None)
    a.prepare(samples, (False,), encode=True)
    after_a = torch.rand(1)
    torch.manual_seed(1)
    b = LatentCache(tiny_model, "memory", None)
    torch.manual_seed(99)  # whatever the run's RNG state, the cache draws its own
    b.prepare(samples, (False,), encode=True)
    assert torch.equal(a.get(samples, [False, False]), b.get(samples, [False, False]))
    torch.manual_seed(1)
    assert torch.equal(torch.rand(1), after_a)


def test_latents_encoded_on_first_use_equal_upfront_ones_in_any_order(tiny_model, tmp_path):
    samples = _samples(write_dataset(tmp_path / "data", n_images=3))
    upfront = LatentCache(tiny_model, "memory", None)
    upfront.prepare(samples, (False, True), encode=True)
    model = _CountingVae(tiny_model)
    lazy = LatentCache(model, "memory", None)
    lazy.prepare(samples, (False, True))
    assert model.encoded == 0  # nothing encoded before a batch asks
    torch.manual_seed(7)
    rng_before = torch.get_rng_state()
    late_first = lazy.get(samples[::-1], [True, False, True])  # reversed order, mixed flips
    assert model.encoded == 3 and torch.equal(torch.get_rng_state(), rng_before)
    torch.testing.assert_close(late_first, upfront.get(samples[::-1], [True, False, True]), rtol=0, atol=0)
    lazy.get(samples[::-1], [True, False, True])
    assert model.encoded == 3  # the second time they come from the cache


def test_disk_cache_fills_on_first_use(tiny_model, tmp_path):
    samples = _samples(write_dataset(tmp_path / "data", n_images=2))
    first = LatentCache(tiny_model, "disk", tmp_path / "cache")
    first.prepare(samples, (False,))
    wanted = first.get(samples, [False, False])
    assert len(list((tmp_path / "cache").glob("*.safetensors"))) == 2
    model = _CountingVae(tiny_model)
    again = LatentCache(model, "disk", tmp_path / "cache")
    again.prepare(samples, (False,))
    assert torch.equal(again.get(samples, [False, False]), wanted) and model.encoded == 0


def test_flip_and_hue_shift_change_the_pixels(tmp_path):
    s = _samples(write_dataset(tmp_path / "data", n_images=1))[0]
    plain, flipped = pixels_for(s), pixels_for(s, flip=True)
    assert torch.equal(flipped, plain.flip(-1))
    shifted = pixels_for(s, hue_shift=8)
    assert shifted.shape == plain.shape and not torch.allclose(shifted, plain)


def test_colour_aug_encodes_every_step_with_shifted_pixels(tiny_model, dataset, tmp_path, monkeypatch):
    from lib_lora.training import latents

    shifts = []
    original = latents.pixels_for

    def spy(sample, flip=False, hue_shift=0):
        shifts.append(hue_shift)
        return original(sample, flip, hue_shift)

    monkeypatch.setattr(latents, "pixels_for", spy)
    model = _CountingVae(tiny_model)
    cfg = fast_config(dataset, tmp_path / "out")
    cfg.dataset.color_aug = True
    result = train(cfg, model)
    assert result.steps == 4 and model.encoded == 8  # no cache: every sample of every step is encoded
    assert len(shifts) == 8 and len(set(shifts)) > 1 and all(-8 <= h <= 8 for h in shifts)
