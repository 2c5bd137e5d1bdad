"""`python -m lib_lora <command>`: every tab action has a twin here, built on the same configs.

Each command is a thin function: parse, build the typed config, call the
library. Errors the user can fix print as one line on stderr and exit with code 2,
without a traceback: a LoraError, a file the OS cannot open (OSError), and a
mistake in the command line itself (argparse, whose usage block would be many
lines). Anything else is a bug and keeps its traceback.

The options of every command are generated from the typed configs
(options.add_arguments); what is written by hand here and in the commands'
modules is only what no config holds (files, --set, --resume, ...). Flags that
were renamed when that happened are in RENAMED_FLAGS, the one table of old
spellings: they still work, with a one-line warning.
"""
from __future__ import annotations

import argparse
import importlib
import json
import logging
import os
import sys
from pathlib import Path

from .errors import LoraError
from .safe_paths import WriteGuard, guarded, is_within, resolved

# command -> (module, add_args function, run function); modules are imported only when used
EXTERNAL_COMMANDS = {
    "check": ("lib_lora.dataset.commands", "add_check_args", "run_check", "Dataset report: counts, sizes, captions, tags, duplicates, steps"),
    "prep": ("lib_lora.dataset.commands", "add_prep_args", "run_prep", "Preprocess a dataset into a new folder (originals untouched)"),
    "import": ("lib_lora.dataset.commands", "add_import_args", "run_import", "Copy images, folders or zips into a dataset folder (<root>/<name>/train/<repeats>_<concept>)"),
    "tag": ("lib_lora.tagging.commands", "add_tag_args", "run_tag", "Caption images with WD1.4 ONNX taggers"),
    "tags": ("lib_lora.tagging.commands", "add_tags_edit_args", "run_tags_edit", "Bulk tag edits (remove, replace, merge, front, trigger, prune, undo)"),
    "inspect": ("lib_lora.networks.inspect", "add_inspect_args", "run_inspect", "Show a LoRA file: algorithm, ranks, targets, metadata, key matches"),
    "extract": ("lib_lora.ops.commands", "add_extract_args", "run_extract", "Extract a LoRA from two checkpoints"),
    "merge": ("lib_lora.ops.commands", "add_merge_args", "run_merge", "Merge LoRAs into a checkpoint or into one LoRA"),
    "resize": ("lib_lora.ops.commands", "add_resize_args", "run_resize", "Change a LoRA's rank"),
    "bench": ("lib_lora.bench", "add_bench_args", "run_bench", "Measure training (or --tool extract) speed and memory"),
    "ui": ("lib_lora.ui.standalone", "add_ui_args", "run_ui", "Serve the Train LoRA tab on its own (127.0.0.1)"),
}


# command -> {old flag: the flags it is now}. Old spellings users may have in scripts, from before each
# option was generated from its config (issue 16): rank -> dim as in TrainConfig and sd-scripts, field
# names for the tagger's and prep's options, one --mode for merge, one --svd for extract.
RENAMED_FLAGS: dict[str, dict[str, tuple[str, ...]]] = {
    "extract": {"--rank": ("--dim",), "--conv-rank": ("--conv-dim",),
                "--lowrank": ("--svd", "lowrank"), "--exact": ("--svd", "exact")},
    "resize": {"--rank": ("--dim",), "--conv-rank": ("--conv-dim",)},
    "merge": {"--weight": ("--weights",), "--concat": ("--mode", "concat"),
              "--svd-rank": ("--mode", "svd", "--svd-dim"), "--svd-conv-rank": ("--svd-conv-dim",)},
    "tag": {"--model": ("--models",), "--exclude": ("--exclude-tags",), "--trigger": ("--trigger-word",),
            "--keep-junk": ("--no-remove-junk-tags",), "--keep-underscores": ("--no-replace-underscores",),
            "--workers": ("--decode-workers",)},
    "check": {"--trigger": ("--trigger-word",)},
    "prep": {"--no-upscale": ("--no-upscale-small",), "--no-flatten": ("--no-flatten-alpha",)},
    "bench": {"--rank": ("--dim",)},
    "grid": {"--prompt": ("--prompts",)},
}


