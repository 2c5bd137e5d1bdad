"""The write guard, the atomic writer and the run lock against hostile paths: links out, '..', originals,
special files, over-long and undecodable names, full and read-only file systems, a second run."""
from __future__ import annotations

import errno
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from lib_lora import fileio
from lib_lora.errors import LoraError, PathNotAllowedError, RunLockedError, UnsafeWriteError, WriteError
from lib_lora.safe_paths import WriteGuard, check_write, confine, guarded, is_within, remove, shown
from lib_lora.training.run_lock import lock_path, output_lock
from tests.fixtures.hostile import fifo, fingerprint, small_filesystem

posix_only = pytest.mark.skipif(os.name != "posix", reason="symlinks and FIFOs as on POSIX")


@pytest.fixture
def tree(tmp_path):
    (tmp_path / "src/10_c").mkdir(parents=True)
    (tmp_path / "src/10_c/a.png").write_bytes(b"original image")
    (tmp_path / "out").mkdir()
    (tmp_path / "elsewhere").mkdir()
    return tmp_path


def _guard(tree):
    return WriteGuard([tree / "out"], protected=[tree / "src/10_c/a.png"], protected_trees=[tree / "src"],
                      purpose="test")


@posix_only
@pytest.mark.parametrize("rel", [
    "link_to_src/10_c/a.png",      # a folder link into the originals
    "link_to_src/new.txt",         # even a new file inside the protected tree
    "file_link",                   # a file link onto an original
    "link_out/x.txt",              # a folder link leading outside the output folder
    "../elsewhere/x.txt",          # '..' out
    "sub/../../src/10_c/a.png",    # '..' back into the originals
])
def test_guard_refuses_every_way_out_and_onto_originals(tree, rel):
    (tree / "out/link_to_src").symlink_to(tree / "src")
    (tree / "out/file_link").symlink_to(tree / "src/10_c/a.png")
    (tree / "out/link_out").symlink_to(tree / "elsewhere")
    before = fingerprint(tree)
    with guarded(_guard(tree)):
        with pytest.raises(UnsafeWriteError):
            fileio.write_text(tree / "out" / rel, "text over an original")
        with pytest.raises(UnsafeWriteError):
            remove(tree / "out" / rel)
    assert fingerprint(tree) == before


def test_guard_allows_new_files_inside_and_absolute_source_paths_are_refused(tree):
    with guarded(_guard(tree)):
        fileio.write_text(tree / "out/new/deep/c.txt", "ok")
        with pytest.raises(UnsafeWriteError, match="original"):
            fileio.write_bytes(tree / "src/10_c/a.png", b"x")
        with pytest.raises(UnsafeWriteError, match="outside"):
            fileio.write_bytes(tree / "elsewhere/a.txt", b"x")
    assert (tree / "out/new/deep/c.txt").read_text() == "ok"
    assert (tree / "src/10_c/a.png").read_bytes() == b"original image"


def test_guards_nest_and_end_with_their_block(tree):
    inner = WriteGuard([tree / "out/inner"], purpose="inner")
    with guarded(_guard(tree)), guarded(inner):
        with pytest.raises(UnsafeWriteError):
            fileio.write_text(tree / "out/not_inner.txt", "x")      # the inner guard says no
    fileio.write_text(tree / "elsewhere/free.txt", "no guard active")
    assert (tree / "elsewhere/free.txt").exists()


@posix_only
def test_special_files_are_never_written_over_and_folders_are_not_replaced(tree):
    pipe = fifo(tree / "out/pipe.txt")
    (tree / "out/folder.txt").mkdir()
    with pytest.raises(UnsafeWriteError, match="FIFO"):
        fileio.write_text(pipe, "would block or destroy the pipe")
    with pytest.raises(UnsafeWriteError, match="folder is in the way"):
        fileio.write_text(tree / "out/folder.txt", "x")
    assert not remove(tree / "out/folder.txt") and (tree / "out/folder.txt").is_dir()
    with pytest.raises(UnsafeWriteError):
        check_write("/dev/null")


@posix_only
def test_confine_follows_links_out_of_an_allowed_root(tree):
    (tree / "out/escape").symlink_to(tree / "elsewhere")
    assert confine(tree / "out/sub/x", [tree / "out"]) == (tree / "out/sub/x").resolve()
    with pytest.raises(PathNotAllowedError, match="outside the folders"):
        confine(tree / "out/escape/x", [tree / "out"], "dataset folder")
    with pytest.raises(PathNotAllowedError):
        confine(tree / "out/../elsewhere", [tree / "out"])
    with pytest.raises(PathNotAllowedError):
        confine("/etc/passwd", [])
    assert is_within(tree / "out", tree / "out") and not is_within(tree / "outside", tree / "out")


