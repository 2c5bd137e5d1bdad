"""Which files are a run's epochs: one rule (training.saving), checked against names written by hand."""
from __future__ import annotations

from lib_lora.evaluation.epoch_grid import epoch_files, epoch_of, run_names
from lib_lora.training.saving import epoch_file, epoch_file_name, list_epoch_files, parse_epoch_file


def _touch(folder, *names):
    for n in names:
        (folder / n).write_bytes(b"x")


def test_the_writer_names_epochs_like_sd_scripts(tmp_path):
    assert epoch_file_name("run", 3) == "run-000003.safetensors"
    assert epoch_file(tmp_path, "my run", 12) == tmp_path / "my run-000012.safetensors"


def test_only_the_runs_epoch_files_sorted_by_epoch(tmp_path):
    _touch(tmp_path,
           "run-000010.safetensors", "run-000002.safetensors", "run-000001.safetensors",
           "run.safetensors",                       # never written by training: not an epoch
           "run-step00000002.safetensors",          # a Save-now file
           "run-v2-000001.safetensors",             # another run whose name starts with run-
           "run-000003.pt", "run-000004.safetensors.tmp", "run-0000005.safetensors",
           "run-epochs.json", "run.toml", "other-000001.safetensors")
    (tmp_path / "run-000007.safetensors").mkdir()   # a folder is not a file
    assert [p.name for p in list_epoch_files(tmp_path, "run")] == [
        "run-000001.safetensors", "run-000002.safetensors", "run-000010.safetensors"]
    assert [p.name for p in list_epoch_files(tmp_path, "run-v2")] == ["run-v2-000001.safetensors"]
    assert epoch_files(tmp_path, "run") == list_epoch_files(tmp_path, "run")
    assert set(run_names(tmp_path)) == {"run", "run-v2", "other"}


def test_names_with_glob_characters_and_missing_folders(tmp_path):
    _touch(tmp_path, "a[1]*-000001.safetensors", "a1-000001.safetensors")
    assert [p.name for p in list_epoch_files(tmp_path, "a[1]*")] == ["a[1]*-000001.safetensors"]
    assert list_epoch_files(tmp_path / "absent", "run") == []
    assert run_names(tmp_path / "absent") == []


def test_parse_is_the_inverse_of_the_writer(tmp_path):
    assert parse_epoch_file(tmp_path / "run-v2-000001.safetensors") == ("run-v2", 1)
    assert parse_epoch_file("run-1234567.safetensors") == ("run", 1234567)
    assert parse_epoch_file("run-step00000002.safetensors") is None
    assert parse_epoch_file("run.safetensors") is None
    assert epoch_of(tmp_path / "run-000004.safetensors") == 4 and epoch_of(tmp_path / "run.safetensors") is None