def renamed_to_current(argv: list[str], renamed: dict[str, tuple[str, ...]], command: str) -> list[str]:
    """`argv` with each old flag (`--rank 8`, `--rank=8`) spelled as its new one, saying so on stderr."""
    out: list[str] = []
    for at, arg in enumerate(argv):
        if arg == "--":             # what follows is positional, whatever it looks like
            return out + argv[at:]
        old, eq, value = arg.partition("=")
        new = renamed.get(old) if old.startswith("--") else None
        if new is None:
            out.append(arg)
            continue
        print(f"warning: `{command} {old}` is now `{command} {' '.join(new)}`; the old name will be removed",
              file=sys.stderr)
        out.extend(new[:-1] + ((new[-1] + eq + value),) if eq else new)
    return out


class OneLineParser(argparse.ArgumentParser):
    """A command-line mistake is one line naming the command and its --help, with argparse's exit status 2.
    A command's parser spells its renamed flags (RENAMED_FLAGS) the new way before parsing."""

    renamed_flags: dict[str, tuple[str, ...]] = {}
    command = ""

    def parse_known_args(self, args=None, namespace=None):
        if self.renamed_flags:
            args = renamed_to_current(list(sys.argv[1:] if args is None else args), self.renamed_flags,
                                      self.command)
        return super().parse_known_args(args, namespace)

    def error(self, message: str):
        print(f"error: {message} ({self.prog}). Run `{self.prog} --help` to see the options", file=sys.stderr)
        raise SystemExit(2)


def one_line(err: BaseException) -> str:
    return " ".join(str(err).split("\n"))


def _add_config_args(p: argparse.ArgumentParser, *, config: str = "", required: bool = False) -> None:
    """--set for every command that reads a run config (train, config, grid), and --config where one is read."""
    if config:
        p.add_argument("--config", required=required, help=config)
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE",
                   help="override one option of the run config, e.g. --set network.dim=16 (repeatable; "
                        "`config --out run.toml` lists them all)")


def _add_train_args(p: argparse.ArgumentParser) -> None:
    _add_config_args(p, config="run config (TOML); see `config --out run.toml`")
    p.add_argument("--resume", metavar="DIR", help="continue the run saved in DIR (its output folder)")
    p.add_argument("--more-epochs", type=int, default=0, help="with --resume: train N epochs beyond the saved plan")
    p.add_argument("--dry-run", action="store_true", help="print the plan (images, steps, buckets) and stop")


def cmd_train(args: argparse.Namespace) -> int:
    from .config import TrainConfig, load_train_config
    from . import options
    from .training import train
    from .training.cli_hooks import PrintHooks
    from .training import distributed as dist

    if args.resume and not args.config:
        args.config = str(_resume_config(Path(args.resume)))
    cfg = load_train_config(args.config, args.overrides) if args.config else \
        options.apply_overrides(TrainConfig, TrainConfig(), args.overrides)
    if not cfg.dataset.train_dir.strip():     # empty would train on the current folder, whatever it holds
        raise LoraError("No training folder is set (dataset.train_dir)", where=args.config or "command line",
                        fix="Set it in the config (`python -m lib_lora config --out run.toml` writes one) "
                            "or pass --set dataset.train_dir=FOLDER")
    if args.more_epochs and not args.resume:
        raise LoraError("--more-epochs only extends a resumed run", where="command line",
                        fix="Add --resume OUTPUT_FOLDER, or set training.epochs for a new run")
    if args.resume and args.more_epochs:
        if args.more_epochs < 1:
            raise LoraError(f"--more-epochs {args.more_epochs} is not a number of epochs to add", where="command line",
                            fix="Give a whole number of at least 1")
        cfg.training.epochs += args.more_epochs
    distributed = dist.init_from_env()
    # a dry run only plans: no model is loaded, so it answers in a second
    model = None if args.dry_run else _load_model(cfg, dist.local_device() if distributed else cfg.training.device)
    hooks = PrintHooks(print if dist.is_main() else (lambda *_: None))
    hooks.install_sigint()
    result = train(cfg, model, [hooks], resume_dir=args.resume, dry_run=args.dry_run)
    if dist.is_main() and not args.dry_run:
        print(json.dumps({"files": result.files, "steps": result.steps, "final_loss": result.final_loss,
                          "stopped": result.stopped_reason or None}, indent=1))
    return 0 if result.stopped_reason in ("", "cancelled") else 3


