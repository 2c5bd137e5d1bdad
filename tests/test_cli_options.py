"""Every option declared once: the commands' flags are generated from the typed configs.

Each field of each command's config is a flag with the opt() help, default and range; a bad
value is one line and exit status 2; old flag names (cli.RENAMED_FLAGS) still work with a
one-line warning; no flag written by hand repeats an option a config declares; old TOML keys
of renamed fields still load; the output-name rule and the hosts of options have one home."""
from __future__ import annotations

import argparse
import dataclasses
import re
from pathlib import Path

import pytest

from lib_lora import options
from lib_lora.bench.options import BenchOptions
from lib_lora.cli import GRID_SKIPS, RENAMED_FLAGS, build_parser, main
from lib_lora.config import (DatasetConfig, ModelConfig, NetworkConfig, OutputConfig, PrepConfig, SampleConfig,
                             TaggingConfig, TrainConfig, TrainingConfig, check_output_name)
from lib_lora.dataset.commands import CHECK_DATASET_FIELDS, CHECK_TRAINING_FIELDS
from lib_lora.errors import ConfigError
from lib_lora.ops.config import ExtractConfig, MergeConfig, ResizeConfig

ROOT = Path(__file__).resolve().parents[1]
ALL = None      # every field of the class
# command -> the configs whose options it takes, and which of their fields
COMMAND_CONFIGS = {
    "extract": [(ExtractConfig, ALL)], "merge": [(MergeConfig, ALL)], "resize": [(ResizeConfig, ALL)],
    "tag": [(TaggingConfig, ALL)], "tags": [(TaggingConfig, ("caption_extension",))],
    "prep": [(PrepConfig, ALL)], "import": [(DatasetConfig, ("caption_extension",))],
    "check": [(DatasetConfig, CHECK_DATASET_FIELDS), (TrainingConfig, CHECK_TRAINING_FIELDS),
              (PrepConfig, ("max_aspect",))],
    "bench": [(BenchOptions, ALL)],
    "grid": [(SampleConfig, tuple(f.name for f in dataclasses.fields(SampleConfig) if f.name not in GRID_SKIPS))],
}
CONFIG_CLASSES = (ModelConfig, DatasetConfig, NetworkConfig, TrainingConfig, OutputConfig, SampleConfig,
                  TaggingConfig, PrepConfig, ExtractConfig, MergeConfig, ResizeConfig, BenchOptions)
# flags written by hand whose name is also a field somewhere, each a different thing
SAME_NAME_OTHER_THING = {("import", "repeats"): "the repeats of the imported concept's folder name, not bench's"}
HAND_WRITTEN_LIMIT = 40


def _commands() -> dict[str, argparse.ArgumentParser]:
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(sub.choices)


COMMANDS = _commands()


def _fields(cls, names):
    return [f for f in dataclasses.fields(cls) if names is ALL or f.name in names]


def _by_flag(parser) -> dict[str, argparse.Action]:
    return {flag: a for a in parser._actions for flag in a.option_strings}


@pytest.mark.parametrize("command", sorted(COMMAND_CONFIGS))
def test_every_field_of_a_command_config_is_a_flag_with_its_help_and_default(command):
    flags = _by_flag(COMMANDS[command])
    for cls, names in COMMAND_CONFIGS[command]:
        for f in _fields(cls, names):
            flag = "--" + f.name.replace("_", "-")
            assert flag in flags, (command, flag)
            action, meta = flags[flag], f.metadata
            default = f.default_factory() if f.default is dataclasses.MISSING else f.default
            assert action.config_field == f"{cls.__name__}.{f.name}"
            shown = action.help.replace("%%", "%")
            assert shown.startswith(meta["help"]) and f"default: {options.default_text(default)}" in shown, shown
            assert action.default is None            # "not given": the config's default, or the run's value
            if meta.get("min") is not None and meta.get("max") is not None:
                assert f"from {meta['min']} to {meta['max']}" in shown
            if f.type in (bool, "bool"):
                assert f"--no-{f.name.replace('_', '-')}" in flags


