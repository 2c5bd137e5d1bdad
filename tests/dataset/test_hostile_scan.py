"""Scanning and planning a hostile dataset: absurd repeat counts and epochs are refused before anything is
built, special files and oversized captions become findings, and nothing waits forever."""
from __future__ import annotations

import os
import tracemalloc

import pytest

from lib_lora.cli import main
from lib_lora.config import TrainConfig
from lib_lora.dataset.scan import scan_dataset
from lib_lora.errors import ConfigError, DatasetError
from lib_lora.training.plan import make_plan
from tests.fixtures.hostile import fifo, fingerprint, write_png

posix_only = pytest.mark.skipif(os.name != "posix", reason="FIFOs as on POSIX")


def _config(train_dir, epochs=10):
    cfg = TrainConfig()
    cfg.dataset.train_dir = str(train_dir)
    cfg.training.epochs = epochs
    return cfg


@pytest.mark.parametrize("folder", ["99999999999_x", "10001_x", "9" * 250 + "_x"])
def test_absurd_repeats_are_refused_before_anything_is_allocated(tmp_path, folder):
    write_png(tmp_path / "ds" / folder / "a.png")
    tracemalloc.start()
    try:
        with pytest.raises(DatasetError, match="repeats") as err:
            make_plan(_config(tmp_path / "ds"))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 50 << 20 and "10_<name>" in str(err.value)


def test_absurd_epochs_times_images_are_refused_before_the_batches(tmp_path):
    for i in range(3):
        write_png(tmp_path / "ds" / "10000_x" / f"{i}.png", seed=i)
    with pytest.raises(DatasetError, match="steps|draw"):
        make_plan(_config(tmp_path / "ds", epochs=1_000_000))


def test_a_sensible_plan_still_plans(tmp_path):
    write_png(tmp_path / "ds" / "10_x" / "a.png")
    plan = make_plan(_config(tmp_path / "ds", epochs=2))
    assert plan.total_steps == 2 * 10 // plan.batch_size


@posix_only
@pytest.mark.timeout(60)
def test_fifos_and_devices_in_a_concept_folder_are_findings_not_hangs(tmp_path, capsys):
    ds = tmp_path / "ds"
    write_png(ds / "10_x" / "a.png")
    fifo(ds / "10_x" / "pipe.png")
    (ds / "10_x" / "zero.png").symlink_to("/dev/zero")
    fifo(ds / "10_x" / "a.txt")                              # the caption of a.png is a FIFO
    dataset = scan_dataset(ds)
    assert [item.path.name for item in dataset.items] == ["a.png"]
    kinds = {issue.path.name: issue.kind for issue in dataset.issues}
    assert kinds["pipe.png"] == kinds["zero.png"] == "special_file"
    assert main(["check", str(ds)]) == 0
    assert "FIFO" in capsys.readouterr().out


def test_an_oversized_caption_is_a_finding_not_a_memory_hog(tmp_path):
    ds = tmp_path / "ds"
    write_png(ds / "10_x" / "a.png")
    with open(ds / "10_x" / "a.txt", "wb") as f:
        f.truncate(64 << 20)                                 # 64 MiB of zeros, sparse on disk
    dataset = scan_dataset(ds)
    assert dataset.items[0].caption == "" and any("larger than" in issue.what for issue in dataset.issues)


@pytest.mark.parametrize("ext", ["", ".png", ".JPG", "..", "a b"])
def test_scan_and_check_refuse_a_caption_extension_that_names_images(tmp_path, ext, capsys):
    write_png(tmp_path / "ds" / "10_x" / "a.png")
    before = fingerprint(tmp_path)
    with pytest.raises(ConfigError, match="caption_extension"):
        scan_dataset(tmp_path / "ds", ext)
    assert main(["check", str(tmp_path / "ds"), "--caption-extension", ext]) == 2
    assert "caption_extension" in capsys.readouterr().err
    assert fingerprint(tmp_path) == before


def test_a_dataset_root_that_is_a_file_is_one_sentence(tmp_path, capsys):
    (tmp_path / "ds").write_text("x")
    assert main(["check", str(tmp_path / "ds")]) == 2
    err = capsys.readouterr().err
    assert "is a file" in err and err.count("\n") == 1



@pytest.mark.skipif(os.name != "posix", reason="byte file names as on POSIX")
@pytest.mark.parametrize("as_json", [False, True])
def test_check_prints_undecodable_names_on_a_strict_utf8_console(tmp_path, as_json):
    import json
    import subprocess
    import sys
    from pathlib import Path
    ds = tmp_path / "ds"
    write_png(ds / "10_x" / os.fsdecode(b"caf\xe9.png"))
    write_png(ds / "10_x" / "ok.png", seed=1)
    env = dict(os.environ, PYTHONIOENCODING="utf-8:strict")
    run = subprocess.run([sys.executable, "-m", "lib_lora", "check", str(ds)] + (["--json"] if as_json else []),
                         capture_output=True, env=env, cwd=Path(__file__).resolve().parents[2])
    assert run.returncode == 0, run.stderr.decode(errors="replace")
    out = run.stdout.decode("utf-8")
    if as_json:
        assert json.loads(out) and "caf\\udce9.png" in out         # valid JSON, the name escaped
    else:
        assert "caf\\xe9.png" in out


@pytest.mark.skipif(os.name != "posix", reason="FIFOs as on POSIX")
@pytest.mark.timeout(60)
def test_opening_a_fifo_or_device_named_like_an_image_is_a_reason_not_a_hang(tmp_path):
    from lib_lora.dataset.images import ImageReadError, load_image_rgb, read_header
    fifo(tmp_path / "pipe.png")
    (tmp_path / "zero.png").symlink_to("/dev/zero")
    for name in ("pipe.png", "zero.png"):
        with pytest.raises(ImageReadError, match="FIFO|device"):
            read_header(tmp_path / name)
        with pytest.raises(ImageReadError):
            load_image_rgb(tmp_path / name)