def _resume_config(out_dir: Path) -> Path:
    """The TOML of the one run in `out_dir` that has a saved state (a WebUI Lora folder holds many runs)."""
    from .training.saving import state_file

    if not out_dir.is_dir():
        raise LoraError("The run folder to resume does not exist or is not a folder", where=str(out_dir),
                        fix="Give --resume the output folder of the run (where its LoRA files and state are)")
    tomls = sorted(out_dir.glob("*.toml"))
    if not tomls:
        raise LoraError("The run folder has no config to resume with", where=str(out_dir),
                        fix="Pass --config with the run's TOML (written beside its LoRA files)")
    candidates = [t for t in tomls if state_file(out_dir, t.stem).exists()] or tomls
    if len(candidates) > 1:
        raise LoraError(f"The folder holds several runs that can be resumed: {', '.join(t.stem for t in candidates)}",
                        where=str(out_dir), fix=f"Say which with --config {out_dir / candidates[0].name} (or another)")
    return candidates[0]


def _load_model(cfg, device: str):
    from .models.base_model import load_base_model

    return load_base_model(cfg.model, device, cfg.training.mixed_precision)


DEMO_FOLDERS = {"dataset", "base_model", "lora", "grid"}


def cmd_demo(args: argparse.Namespace) -> int:
    from .demo import print_summary, run_demo

    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise LoraError("The demo folder is a file, not a folder", where=str(out),
                        fix="Give --out a new or empty folder")
    # the demo writes these four folders; anything else there is the user's, and stays untouched by refusing
    foreign = sorted(p.name for p in out.iterdir() if p.name not in DEMO_FOLDERS) if out.is_dir() else []
    if foreign:
        raise LoraError(f"The demo folder already holds other files ({', '.join(foreign[:3])})", where=str(out),
                        fix="Give --out a new or empty folder (or one an earlier demo wrote)")
    print_summary(run_demo(out))
    return 0


def cmd_config(args: argparse.Namespace) -> int:
    from .config import TrainConfig, dumps_train_config
    from .fileio import write_text
    from . import options

    cfg = options.apply_overrides(TrainConfig, TrainConfig(), args.overrides)
    text = dumps_train_config(cfg)
    if args.out:
        write_text(args.out, text)
        print(f"wrote {args.out}")
    else:
        print(text)
    return 0


# the grid renders with the run's [sample] options; these flags override them for one grid
GRID_SKIPS = ("every_n_epochs",)


def _add_grid_args(p: argparse.ArgumentParser) -> None:
    from . import options
    from .config import SampleConfig

    _add_config_args(p, config="the run's TOML", required=True)
    p.add_argument("--out", help="PNG to write (default: <output_dir>/<output_name>-grid.png)")
    options.add_arguments(p.add_argument_group("override the run's [sample] options for this grid"), SampleConfig,
                          skip=GRID_SKIPS)


def cmd_grid(args: argparse.Namespace) -> int:
    from . import options
    from .config import SampleConfig, load_train_config
    from .evaluation.render_diffusers import render_epoch_weight_grid
    from .training.saving import list_epoch_files

    cfg = load_train_config(args.config, args.overrides)
    sample = cfg.sample = options.from_namespace(SampleConfig, args, base=cfg.sample)
    files = list_epoch_files(cfg.output.output_dir, cfg.output.output_name)
    if not files:
        raise LoraError("No epoch files found for this run", where=cfg.output.output_dir,
                        fix="Train first, or point --config at the run's TOML")
    out = Path(args.out or Path(cfg.output.output_dir) / f"{cfg.output.output_name}-grid.png")
    _check_grid_out(out, cfg)
    model = _load_model(cfg, cfg.training.device)
    guard = WriteGuard([resolved(out).parent], protected=files, purpose="grid")
    with guarded(guard):
        print(f"grid: {render_epoch_weight_grid(model, files, sample, out)}")
    return 0


