"""import and its zip reader against damaged, lying and odd uploads: skipped with a reason that reaches the
message, never a traceback, never a hang, sources never changed, nothing written outside the dataset."""
from __future__ import annotations

import os
import stat
import zipfile

import pytest

from lib_lora.cli import main
from lib_lora.dataset.importer import import_dataset
from lib_lora.dataset.safe_zip import ExtractLimits
from lib_lora.errors import ConfigError, DatasetError
from tests.fixtures.hostile import fifo, fingerprint, png_bytes, write_png

posix_only = pytest.mark.skipif(os.name != "posix", reason="FIFOs and byte file names as on POSIX")


def _zip(path, entries):
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in entries.items():
            zf.writestr(name, data)
    return path


def _corrupt_first_entry_data(path, name):
    """Flip bytes inside the compressed data of `name`: the CRC no longer matches."""
    with zipfile.ZipFile(path) as zf:
        info = zf.getinfo(name)
    raw = bytearray(path.read_bytes())
    start = info.header_offset + 30 + len(info.filename.encode()) + len(info.extra)
    for i in range(start + 10, start + 20):
        raw[i] ^= 0xFF
    path.write_bytes(bytes(raw))


def _set_declared_size(path, name, size):
    """Rewrite the central directory's uncompressed size of `name` (a zip whose sizes lie)."""
    raw = bytearray(path.read_bytes())
    with zipfile.ZipFile(path) as zf:
        info = zf.getinfo(name)
    at = raw.find(b"PK\x01\x02")
    while at != -1:
        name_len = int.from_bytes(raw[at + 28:at + 30], "little")
        if raw[at + 46:at + 46 + name_len] == info.filename.encode():
            raw[at + 24:at + 28] = size.to_bytes(4, "little")
        at = raw.find(b"PK\x01\x02", at + 4)
    path.write_bytes(bytes(raw))


def _import(tmp_path, sources, **kw):
    return import_dataset([str(s) for s in sources], tmp_path / "root", "ds", concept="c", **kw)


def test_a_bad_crc_entry_is_skipped_and_the_rest_imported(tmp_path):
    up = _zip(tmp_path / "up.zip", {"a.png": png_bytes(1), "b.png": png_bytes(2)})
    _corrupt_first_entry_data(up, "a.png")
    result = _import(tmp_path, [up])
    assert [p.name for p in result.imported] == ["b.png"]
    assert any(name == "up.zip:a.png" and "damaged" in why for name, why in result.skipped)
    assert not list((tmp_path / "root/ds").glob(".incoming-*"))          # staging removed


@pytest.mark.parametrize("declared", [10, 10_000_000])
def test_lying_sizes_are_skipped_as_damaged(tmp_path, declared):
    up = _zip(tmp_path / "up.zip", {"a.png": png_bytes(1), "b.png": png_bytes(2)})
    _set_declared_size(up, "a.png", declared)
    result = _import(tmp_path, [up])
    assert [p.name for p in result.imported] == ["b.png"]
    assert any("a.png" in name for name, _ in result.skipped)


def test_names_longer_than_the_file_system_allows_are_skipped(tmp_path):
    up = _zip(tmp_path / "up.zip", {"x" * 300 + ".png": png_bytes(1), "ok.png": png_bytes(2),
                                    "d" * 300 + "/in_long_folder.png": png_bytes(3)})
    result = _import(tmp_path, [up])
    assert [p.name for p in result.imported] == ["ok.png"]
    assert sum("longer than" in why for _, why in result.skipped) == 2


def test_legal_250_byte_names_are_imported(tmp_path):
    stem = "я" * 123                                        # 246 bytes
    up = _zip(tmp_path / "up.zip", {stem + ".png": png_bytes(1), stem + ".txt": "tag"})
    result = _import(tmp_path, [up])
    assert len(result.imported) == 1 and len(os.fsencode(result.imported[0].name)) <= 255
    assert result.imported[0].with_suffix(".txt").read_text() == "tag"