@pytest.mark.parametrize("stem", ["b" * 250, "я" * 124 + "b", "图" * 82 + "bb"])
def test_names_the_file_system_accepts_can_be_written_atomically(tmp_path, stem):
    """250-byte names (Latin, Cyrillic, CJK) are legal: the temp name must stay within 255 bytes."""
    assert 248 <= len(os.fsencode(stem)) <= 250
    target = fileio.write_text(tmp_path / stem, "caption")
    assert target.read_text() == "caption"
    assert [p.name for p in tmp_path.iterdir()] == [stem]      # no temp file left behind


def test_a_name_too_long_is_one_sentence(tmp_path):
    with pytest.raises(WriteError, match="too long") as err:
        fileio.write_text(tmp_path / ("n" * 300), "x")
    assert err.value.errno == errno.ENAMETOOLONG and isinstance(err.value, OSError)
    assert list(tmp_path.iterdir()) == []


def test_an_output_folder_that_is_a_file_is_one_sentence(tmp_path):
    (tmp_path / "out").write_text("a file")
    with pytest.raises(WriteError, match="file is in the way|not a folder") as err:
        fileio.write_text(tmp_path / "out/x.safetensors", "x")
    assert "\n" not in str(err.value) and str(tmp_path / "out") in str(err.value)
    assert (tmp_path / "out").read_text() == "a file"


@posix_only
def test_undecodable_file_names_are_written_and_shown(tmp_path):
    name = os.fsdecode(b"caf\xe9.txt")              # Latin-1 bytes: not UTF-8
    target = fileio.write_text(tmp_path / name, "x")
    assert os.fsencode(target.name) == b"caf\xe9.txt"
    assert shown(target).endswith("caf\\xe9.txt")
    shown(target).encode("utf-8")                      # printable on any console


def test_a_full_disk_is_one_sentence_and_leaves_no_partial_file(tmp_path):
    with small_filesystem(tmp_path / "small", "64k") as small:
        with pytest.raises(WriteError, match="disk is full") as err:
            fileio.write_bytes(small / "lora.safetensors", b"\0" * (1 << 20))
        assert err.value.errno == errno.ENOSPC
        assert list(small.iterdir()) == []


def test_a_read_only_folder_is_one_sentence(tmp_path):
    with small_filesystem(tmp_path / "ro", read_only=True) as ro:
        with pytest.raises(WriteError, match="read-only") as err:
            fileio.write_text(ro / "x.txt", "x")
        assert "Choose an output folder" in str(err.value)


# --- one run per output name -------------------------------------------------------------------

_HOLDER = textwrap.dedent("""
    import sys, time
    from lib_lora.training.run_lock import output_lock
    with output_lock(sys.argv[1], "mylora"):
        print("held", flush=True)
        if sys.argv[2] == "crash":
            import os; os._exit(3)         # dies holding the lock, no cleanup
        sys.stdin.readline()
""")


def _holder(out: Path, mode: str) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-c", _HOLDER, str(out), mode], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True, cwd=Path(__file__).resolve().parents[2])
    assert proc.stdout.readline().strip() == "held"
    return proc


def test_a_second_run_on_the_same_name_is_refused_with_its_holder(tmp_path):
    proc = _holder(tmp_path, "wait")
    try:
        with pytest.raises(RunLockedError) as err:
            with output_lock(tmp_path, "mylora"):
                pass
        assert f"pid {proc.pid}" in str(err.value) and "started" in str(err.value)
        with output_lock(tmp_path, "other_name"):       # another name in the same folder is free
            pass
    finally:
        proc.communicate("\n", timeout=60)
    with output_lock(tmp_path, "mylora"):               # released when the holder finished
        pass


def test_a_crashed_run_does_not_leave_the_name_locked(tmp_path):
    proc = _holder(tmp_path, "crash")
    proc.wait(timeout=60)
    assert proc.returncode == 3 and lock_path(tmp_path, "mylora").exists()
    with output_lock(tmp_path, "mylora") as path:
        assert str(os.getpid()) in path.read_text()


def test_two_runs_in_one_process_exclude_each_other(tmp_path):
    with output_lock(tmp_path, "mylora"):
        with pytest.raises(RunLockedError, match=f"pid {os.getpid()}"):
            with output_lock(tmp_path, "mylora"):
                pass
    with output_lock(tmp_path, "mylora", enabled=False) as nothing:   # ranks other than the main one
        assert nothing is None


def test_an_unwritable_output_folder_for_the_lock_is_our_error(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(LoraError):
        with output_lock(tmp_path / "file", "mylora"):
            pass


@pytest.mark.parametrize("name", ["a\x00b.txt", "\x00", "dir\x00/x.txt"])
def test_a_nul_in_a_path_is_our_error_not_a_value_error(tmp_path, name):
    with pytest.raises(UnsafeWriteError, match="NUL"):
        fileio.write_text(str(tmp_path) + "/" + name, "x")
    with pytest.raises(PathNotAllowedError, match="NUL"):
        confine(str(tmp_path) + "/" + name, [tmp_path], "dataset folder")
    with pytest.raises(LoraError):
        with output_lock(tmp_path, name):
            pass
    assert list(tmp_path.iterdir()) == []