def _check_grid_out(out: Path, cfg) -> None:
    """The grid may be written anywhere asked, except over a file of the run's dataset (its images)."""
    from .errors import UnsafeWriteError

    trees = [t for t in (cfg.dataset.train_dir, cfg.dataset.reg_dir) if t]
    if (out.exists() or out.is_symlink()) and any(is_within(out, tree) for tree in trees):
        raise UnsafeWriteError("The grid would replace a file of the run's dataset", where=str(out),
                               fix="Give --out a new file name, outside the dataset folders")


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(prog="python -m lib_lora", description="Train LoRA: headless commands")
    parser.add_argument("-v", "--verbose", action="store_true")
    sub = parser.add_subparsers(dest="command", required=True)
    p = _command(sub, "demo", help="make a tiny dataset and model, train a LoRA, render a grid (< 60 s on CPU)")
    p.add_argument("--out", required=True, help="folder for everything the demo writes")
    p.set_defaults(func=cmd_demo)
    p = _command(sub, "train", help="train a LoRA from a config file")
    _add_train_args(p)
    p.set_defaults(func=cmd_train)
    p = _command(sub, "config", help="write a config template with every option and its help")
    p.add_argument("--out", help="file to write (default: print)")
    _add_config_args(p)
    p.set_defaults(func=cmd_config)
    p = _command(sub, "grid", help="render the epoch x weight grid of a run (diffusers backend)")
    _add_grid_args(p)
    p.set_defaults(func=cmd_grid)
    for name, (module, add_fn, run_fn, help_text) in EXTERNAL_COMMANDS.items():
        p = _command(sub, name, help=help_text)
        try:
            mod = importlib.import_module(module)
            getattr(mod, add_fn)(p)
            p.set_defaults(func=getattr(mod, run_fn))
        except (ImportError, AttributeError) as e:  # a command whose module is missing says so when used
            p.set_defaults(func=lambda a, e=e, n=name: _unavailable(n, e))
    return parser


def _command(sub, name: str, **kwargs) -> OneLineParser:
    """The parser of one command, which knows its renamed flags."""
    p = sub.add_parser(name, **kwargs)
    p.command, p.renamed_flags = name, RENAMED_FLAGS.get(name, {})
    return p


def _unavailable(name: str, err: Exception) -> int:
    raise LoraError(f"The {name} command is not available in this installation ({err})",
                    fix="Reinstall the extension or run `bash .ci/setup`")


def main(argv: list[str] | None = None) -> int:
    # a file name that is not valid UTF-8 (or not encodable on a Windows code page) is printed as
    # \xNN instead of ending the command with UnicodeEncodeError half-way through its output
    for stream in (sys.stdout, sys.stderr):
        if hasattr(stream, "reconfigure"):
            stream.reconfigure(errors="backslashreplace")
    parser = build_parser()
    for at, arg in enumerate(sys.argv[1:] if argv is None else argv, start=1):
        if "\0" in arg:     # no shell passes one; a caller in-process can, and os calls fail on it
            print(f"error: Argument {at} of the command line holds a NUL character ({arg!r}). "
                  "Remove the NUL (\\0) from it", file=sys.stderr)
            return 2
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING, format="%(levelname)s %(message)s")
    try:
        return int(args.func(args) or 0)
    except LoraError as e:
        print(f"error: {one_line(e)}", file=sys.stderr)
        return 2
    except BrokenPipeError:     # the reader of our output stopped early (`| head`): nothing went wrong here
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())   # so the exit's flush stays quiet
        return 0
    except OSError as e:    # a file the user named cannot be opened, read or written
        where = f" ({e.filename})" if e.filename else ""
        print(f"error: {one_line(e.strerror or e)}{where}. Check the path and its permissions", file=sys.stderr)
        return 2