def test_a_generated_flag_gives_the_typed_config_and_keeps_what_is_not_given():
    parser = argparse.ArgumentParser()
    options.add_arguments(parser, TaggingConfig)
    args = parser.parse_args(["--decode-workers", "3", "--no-remove-junk-tags", "--models", "a", "--models", "b,c",
                              "--general-threshold", "0.5"])
    cfg = options.from_namespace(TaggingConfig, args)
    assert (cfg.decode_workers, cfg.remove_junk_tags, cfg.models, cfg.general_threshold) == (3, False, ["a", "b,c"], 0.5)
    assert cfg.write_mode == TaggingConfig().write_mode
    parser = argparse.ArgumentParser()
    options.add_arguments(parser, SampleConfig, prefix="sample_", skip=("prompts",))
    args = parser.parse_args(["--sample-grid-weights", "0.5,1", "--sample-grid-weights", "2", "--sample-seed", "7"])
    run = SampleConfig(seed=1, steps=33, negative_prompt="blurry")
    cfg = options.from_namespace(SampleConfig, args, prefix="sample_", base=run)
    assert (cfg.grid_weights, cfg.seed, cfg.steps, cfg.negative_prompt) == ([0.5, 1.0, 2.0], 7, 33, "blurry")
    assert "--sample-prompts" not in _by_flag(parser) and run.seed == 1


def _one_error_line(argv, capsys) -> str:
    with pytest.raises(SystemExit) as stop:
        main([str(a) for a in argv])
    err = capsys.readouterr().err
    assert stop.value.code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    return lines[0]


@pytest.mark.parametrize("argv, words", [
    (["resize", "--lora", "x", "--out", "y", "--dim", "0"], ["--dim", "'0'", "from 1 to 4096"]),
    (["extract", "--base", "a", "--tuned", "b", "--out", "c", "--clamp-quantile", "0.2"],
     ["--clamp-quantile", "from 0.5 to 1.0"]),
    (["extract", "--base", "a", "--tuned", "b", "--out", "c", "--svd", "fast"], ["--svd", "'fast'", "'exact'"]),
    (["tag", "d", "--decode-workers", "100"], ["--decode-workers", "from 1 to 32"]),
    (["tag", "d", "--write-mode", "sometimes"], ["--write-mode", "'overwrite'"]),
    (["check", "d", "--batch-size", "x"], ["--batch-size", "'x'", "int"]),
    (["prep", "s", "--crop", "round"], ["--crop", "'focal'"]),
    (["bench", "--model", "sd3"], ["--model", "'sdxl'"]),
    (["grid", "--config", "r.toml", "--steps", "1000"], ["--steps", "from 1 to 150"]),
    (["merge", "--lora", "l", "--out", "o", "--weights", "nan", "--mode", "concat"], ["--weights", "finite"]),
])
def test_a_generated_flag_enforces_its_range_and_choices_in_one_line(capsys, argv, words):
    line = _one_error_line(argv, capsys)
    for word in words:
        assert word in line, (word, line)


def test_a_renamed_flag_still_works_with_a_one_line_warning(capsys):
    parser = build_parser()
    args = parser.parse_args(["extract", "--base", "a", "--tuned", "b", "--out", "c", "--rank=4", "--conv-rank", "2",
                              "--lowrank"])
    assert (args.dim, args.conv_dim, args.svd) == (4, 2, "lowrank")
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 3 and all(line.startswith("warning: `extract --") for line in err)
    assert "--dim" in err[0] and "--conv-dim" in err[1] and "--svd lowrank" in err[2]
    args = parser.parse_args(["tag", "d", "--keep-junk", "--model", "m", "--workers", "3", "--trigger", "t"])
    assert (args.remove_junk_tags, args.models, args.decode_workers, args.trigger_word) == (False, [["m"]], 3, "t")
    args = parser.parse_args(["merge", "--lora", "l", "--out", "o", "--svd-rank", "5", "--weight", "0.5"])
    assert (args.mode, args.svd_dim, args.weights) == ("svd", 5, [[0.5]])
    args = parser.parse_args(["prep", "s", "--no-upscale", "--no-flatten"])
    assert (args.upscale_small, args.flatten_alpha) == (False, False)
    assert len(capsys.readouterr().err.splitlines()) == 8


