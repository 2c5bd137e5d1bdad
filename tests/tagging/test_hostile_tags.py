"""Tag edits, gallery captions and undo never write over images or outside the folder: hostile caption
extensions, captions that are links or FIFOs, and undo snapshots crafted to leave the dataset."""
from __future__ import annotations

import base64
import json
import os

import pytest

from lib_lora.cli import main
from lib_lora.errors import ConfigError, DatasetError, UnsafeWriteError
from lib_lora.tagging.edits import add_trigger, apply_bulk_edit, edit_caption, remove_tags
from lib_lora.tagging.snapshot import describe_snapshot, snapshot_path, undo_last
from tests.fixtures.hostile import fifo, fingerprint, write_png

posix_only = pytest.mark.skipif(os.name != "posix", reason="symlinks, FIFOs and byte names as on POSIX")


@pytest.fixture
def world(tmp_path):
    """tmp/ds (the folder edited) beside tmp/outside (must never change)."""
    ds = tmp_path / "ds"
    for i in range(3):
        write_png(ds / "10_c" / f"{i}.png", seed=i)
        (ds / "10_c" / f"{i}.txt").write_text(f"solo, tag{i}", encoding="utf-8")
    (tmp_path / "outside").mkdir()
    (tmp_path / "outside/secret.txt").write_text("keep me")
    (tmp_path / "outside/photo.png").write_bytes(b"not ours")
    return tmp_path


@pytest.mark.parametrize("ext", [".png", "png", ".PNG", "", ".", ".safetensors", "/../x"])
def test_bulk_edits_refuse_caption_extensions_naming_images(world, ext, capsys):
    before = fingerprint(world)
    with pytest.raises(ConfigError, match="caption_extension"):
        apply_bulk_edit(world / "ds", add_trigger("zzz"), "trigger", ext)
    assert main(["tags", str(world / "ds"), "add-trigger", "zzz", "--caption-extension", ext]) == 2
    err = capsys.readouterr().err
    assert "caption_extension" in err and err.count("\n") == 1
    assert fingerprint(world) == before


@pytest.mark.parametrize("ext", [".png", ""])
def test_gallery_caption_edits_refuse_them_too(world, ext):
    before = fingerprint(world)
    with pytest.raises(ConfigError):
        edit_caption(world / "ds/10_c/0.png", "new, tags", ext)
    with pytest.raises(DatasetError, match="does not exist"):
        edit_caption(world / "ds/10_c/missing.png", "new, tags")
    assert fingerprint(world) == before


@posix_only
def test_a_caption_that_links_outside_is_not_written_through(world):
    caption = world / "ds/10_c/0.txt"
    caption.unlink()
    caption.symlink_to(world / "outside/secret.txt")
    before = fingerprint(world / "outside")
    with pytest.raises(UnsafeWriteError):
        apply_bulk_edit(world / "ds", add_trigger("zzz"), "trigger")
    with pytest.raises(UnsafeWriteError):
        edit_caption(world / "ds/10_c/0.png", "x")
    assert fingerprint(world / "outside") == before


@posix_only
@pytest.mark.timeout(60)
def test_fifo_captions_are_left_alone_and_nothing_hangs(world):
    (world / "ds/10_c/1.txt").unlink()
    fifo(world / "ds/10_c/1.txt")
    result = apply_bulk_edit(world / "ds", add_trigger("zzz"), "trigger")
    assert result.changed == 2
    assert (world / "ds/10_c/0.txt").read_text() == "zzz, solo, tag0"
    assert undo_last(world / "ds") == 2 and (world / "ds/10_c/0.txt").read_text() == "solo, tag0"


@posix_only
def test_undo_round_trips_undecodable_names(world):
    odd = os.fsdecode(b"caf\xe9")
    write_png(world / "ds/10_c" / f"{odd}.png", seed=9)
    (world / "ds/10_c" / f"{odd}.txt").write_bytes("solo, é".encode("cp1252"))
    before = fingerprint(world)
    assert apply_bulk_edit(world / "ds", remove_tags(["solo"]), "remove").changed == 4
    assert undo_last(world / "ds") == 4
    after = fingerprint(world)
    assert after.pop("ds/.lib_lora") == "dir" and after == before      # the emptied snapshot folder stays


