"""prep never writes onto its source, whatever DST, links or caption extension a careless user gives;
special files are skipped, odd names work, and a bad DST is one sentence (exit 2)."""
from __future__ import annotations

import os

import pytest

from lib_lora.cli import main
from lib_lora.config import PrepConfig
from lib_lora.dataset.prep import run_prep
from lib_lora.errors import ConfigError, DatasetError, UnsafeWriteError, WriteError
from tests.fixtures.hostile import fifo, fingerprint, small_filesystem, write_png

posix_only = pytest.mark.skipif(os.name != "posix", reason="symlinks, FIFOs and byte file names as on POSIX")


def _dataset(root, n=2):
    for i in range(n):
        write_png(root / "10_c" / f"img{i}.png", seed=i, size=40)
        (root / "10_c" / f"img{i}.txt").write_text(f"tag{i}, solo", encoding="utf-8")
    return root


def _cli(argv, capsys):
    status = main([str(a) for a in argv])
    return status, capsys.readouterr()


def test_prep_into_the_parent_of_the_source_is_refused(tmp_path, capsys):
    """`prep P/ds P` where P/ds/ds/10_c exists wrote over P/ds/10_c/a.png."""
    src = _dataset(tmp_path / "ds")
    _dataset(src / "ds", 1)
    before = fingerprint(tmp_path)
    status, out = _cli(["prep", src, tmp_path, "--no-dedupe"], capsys)
    assert status == 2 and "holds the source" in out.err and out.err.count("\n") == 1
    assert fingerprint(tmp_path) == before


@pytest.mark.parametrize("dst", ["ds", "ds/10_c", "ds/out", ".", "ds/.."])
def test_every_destination_overlapping_the_source_is_refused(tmp_path, dst):
    src = _dataset(tmp_path / "ds")
    before = fingerprint(tmp_path)
    with pytest.raises(DatasetError):
        run_prep(src, tmp_path / dst, PrepConfig(dedupe=False))
    assert fingerprint(tmp_path) == before


@posix_only
def test_a_destination_holding_a_link_into_the_source_writes_nothing_there(tmp_path):
    src = _dataset(tmp_path / "ds")
    dst = tmp_path / "out"
    dst.mkdir()
    (dst / "10_c").symlink_to(src / "10_c")          # the copies would land on the originals
    before = fingerprint(src)
    with pytest.raises(UnsafeWriteError, match="original"):
        run_prep(src, dst, PrepConfig(dedupe=False))
    assert fingerprint(src) == before


@posix_only
def test_a_destination_that_is_a_link_to_the_source_is_refused(tmp_path):
    src = _dataset(tmp_path / "ds")
    (tmp_path / "out").symlink_to(src)
    before = fingerprint(src)
    with pytest.raises(DatasetError):
        run_prep(src, tmp_path / "out", PrepConfig(dedupe=False))
    assert fingerprint(src) == before


@pytest.mark.parametrize("ext", [".png", "png", ".PNG", ".jpg", ".webp", "", " ", ".", "..", "/x", ".a/b",
                                 ".safetensors", ".txt\x00"])
@pytest.mark.parametrize("in_place", [False, True])
def test_caption_extensions_naming_images_or_nothing_are_refused(tmp_path, ext, in_place):
    src = _dataset(tmp_path / "ds")
    before = fingerprint(tmp_path)
    with pytest.raises(ConfigError, match="caption_extension"):
        run_prep(src, None if in_place else tmp_path / "out", PrepConfig(caption_extension=ext, in_place=in_place,
                                                                         dedupe=False))
    assert fingerprint(tmp_path) == before


def test_caption_extension_png_from_the_cli_is_exit_2(tmp_path, capsys):
    src = _dataset(tmp_path / "ds")
    before = fingerprint(src)
    status, out = _cli(["prep", src, "--in-place", "--caption-extension", ".png"], capsys)
    assert status == 2 and "caption_extension" in out.err and fingerprint(src) == before


def test_a_destination_that_is_a_file_is_one_sentence(tmp_path, capsys):
    src = _dataset(tmp_path / "ds")
    (tmp_path / "out").write_text("a file")
    status, out = _cli(["prep", src, tmp_path / "out"], capsys)
    assert status == 2 and "is a file" in out.err and (tmp_path / "out").read_text() == "a file"


@posix_only
@pytest.mark.timeout(60)
def test_special_files_are_skipped_with_a_reason_and_nothing_hangs(tmp_path):
    src = _dataset(tmp_path / "ds")
    fifo(src / "10_c/pipe.png")
    (src / "10_c/zero.png").symlink_to("/dev/zero")
    fifo(src / "10_c/img0_copy.txt")
    result = run_prep(src, tmp_path / "out", PrepConfig(dedupe=False))
    reasons = {p.name: why for p, why in result.skipped}
    assert "FIFO" in reasons["pipe.png"] and "device" in reasons["zero.png"]
    assert sorted(p.name for p in (tmp_path / "out/10_c").iterdir()) == ["img0.png", "img0.txt", "img1.png",
                                                                          "img1.txt"]


@posix_only
def test_long_and_undecodable_names_are_copied(tmp_path, capsys):
    src = _dataset(tmp_path / "ds", 1)
    long_stem = "я" * 123                                   # 246 bytes + '.png' = 250
    write_png(src / "10_c" / f"{long_stem}.png", seed=5, size=40)
    odd = os.fsdecode(b"caf\xe9")
    write_png(src / "10_c" / f"{odd}.png", seed=6, size=40)
    (src / "10_c" / f"{odd}.txt").write_bytes(b"caf\xe9 tag")
    status, out = _cli(["prep", src, tmp_path / "out", "--no-dedupe", "--no-upscale-small"], capsys)
    assert status == 0, out.err
    names = {os.fsencode(p.name) for p in (tmp_path / "out/10_c").iterdir()}
    assert {f"{long_stem}.png".encode(), b"caf\xe9.png", b"caf\xe9.txt"} <= names


def test_a_full_destination_stops_with_one_sentence_and_keeps_the_source(tmp_path):
    src = _dataset(tmp_path / "ds", 3)
    for i in range(3):
        write_png(src / "10_c" / f"big{i}.png", seed=10 + i, size=200)
    before = fingerprint(src)
    with small_filesystem(tmp_path / "small", "48k") as small:
        with pytest.raises(WriteError, match="disk is full"):
            run_prep(src, small / "out", PrepConfig(dedupe=False, upscale_small=False))
        assert not [p for p in small.rglob("*") if p.name.endswith(".tmp")]
    assert fingerprint(src) == before


def test_a_read_only_destination_is_one_sentence(tmp_path, capsys):
    src = _dataset(tmp_path / "ds")
    with small_filesystem(tmp_path / "ro", read_only=True) as ro:
        status, out = _cli(["prep", src, ro / "out"], capsys)
    assert status == 2 and "read-only" in out.err and out.err.count("\n") == 1


@posix_only
def test_in_place_never_follows_a_link_out_of_the_folder(tmp_path):
    src = _dataset(tmp_path / "ds", 1)
    write_png(tmp_path / "elsewhere" / "big.png", seed=3, size=200)
    (src / "10_c/linked.png").symlink_to(tmp_path / "elsewhere/big.png")
    before = fingerprint(tmp_path / "elsewhere")
    result = run_prep(src, None, PrepConfig(in_place=True, dedupe=False, resolution=64, crop="centre"))
    assert [(p.name, "outside" in why) for p, why in result.skipped] == [("linked.png", True)]
    assert fingerprint(tmp_path / "elsewhere") == before and (src / "10_c/linked.png").is_symlink()
