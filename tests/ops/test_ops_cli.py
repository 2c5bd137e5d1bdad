"""commands.py: the extract / merge / resize entry points write files with metadata and reports."""
from __future__ import annotations

import argparse
import json

import torch
from safetensors import safe_open

from lib_lora.bench import add_bench_args
from lib_lora.bench.options import options_from_args
from lib_lora.ops.commands import EXTRACT_BENCH_DIM, add_extract_args, add_merge_args, add_resize_args, run_extract, run_merge, run_resize
from lib_lora.ops.report import report_paths
from ops_fixtures import ATTN_K2, ATTN_Q, low_rank, make_lora, save, tiny_sd1


def _args(add, argv):
    parser = argparse.ArgumentParser()
    add(parser)
    return parser.parse_args([str(a) for a in argv])


def _meta(path):
    with safe_open(str(path), "pt") as f:
        return f.metadata(), list(f.keys())


def test_extract_command_writes_lora_metadata_and_report(tmp_path, capsys):
    base = tiny_sd1()
    tuned = {k: v.clone() for k, v in base.items()}
    tuned[ATTN_Q] += low_rank(tuple(base[ATTN_Q].shape), 2, seed=0)
    base_file, tuned_file = save(tmp_path / "base.safetensors", base), save(tmp_path / "tuned.safetensors", tuned)
    out = tmp_path / "извлечено" / "lora.safetensors"          # any Unicode path
    status = run_extract(_args(add_extract_args, ["--base", base_file, "--tuned", tuned_file, "--dim", 2,
                                                  "--out", out]))
    assert status == 0
    meta, keys = _meta(out)
    assert meta["ss_network_dim"] == "2" and meta["ss_base_model_version"] == "sd_v1"
    assert meta["ss_network_module"] == "networks.lora" and meta["modelspec.architecture"].endswith("/lora")
    assert json.loads(meta["lib_lora_extract"])["overall_relative_error"] < 2e-3
    assert len(keys) == 3
    json_path, csv_path = report_paths(out)
    assert json.loads(json_path.read_text())["summary"]["layers_written"] == 1
    assert csv_path.read_text().startswith("layer,shape,rank")
    assert "overall relative error" in capsys.readouterr().out


def test_merge_and_resize_commands(tmp_path):
    base_file = save(tmp_path / "base.safetensors", tiny_sd1())
    one = save(tmp_path / "one.safetensors", make_lora([ATTN_Q, ATTN_K2], 4, 4.0, seed=1))
    two = save(tmp_path / "two.safetensors", make_lora([ATTN_Q], 2, 1.0, seed=2))
    merged = tmp_path / "merged.safetensors"
    assert run_merge(_args(add_merge_args, ["--lora", one, "--lora", two, "--weights", 0.8, "--weights", 0.5,
                                            "--base", base_file, "--out", merged, "--drop-ema"])) == 0
    with safe_open(str(merged), "pt") as f:
        assert f.get_tensor(ATTN_Q).dtype == torch.float16 and "model_ema.decay" not in f.keys()
    joined = tmp_path / "joined.safetensors"
    assert run_merge(_args(add_merge_args, ["--lora", one, "--lora", two, "--mode", "concat", "--out", joined])) == 0
    meta, keys = _meta(joined)
    assert meta["ss_network_dim"] == "Dynamic"            # 6 on to_q, 4 on to_k
    small = tmp_path / "small.safetensors"
    assert run_resize(_args(add_resize_args, ["--lora", one, "--dim", 2, "--out", small])) == 0
    meta, _ = _meta(small)
    assert meta["ss_network_dim"] == "2" and "lib_lora_resize" in meta
    assert report_paths(small)[0].exists()


def test_errors_are_one_message_and_status_2(tmp_path, capsys):
    status = run_resize(_args(add_resize_args, ["--lora", tmp_path / "nope.safetensors", "--dim", 2,
                                                "--out", tmp_path / "x.safetensors"]))
    assert status == 2
    err = capsys.readouterr().err
    assert err.startswith("error: LoRA file not found") and "nope.safetensors" in err
    status = run_merge(_args(add_merge_args, ["--lora", tmp_path / "nope.safetensors", "--mode", "concat", "--out",
                                              tmp_path / "x.safetensors", "--block-weights", "1,2"]))
    assert status == 2


def test_bench_arguments_default_to_the_issue_figures():
    opts = options_from_args(_args(add_bench_args, ["--tool", "extract"]))
    assert opts.tool == "extract" and opts.dim == 0 and opts.methods == "lowrank,exact" and opts.change == 0.02
    assert EXTRACT_BENCH_DIM == 8          # what --dim 0 means for the extraction


def test_merge_says_what_to_merge_into(tmp_path, capsys):
    one = save(tmp_path / "one.safetensors", make_lora([ATTN_Q], 2, 1.0, seed=1))
    base_file = save(tmp_path / "base.safetensors", tiny_sd1())
    out = tmp_path / "x.safetensors"
    for argv, words in ((["--lora", one, "--out", out], "--base CHECKPOINT, or --mode concat"),
                        (["--lora", one, "--mode", "checkpoint", "--out", out], "needs the checkpoint"),
                        (["--lora", one, "--base", base_file, "--mode", "svd", "--out", out], "only for mode checkpoint")):
        assert run_merge(_args(add_merge_args, argv)) == 2
        assert words in capsys.readouterr().err
    assert not out.exists()
