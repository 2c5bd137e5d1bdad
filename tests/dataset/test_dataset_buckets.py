from __future__ import annotations

from lib_lora.dataset.buckets import assign_bucket, crop_offset, make_buckets, resize_and_crop_to_bucket
from tests.fixtures.data.datagen import noise_image


def test_buckets_keep_area_and_step():
    buckets = make_buckets(512, 256, 1024, 64)
    assert (512, 512) in buckets and (256, 1024) in buckets and (1024, 256) in buckets
    for w, h in buckets:
        assert w % 64 == 0 and h % 64 == 0 and 256 <= min(w, h) and max(w, h) <= 1024
        assert w * h <= 512 * 512
    assert buckets == tuple(sorted(buckets, key=lambda b: b[0] / b[1]))


def test_assign_bucket_nearest_aspect():
    assert assign_bucket(1000, 1000) == (512, 512)
    assert assign_bucket(768, 512) == (640, 384)   # nearest to 1.5 among equal-area buckets
    w, h = assign_bucket(300, 1200)
    assert w < h and h <= 1024
    assert assign_bucket(1024, 1024, resolution=1024, max_reso=2048) == (1024, 1024)


def test_no_upscale_uses_own_size():
    assert assign_bucket(300, 200, no_upscale=True) == (256, 192)
    w, h = assign_bucket(4000, 3000, no_upscale=True)
    assert w * h <= 512 * 512 and w % 64 == 0 and h % 64 == 0


def test_resize_and_crop_exact_size_centre():
    img = noise_image(300, 200)
    out = resize_and_crop_to_bucket(img, (256, 256))
    assert out.size == (256, 256)
    assert crop_offset(300, 200, (256, 256)) == ((384 - 256) // 2, 0)
    assert resize_and_crop_to_bucket(noise_image(576, 384), (576, 384)).size == (576, 384)