@pytest.mark.parametrize("command", sorted(RENAMED_FLAGS))
def test_each_renamed_flag_is_declared_once_under_its_new_name(command):
    flags = _by_flag(COMMANDS[command])
    for old, new in RENAMED_FLAGS[command].items():
        assert old not in flags, f"{command} {old} is still an option of its own"
        assert all(token in flags for token in new if token.startswith("--")), (command, new)


def _hand_written(parser) -> list[argparse.Action]:
    return [a for a in parser._actions if not hasattr(a, "config_field") and not isinstance(a, argparse._HelpAction)]


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_no_option_is_declared_twice(command):
    """A flag written by hand must not be an option a config declares (it would be a second
    declaration); and no two flags of a command fill the same option."""
    fields = {f.name for cls in CONFIG_CLASSES for f in dataclasses.fields(cls)}
    for action in _hand_written(COMMANDS[command]):
        names = {action.dest} | {flag.lstrip("-").replace("-", "_") for flag in action.option_strings}
        twice = {n for n in names & fields if (command, n) not in SAME_NAME_OTHER_THING}
        assert not twice, f"`{command}` writes {sorted(twice)} by hand; generate it from its config"
    dests = [a.dest for a in COMMANDS[command]._actions if not isinstance(a, argparse._HelpAction)]
    assert len(dests) == len(set(dests)), dests


def test_the_hand_written_flags_stay_few():
    calls = [line for path in (ROOT / "lib_lora").rglob("*.py")
             for line in path.read_text(encoding="utf-8").splitlines() if re.search(r"\.add_argument\(", line)]
    assert len(calls) <= HAND_WRITTEN_LIMIT, "\n".join(calls)


def test_renamed_fields_still_load_from_old_keys():
    assert options.from_dict(ExtractConfig, {"rank": 4, "conv_rank": 2}) == ExtractConfig(dim=4, conv_dim=2)
    assert options.from_dict(ResizeConfig, {"rank": 3}).dim == 3
    assert options.from_dict(MergeConfig, {"svd_rank": 5, "svd_conv_rank": 1}) == MergeConfig(svd_dim=5,
                                                                                               svd_conv_dim=1)
    with pytest.raises(ConfigError, match="only one of rank and dim"):
        options.from_dict(ExtractConfig, {"dim": 4, "rank": 2})
    with pytest.raises(ConfigError, match="known options"):
        options.from_dict(ExtractConfig, {"ranks": 4})


@pytest.mark.parametrize("name", ["", ".", "..", " ", "a/b", "a\\b", "c:d", "x?", "CON", "nul.txt", "Com1",
                                  "lpt9", "a\tb", "a\nb", "n" * 201, "é" * 101])
def test_the_output_name_rule_refuses(name):
    with pytest.raises(ConfigError) as caught:
        check_output_name(name)
    assert caught.value.field == "output.output_name"
    with pytest.raises(ConfigError):
        options.apply_overrides(TrainConfig, TrainConfig(), [f"output.output_name={name}"]) if "\n" not in name \
            else check_output_name(name)


@pytest.mark.parametrize("name", ["my_lora", "Алиса v1", "con_artist", "x. ", "n" * 200, "a-b.c"])
def test_the_output_name_rule_accepts(name):
    check_output_name(name)


def test_options_say_which_hosts_they_apply_to():
    info = options.field_info(TrainConfig)
    outside_webui = {"model.pretrained", "model.config_dir", "model.v_parameterization", "training.device",
                     "training.num_threads", "output.output_dir"}
    for name, (_typ, meta) in info.items():
        assert options.shown_on(meta, "headless") and options.shown_on(meta, "standalone"), name
        assert options.shown_on(meta, "webui") == (name not in outside_webui), name
    assert not options.shown_on(options.field_info(TaggingConfig)["models_dir"][1], "standalone")   # the tab's own
    with pytest.raises(ValueError, match="unknown hosts"):
        options.opt(1, "x", hosts=("colab",))


def test_the_webui_form_leaves_out_the_options_the_webui_overrides():
    from lib_lora.ui import form
    webui = {s.name for s in form.field_specs(TrainConfig, "webui")}
    standalone = {s.name for s in form.field_specs(TrainConfig, "standalone")}
    assert standalone == set(options.field_info(TrainConfig))
    assert standalone - webui == {"model.pretrained", "model.config_dir", "model.v_parameterization",
                                  "training.device", "training.num_threads", "output.output_dir"}
