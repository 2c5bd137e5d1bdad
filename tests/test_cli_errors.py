"""Every user error from the command line is one line on stderr ("error: what (where). what to do"),
exit status 2, no traceback, and writes nothing: a config file not in UTF-8, a device this machine
lacks, checkpoints and LoRAs whose shapes do not fit, NaN in a LoRA, a mistyped command line."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from lib_lora.cli import main
from lib_lora.device_check import check_device

sys.path.insert(0, str(Path(__file__).parent / "ops"))
from ops_fixtures import ATTN_K2, ATTN_Q, make_lora, save, tiny_sd1  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
LORA_KEY = "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q"   # the module of ATTN_Q
NO_DEVICE = f"cuda:{torch.cuda.device_count()}"        # one past the last GPU: on no machine


def _fails_in_one_line(argv, capsys, *words) -> str:
    """Run the CLI entry; it must return 2 with one error line (progress lines may come before it)."""
    try:
        status = main([str(a) for a in argv])
    except SystemExit as stop:          # argparse's mistakes leave through SystemExit, as for `--help`
        status = stop.code
    err = capsys.readouterr().err
    assert status == 2, err
    assert "Traceback" not in err
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and err.rstrip("\n").splitlines()[-1] == errors[0], err
    for word in words:
        assert word in errors[0], (word, errors[0])
    return errors[0]


@pytest.fixture()
def files(tmp_path):
    """A tiny SD1 checkpoint, a wider one, LoRAs for each, and damaged LoRAs."""
    base = tiny_sd1()
    wide = {k: torch.cat([v, v], dim=0) if v.dim() >= 2 else v for k, v in base.items()}   # other out sizes
    lora = make_lora([ATTN_Q, ATTN_K2], 4, 4.0, seed=1)
    nan, inf, ranks = dict(lora), dict(lora), dict(lora)
    nan[f"{LORA_KEY}.lora_up.weight"] = lora[f"{LORA_KEY}.lora_up.weight"].clone().index_fill_(
        0, torch.tensor([0]), float("nan"))
    inf[f"{LORA_KEY}.lora_down.weight"] = lora[f"{LORA_KEY}.lora_down.weight"] * float("inf")
    ranks[f"{LORA_KEY}.lora_down.weight"] = torch.randn(3, 8)
    loha = {f"{LORA_KEY}.hada_w1_a": torch.randn(8, 4), f"{LORA_KEY}.hada_w1_b": torch.randn(4, 8),
            f"{LORA_KEY}.hada_w2_a": torch.randn(8, 4), f"{LORA_KEY}.hada_w2_b": torch.randn(3, 9),
            f"{LORA_KEY}.alpha": torch.tensor(4.0)}
    wide_lora = make_lora([ATTN_Q], 4, 4.0, seed=2, shapes={k: tuple(v.shape) for k, v in wide.items()})
    tuned_nan = {k: v.clone() for k, v in base.items()}
    tuned_nan[ATTN_Q] = tuned_nan[ATTN_Q] + 0.1
    tuned_nan[ATTN_Q][0, 0] = float("nan")
    named = {"base": base, "wide": wide, "tuned_nan": tuned_nan, "lora": lora, "nan": nan, "inf": inf,
             "ranks": ranks, "loha": loha, "wide_lora": wide_lora}
    return {name: save(tmp_path / f"{name}.safetensors", tensors) for name, tensors in named.items()}


def _nothing_new(tmp_path, before: set) -> None:
    assert {p.name for p in tmp_path.iterdir()} == before


@pytest.mark.parametrize("encoding, raw", [
    ("latin-1", "[output]\noutput_name = \"café\"\n".encode("latin-1")),
    ("utf-16", "[output]\noutput_name = \"x\"\n".encode("utf-16")),
    ("cp1252", "[sample]\nprompts = [\"“quoted”\"]\n".encode("cp1252")),
    ("binary", bytes(range(256))),
])
def test_a_config_file_not_in_utf8_is_one_sentence(tmp_path, capsys, encoding, raw):
    config = tmp_path / "run.toml"
    config.write_bytes(raw)
    line = _fails_in_one_line(["train", "--config", config, "--dry-run"], capsys, "not UTF-8", str(config))
    assert "Save it as UTF-8" in line


def test_a_utf8_config_with_a_bom_still_reads(tmp_path, capsys):
    """Control: UTF-8 (with the BOM Windows editors write) is read; the run then stops at its missing dataset."""
    config, missing = tmp_path / "run.toml", tmp_path / "dätaset"
    text = f"\ufeff[dataset]\ntrain_dir = '{missing}'\n[output]\noutput_name = \"café\"\n"
    config.write_bytes(text.encode("utf-8"))
    line = _fails_in_one_line(["train", "--config", config, "--dry-run"], capsys, str(missing))
    assert "UTF-8" not in line


def test_a_training_device_that_is_not_there(tmp_path, capsys):
    _fails_in_one_line(["train", "--set", f"training.device={NO_DEVICE}", "--set",
                        f"dataset.train_dir={tmp_path}"], capsys, NO_DEVICE, "training.device")


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
@pytest.mark.parametrize("command", ["extract", "merge", "resize"])
def test_a_tool_asked_for_cuda_without_cuda(files, tmp_path, capsys, command):
    before = {p.name for p in tmp_path.iterdir()}
    out = tmp_path / "out.safetensors"
    argv = {"extract": ["--base", files["base"], "--tuned", files["wide"]],
            "merge": ["--lora", files["lora"], "--base", files["base"]],
            "resize": ["--lora", files["lora"], "--dim", 2]}[command]
    _fails_in_one_line([command, *argv, "--out", out, "--device", "cuda"], capsys, "'cuda'", "--device", "cpu")
    _nothing_new(tmp_path, before)


@pytest.mark.parametrize("device, words", [
    (NO_DEVICE, [NO_DEVICE]), ("gpu0", ["not a device name"]), ("cuda:-1", ["cuda:-1"]), ("tpu", ["tpu"])])
def test_check_device_names_the_device_and_the_field(device, words):
    from lib_lora.errors import LoraError
    with pytest.raises(LoraError) as caught:
        check_device(device, "training.device")
    for word in [*words, "training.device"]:
        assert word in str(caught.value)
    assert check_device("cpu", "x") == "cpu" and check_device("auto", "x") in ("cpu", "cuda")


@pytest.mark.parametrize("case, argv, words", [
    ("extract: tuned of another size", ["extract", "--base", "{base}", "--tuned", "{wide}"], ["shape", "base"]),
    ("extract: NaN in the tuned checkpoint", ["extract", "--base", "{base}", "--tuned", "{tuned_nan}"],
     ["NaN", "tuned", "attn1.to_q"]),
    ("extract: NaN in the base checkpoint", ["extract", "--base", "{tuned_nan}", "--tuned", "{base}"],
     ["NaN", "base"]),
    ("merge: LoRA of another size into a checkpoint", ["merge", "--lora", "{wide_lora}", "--base", "{base}"],
     ["shape", "wide_lora.safetensors"]),
    ("merge: LoRAs of two sizes, concatenated", ["merge", "--lora", "{wide_lora}", "--lora", "{lora}", "--mode", "concat"],
     ["shape", "another LoRA"]),
    ("merge: LoRAs of two sizes, re-compressed", ["merge", "--lora", "{lora}", "--lora", "{wide_lora}",
                                                  "--mode", "svd", "--svd-dim", "2"], ["shape", "another LoRA"]),
    ("merge: up/down ranks differ", ["merge", "--lora", "{ranks}", "--base", "{base}"],
     ["ranks differ", "ranks.safetensors"]),
    ("resize: up/down ranks differ", ["resize", "--lora", "{ranks}", "--dim", "2"], ["ranks differ"]),
    ("resize: LoHa factors that do not fit", ["resize", "--lora", "{loha}", "--dim", "2"], ["do not fit"]),
    ("merge: LoHa factors that do not fit", ["merge", "--lora", "{loha}", "--base", "{base}"], ["do not fit"]),
    ("resize: NaN", ["resize", "--lora", "{nan}", "--dim", "2"], ["NaN", "nan.safetensors", "earlier epoch"]),
    ("resize: inf", ["resize", "--lora", "{inf}", "--dim", "2"], ["infinite", "inf.safetensors"]),
    ("merge: NaN into a checkpoint", ["merge", "--lora", "{nan}", "--base", "{base}"], ["NaN"]),
    ("merge: NaN into a LoRA", ["merge", "--lora", "{lora}", "--lora", "{nan}", "--mode", "svd", "--svd-dim", "2"], ["NaN"]),
    ("merge: a weight of nan", ["merge", "--lora", "{lora}", "--weights=nan", "--mode", "concat"], ["nan", "finite"]),
    ("merge: a weight of -inf", ["merge", "--lora", "{lora}", "--weights=-inf", "--base", "{base}"], ["-inf"]),
    ("merge: a block weight of inf", ["merge", "--lora", "{lora}", "--block-weights", ",".join(["1"] * 16 + ["inf"]),
                                      "--mode", "concat"], ["inf", "block weights"]),
])
def test_shapes_that_do_not_fit_and_nan_are_one_sentence(files, tmp_path, capsys, case, argv, words):
    before = {p.name for p in tmp_path.iterdir()}
    argv = [a.format(**{k: str(v) for k, v in files.items()}) for a in argv]
    module_named = ("LoRA" in case or "resize" in case or "ranks" in case) and "weight" not in case
    _fails_in_one_line([*argv, "--out", tmp_path / "out.safetensors"], capsys, LORA_KEY if module_named else "",
                       *words)
    _nothing_new(tmp_path, before)


@pytest.mark.parametrize("argv, words", [
    (["nonsense"], ["invalid choice", "python -m lib_lora --help"]),
    (["extract", "--base", "x.safetensors"], ["--tuned", "python -m lib_lora extract --help"]),
    (["resize", "--lora", "x", "--out", "y", "--dim", "many"], ["--dim", "many"]),
    (["resize", "--lora", "x", "--out", "y", "--dim", "0"], ["--dim", "'0'", "from 1 to 4096"]),
    (["tag", "x", "--write-mode", "sometimes"], ["--write-mode", "sometimes", "'overwrite'"]),
    (["merge", "--lora", "x", "--out", "y", "--device", "cuda:1"], ["--device", "cuda:1"]),
    (["train", "--more-epochs", "x"], ["--more-epochs"]),
])
def test_a_mistyped_command_line_is_one_line(capsys, argv, words):
    _fails_in_one_line(argv, capsys, *words)


def test_a_config_path_that_is_a_folder(tmp_path, capsys):
    _fails_in_one_line(["train", "--config", tmp_path], capsys, str(tmp_path))


def test_python_m_lib_lora_prints_one_line_and_exits_2(tmp_path):
    """The real entry point (`python -m lib_lora`), as a user runs it."""
    config = tmp_path / "run.toml"
    config.write_bytes("output_name = \"café\"\n".encode("latin-1"))
    for argv in (["train", "--config", str(config)], ["extract", "--base"]):
        done = subprocess.run([sys.executable, "-m", "lib_lora", *argv], cwd=REPO, capture_output=True, text=True,
                              env={**os.environ, "PYTHONPATH": str(REPO)}, timeout=300)
        assert done.returncode == 2 and "Traceback" not in done.stderr
        assert len(done.stderr.strip().splitlines()) == 1 and done.stderr.startswith("error: "), done.stderr


def test_inspect_with_a_damaged_base_checkpoint(files, tmp_path, capsys):
    damaged = tmp_path / "damaged.safetensors"
    damaged.write_bytes(files["base"].read_bytes()[:100])
    _fails_in_one_line(["inspect", files["lora"], "--base", damaged], capsys, "not a readable safetensors",
                       str(damaged))
