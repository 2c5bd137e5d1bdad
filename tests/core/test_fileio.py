"""Atomic writes: the target is either the old file or the complete new one, never a fragment."""
from __future__ import annotations

import pytest

from lib_lora.fileio import write_text, write_with


def test_failed_writer_leaves_old_file_and_no_temp(tmp_path):
    target = tmp_path / "папка" / "caption.txt"
    write_text(target, "old, tags")

    def broken(tmp):
        tmp.write_text("half")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        write_with(target, broken)
    assert target.read_text(encoding="utf-8") == "old, tags"
    assert [p.name for p in target.parent.iterdir()] == ["caption.txt"]


def test_text_is_written_byte_exact(tmp_path):
    target = tmp_path / "a b" / "c.txt"
    write_text(target, "x,\ny\r\n")
    assert target.read_bytes() == b"x,\ny\r\n"


def test_written_files_get_normal_permissions(tmp_path):
    import os
    import stat

    target = write_text(tmp_path / "lora.txt", "x")
    if os.name == "posix":
        mask = os.umask(0)
        os.umask(mask)
        assert stat.S_IMODE(target.stat().st_mode) == 0o666 & ~mask