def _plant(ds, files, action="remove"):
    path = snapshot_path(ds)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"action": action, "time": "now", "files": files}), encoding="utf-8")


def _b64(text):
    return base64.b64encode(text.encode()).decode()


HOSTILE_ENTRIES = [
    {"../outside/secret.txt": None},                              # delete outside
    {"../outside/secret.txt": _b64("pwned")},                     # write outside
    {"10_c/../../outside/new.txt": _b64("x")},
    {"/tmp/abs.txt": _b64("x")},                                  # absolute
    {"C:\\Windows\\x.txt": _b64("x")},                            # drive
    {"\\\\server\\share\\x.txt": _b64("x")},                      # UNC
    {"10_c/0.png": _b64("text over an image")},                   # an image
    {"10_c/0.png": None},                                         # delete an image
    {"10_c/model.safetensors": None},
    {".lib_lora/caption_undo.json": _b64("{}")},                  # the snapshot itself
    {"10_c/0.txt": "not base64 !!"},
    {"10_c/0.txt": 12},
    {"": _b64("x")},
    {"10_c/0.txt\x00.png": _b64("x")},
    {"10_c/0.txt": _b64("fine"), "../outside/secret.txt": None},  # one bad entry: nothing at all is restored
]


@pytest.mark.parametrize("files", HOSTILE_ENTRIES)
def test_undo_refuses_snapshots_that_leave_the_folder_or_touch_images(world, files):
    ds = world / "ds"
    _plant(ds, files)
    before = fingerprint(world)
    with pytest.raises(DatasetError, match="undo snapshot"):
        undo_last(ds)
    assert fingerprint(world) == before


@posix_only
def test_undo_refuses_a_link_inside_the_folder_that_leads_out(world):
    ds = world / "ds"
    (ds / "escape").symlink_to(world / "outside")
    _plant(ds, {"escape/secret.txt": _b64("pwned")})
    before = fingerprint(world)
    with pytest.raises(DatasetError, match="leads out"):
        undo_last(ds)
    assert fingerprint(world) == before


@pytest.mark.parametrize("content", ["", "[]", "null", '{"files": []}', '{"files": {"a.txt": null}', "\xff\xfe",
                                     '{"files": ' * 100_000])
def test_damaged_snapshots_are_one_sentence(world, content):
    ds = world / "ds"
    snapshot_path(ds).parent.mkdir(parents=True)
    snapshot_path(ds).write_bytes(content.encode("utf-8", "surrogateescape"))
    before = fingerprint(world)
    with pytest.raises(DatasetError, match="damaged"):
        undo_last(ds)
    assert describe_snapshot(ds).startswith("a damaged")
    assert fingerprint(world) == before


@pytest.mark.parametrize("ext", [".png", ""])
def test_a_tagging_run_refuses_an_image_caption_extension_before_loading_a_model(world, ext):
    from lib_lora.config import TaggingConfig
    from lib_lora.tagging.run import run_tagging
    before = fingerprint(world)
    with pytest.raises(ConfigError, match="caption_extension"):      # not a download or model error
        run_tagging(world / "ds", TaggingConfig(models=[str(world / "no_such_model")], caption_extension=ext))
    assert fingerprint(world) == before


@posix_only
@pytest.mark.timeout(120)
def test_a_tagging_run_reports_fifos_and_devices_and_never_reads_them(world):
    from lib_lora.config import TaggingConfig
    from lib_lora.tagging.run import run_tagging
    from tests.fixtures.data.wd14_model import build_model
    model = str(build_model(world / "model"))
    fifo(world / "ds/10_c/pipe.png")
    (world / "ds/10_c/zero.png").symlink_to("/dev/zero")
    result = run_tagging(world / "ds", TaggingConfig(models=[model], write_mode="overwrite"))
    reasons = {p.name: why for p, why in result.failed}
    assert "FIFO" in reasons["pipe.png"] and "device" in reasons["zero.png"]
    assert result.written == 3 and not (world / "ds/10_c/pipe.txt").exists()
    listed = run_tagging([world / "ds/10_c/pipe.png", world / "ds/10_c/0.png"],
                         TaggingConfig(models=[model], write_mode="overwrite"))
    assert [p.name for p, _ in listed.failed] == ["pipe.png"] and listed.written == 1
