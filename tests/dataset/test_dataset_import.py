from __future__ import annotations

import io
import os
import stat
import zipfile

import pytest

from lib_lora.dataset.importer import import_dataset
from lib_lora.dataset.safe_zip import ExtractLimits, safe_member_path
from lib_lora.dataset.scan import scan_dataset
from lib_lora.errors import DatasetError
from tests.fixtures.data.datagen import make_dataset, noise_image, tree_hash


def _png(seed: int) -> bytes:
    buf = io.BytesIO()
    noise_image(32, 32, seed=seed).save(buf, "PNG")
    return buf.getvalue()


def _malicious_zip(path):
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("5_alice/a.png", _png(1))
        zf.writestr("5_alice/a.txt", "alice, 1girl")
        zf.writestr("loose.png", _png(2))
        zf.writestr("../escape.png", _png(3))
        zf.writestr("/abs.png", _png(4))
        zf.writestr("sub/../../up.png", _png(5))
        zf.writestr("C:/win.png", _png(6))
        link = zipfile.ZipInfo("link.png")
        link.external_attr = (stat.S_IFLNK | 0o777) << 16
        zf.writestr(link, "/etc/passwd")
        zf.writestr("readme.exe", b"MZ")
    return path


def test_zip_extracted_safely_into_concept_layout(tmp_path):
    upload = _malicious_zip(tmp_path / "up.zip")
    before = tree_hash(tmp_path)
    result = import_dataset([upload], tmp_path / "root", "My set", concept="bob", repeats=7)
    train = tmp_path / "root/My set/train"
    assert sorted(p.relative_to(train).as_posix() for p in result.imported) == ["5_alice/a.png", "7_bob/loose.png"]
    assert (train / "5_alice/a.txt").read_text(encoding="utf-8") == "alice, 1girl"
    reasons = dict(result.skipped)
    assert "unsafe path" in reasons["up.zip:../escape.png"] and "unsafe path" in reasons["up.zip:/abs.png"]
    assert "unsafe path" in reasons["up.zip:sub/../../up.png"] and "link" in reasons["up.zip:link.png"]
    assert "unsafe path" in reasons["up.zip:C:/win.png"]
    assert not (tmp_path / "escape.png").exists() and not (tmp_path / "root/escape.png").exists()
    assert [p.name for p in (tmp_path / "root/My set").iterdir()] == ["train"]   # staging removed
    assert {c.name for c in scan_dataset(train).concepts} == {"alice", "bob"}
    assert {k: v for k, v in tree_hash(tmp_path).items() if not k.startswith("root")} == before


def test_folders_files_links_and_name_collisions(tmp_path):
    src = make_dataset(tmp_path / "src", {"3_x": 2}, size=(32, 32))
    (tmp_path / "src/3_x/link.png").symlink_to(tmp_path / "src/3_x/img_000.png")
    other = make_dataset(tmp_path / "other", {"plain": 1}, size=(32, 32))
    before = tree_hash(tmp_path / "src")
    result = import_dataset([src, other / "plain/img_000.png", other / "plain/img_000.txt"], tmp_path / "root",
                            "Набор", concept="персонаж", repeats=4, is_reg=False)
    names = sorted(p.relative_to(result.train_dir).as_posix() for p in result.imported)
    assert names == ["3_x/img_000.png", "3_x/img_001.png", "4_персонаж/img_000.png"]
    assert (result.train_dir / "4_персонаж/img_000.txt").is_file()
    assert any("link" in why for _, why in result.skipped) and tree_hash(tmp_path / "src") == before
    again = import_dataset([other / "plain/img_000.png"], tmp_path / "root", "Набор", concept="персонаж", repeats=4)
    assert again.imported[0].name == "img_000_1.png"
    reg = import_dataset([other], tmp_path / "root", "Набор", concept="woman", repeats=1, is_reg=True)
    assert reg.train_dir.name == "reg" and reg.imported[0].parent.name == "1_woman"


def test_limits_and_bad_inputs(tmp_path):
    upload = _malicious_zip(tmp_path / "up.zip")
    with pytest.raises(DatasetError, match="more data than allowed"):
        import_dataset([upload], tmp_path / "root", "d", limits=ExtractLimits(max_total_bytes=100))
    with pytest.raises(DatasetError, match="more than 2"):
        import_dataset([upload], tmp_path / "root", "d", limits=ExtractLimits(max_files=2))
    (tmp_path / "bad.zip").write_bytes(b"PK not a zip")
    with pytest.raises(DatasetError, match="Not a readable zip"):
        import_dataset([tmp_path / "bad.zip"], tmp_path / "root", "d")
    with pytest.raises(DatasetError, match="no images"):
        import_dataset([tmp_path / "up.zip"], tmp_path / "root", "d2", limits=ExtractLimits(max_file_bytes=10))
    assert not any(p.name.startswith(".incoming") for p in (tmp_path / "root/d").iterdir())


def test_safe_member_path():
    assert safe_member_path("a/b.png").parts == ("a", "b.png")
    for bad in ("../x", "/x", "a/../../x", "C:/x", "a\\..\\..\\x", ""):
        assert safe_member_path(bad) is None
