"""Where a run writes: one run per output folder and name (whoever started it), and never onto the
dataset it reads, even when the output folder is the dataset's own concept folder."""
from __future__ import annotations

import os

import pytest

from lib_lora.errors import RunLockedError, UnsafeWriteError, WriteError
from lib_lora.training.run_lock import output_lock
from lib_lora.training.trainer import train
from tests.fixtures.hostile import fingerprint, small_filesystem
from training_fixtures import fast_config


def test_a_second_run_on_a_folder_and_name_in_use_is_refused_with_its_holder(tiny_model, dataset, tmp_path):
    out = tmp_path / "out"
    cfg = fast_config(dataset, out)
    with output_lock(out, cfg.output.output_name):              # the first run (tab, API or another CLI)
        before = fingerprint(out)
        with pytest.raises(RunLockedError) as err:
            train(cfg, tiny_model)
        assert f"pid {os.getpid()}" in str(err.value) and "another output name" in str(err.value)
        assert fingerprint(out) == before                        # not even its config was written
    result = train(cfg, tiny_model)                              # free again once the first run ended
    assert result.files and all(os.path.exists(f) for f in result.files)


def test_a_run_writing_into_its_dataset_never_replaces_a_caption(tiny_model, dataset, tmp_path):
    """Output in the concept folder, captions named .toml and an output name equal to an image's stem:
    the run's own `<name>.toml` would land on a caption. The guard refuses before the first write."""
    concept = dataset / "2_thing"
    for caption in concept.glob("*.txt"):
        caption.rename(caption.with_suffix(".toml"))
    cfg = fast_config(dataset, concept)
    cfg.dataset.caption_extension = ".toml"
    cfg.output.output_name = "000"
    before = fingerprint(dataset)
    with pytest.raises(UnsafeWriteError, match="original"):
        train(cfg, tiny_model)
    after = fingerprint(dataset)
    assert {k: v for k, v in after.items() if k in before} == before


def test_an_output_folder_that_is_a_file_is_one_sentence_before_any_work(tiny_model, dataset, tmp_path):
    (tmp_path / "out").write_text("a file")
    with pytest.raises(WriteError, match="file") as err:
        train(fast_config(dataset, tmp_path / "out"), tiny_model)
    assert "\n" not in str(err.value) and (tmp_path / "out").read_text() == "a file"


def test_a_read_only_output_folder_is_one_sentence_before_any_work(tiny_model, dataset, tmp_path):
    with small_filesystem(tmp_path / "ro", read_only=True) as ro:
        with pytest.raises(WriteError, match="read-only"):
            train(fast_config(dataset, ro / "lora"), tiny_model)
