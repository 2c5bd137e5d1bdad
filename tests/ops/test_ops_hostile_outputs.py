"""The tools never write over their inputs, and a bad --out is one sentence (exit 2), whatever path leads there."""
from __future__ import annotations

import argparse
import os

import pytest

from lib_lora.ops.commands import add_extract_args, add_merge_args, add_resize_args, run_extract, run_merge, run_resize
from ops_fixtures import ATTN_Q, low_rank, make_lora, save, tiny_sd1
from tests.fixtures.hostile import fingerprint


def _args(add, argv):
    parser = argparse.ArgumentParser()
    add(parser)
    return parser.parse_args([str(a) for a in argv])


@pytest.fixture
def files(tmp_path):
    base = tiny_sd1()
    tuned = {k: v.clone() for k, v in base.items()}
    tuned[ATTN_Q] += low_rank(tuple(base[ATTN_Q].shape), 2, seed=0)
    save(tmp_path / "base.safetensors", base)
    save(tmp_path / "tuned.safetensors", tuned)
    save(tmp_path / "one.safetensors", make_lora([ATTN_Q], 4, 4.0, seed=1))
    (tmp_path / "a_file").write_text("not a folder")
    (tmp_path / "a_folder.safetensors").mkdir()
    if os.name == "posix":
        (tmp_path / "base_link.safetensors").symlink_to(tmp_path / "base.safetensors")
        (tmp_path / "dir_link").symlink_to(tmp_path)
    return tmp_path


def _extract(d, out):
    return run_extract(_args(add_extract_args, ["--base", d / "base.safetensors", "--tuned", d / "tuned.safetensors",
                                                "--dim", 2, "--out", out]))


OUTS = ["base.safetensors", "tuned.safetensors", "sub/../base.safetensors", "base_link.safetensors",
        "dir_link/base.safetensors", "a_file/x.safetensors", "a_folder.safetensors", "lora.ckpt"]


@pytest.mark.parametrize("out", OUTS)
def test_extract_out_never_replaces_an_input_or_crashes(files, out, capsys):
    if "link" in out and os.name != "posix":
        pytest.skip("symlinks")
    (files / "sub").mkdir(exist_ok=True)
    before = fingerprint(files)
    status = _extract(files, files / out)
    err = capsys.readouterr().err
    assert (status, fingerprint(files)) == (2, before)
    assert err.startswith("error: ") and err.count("\n") == 1      # one sentence, before minutes of work


def test_resize_and_merge_refuse_an_output_that_is_an_input(files, capsys):
    before = fingerprint(files)
    assert run_resize(_args(add_resize_args, ["--lora", files / "one.safetensors", "--dim", 2,
                                              "--out", files / "one.safetensors"])) == 2
    assert run_merge(_args(add_merge_args, ["--lora", files / "one.safetensors", "--mode", "concat",
                                            "--out", files / "one.safetensors"])) == 2
    assert run_merge(_args(add_merge_args, ["--lora", files / "one.safetensors", "--base", files / "base.safetensors",
                                            "--out", files / "base.safetensors"])) == 2
    assert fingerprint(files) == before
    assert "replace an input" in capsys.readouterr().err


def test_a_good_out_still_works_beside_the_inputs(files):
    assert _extract(files, files / "new" / "lora.safetensors") == 0
    assert (files / "new/lora.safetensors").stat().st_size > 0