def test_the_reasons_reach_the_message_instead_of_holds_no_images(tmp_path):
    up = _zip(tmp_path / "locked.zip", {"a.png": png_bytes(1)})
    raw = bytearray(up.read_bytes())                       # mark the entry encrypted (flag bit 0)
    raw[6] |= 0x1
    raw[raw.find(b"PK\x01\x02") + 8] |= 0x1
    up.write_bytes(bytes(raw))
    with pytest.raises(DatasetError, match="encrypted"):
        _import(tmp_path, [up])
    big = _zip(tmp_path / "big.zip", {"a.png": png_bytes(1, size=64)})
    with pytest.raises(DatasetError, match="larger than"):
        _import(tmp_path, [big], limits=ExtractLimits(max_file_bytes=100))


def test_an_import_root_that_is_a_file_is_one_sentence(tmp_path, capsys):
    (tmp_path / "root").write_text("a file")
    write_png(tmp_path / "a.png")
    assert main(["import", str(tmp_path / "a.png"), "--root", str(tmp_path / "root"), "--name", "ds"]) == 2
    err = capsys.readouterr().err
    assert "root is a file" in err and err.count("\n") == 1
    assert (tmp_path / "root").read_text() == "a file"


@pytest.mark.parametrize("ext", [".png", "", ".jpg", "/etc"])
def test_caption_extensions_naming_images_or_nothing_are_refused_by_import(tmp_path, ext):
    write_png(tmp_path / "a.png")
    with pytest.raises(ConfigError, match="caption_extension"):
        _import(tmp_path, [tmp_path / "a.png"], caption_extension=ext)
    assert not (tmp_path / "root").exists()


@posix_only
@pytest.mark.timeout(60)
def test_fifos_and_devices_in_an_upload_are_skipped_without_hanging(tmp_path):
    up = tmp_path / "up"
    write_png(up / "a.png", 1)
    fifo(up / "pipe.png")
    fifo(tmp_path / "pipe.zip")
    fifo(tmp_path / "loose.png")
    (up / "zero.png").symlink_to("/dev/zero")
    before = fingerprint(tmp_path)
    result = _import(tmp_path, [up, tmp_path / "pipe.zip", tmp_path / "loose.png"])
    assert [p.name for p in result.imported] == ["a.png"]
    reasons = dict(result.skipped)
    assert "FIFO" in reasons[str(up / "pipe.png")] and "FIFO" in reasons[str(tmp_path / "loose.png")]
    assert "link" in reasons[str(up / "zero.png")]
    after = fingerprint(tmp_path)
    assert {k: v for k, v in after.items() if not k.startswith("root")} == before


@posix_only
def test_undecodable_names_are_imported_and_printed(tmp_path, capsys):
    up = tmp_path / "up"
    odd = os.fsdecode(b"caf\xe9")
    write_png(up / f"{odd}.png", 1)
    fifo(up / f"{odd}2.png")
    status = main(["import", str(up), "--root", str(tmp_path / "root"), "--name", "ds"])
    out = capsys.readouterr()
    assert status == 0, out.err
    assert "caf\\xe92.png" in out.out                      # the skipped FIFO, printable
    assert [os.fsencode(p.name) for p in (tmp_path / "root/ds/train/10_ds").iterdir()] == [b"caf\xe9.png"]


def test_a_zip_with_too_many_entries_is_refused_from_its_end_record(tmp_path, monkeypatch):
    up = _zip(tmp_path / "many.zip", {f"{i}.png": b"" for i in range(30)})
    import zipfile as zipfile_module
    opened = []
    real = zipfile_module.ZipFile
    monkeypatch.setattr(zipfile_module, "ZipFile", lambda *a, **k: opened.append(a) or real(*a, **k))
    with pytest.raises(DatasetError, match="holds 30 files, more than 10"):
        _import(tmp_path, [up], limits=ExtractLimits(max_files=10))
    assert opened == []                 # refused before zipfile read the directory of every entry
