"""CLI entry functions for `check`, `prep` and `import` (lib_lora/cli.py wires them).

Each `add_*_args(parser)` adds options to an argparse subparser, generated from
the options of the configs they share with training and the tab (DatasetConfig,
TrainingConfig, PrepConfig); each `run_*` takes the parsed namespace and returns
an exit code. Errors the user can fix are printed as one line (what, where, what
to do), never as a traceback.
"""
from __future__ import annotations

import argparse
import json
import sys

from ..config import DatasetConfig, PrepConfig, TrainConfig, TrainingConfig
from ..errors import DatasetError, LoraError
from ..options import add_arguments, from_namespace
from ..safe_paths import shown
from .balance import KINDS
from .importer import import_dataset
from .prep import run_prep as prep_folder
from .report import ReportOptions, build_report
from .report_text import format_report


def _fail(err: LoraError) -> int:
    print(f"error: {shown(str(err))}", file=sys.stderr)
    return 2


# the options of a run that the report's counts and step plan depend on, as the run declares them
CHECK_DATASET_FIELDS = ("trigger_word", "caption_extension", "reg_dir", "resolution", "enable_bucket",
                        "min_bucket_reso", "max_bucket_reso", "bucket_reso_steps", "bucket_no_upscale",
                        "validation_split")
CHECK_TRAINING_FIELDS = ("epochs", "batch_size", "gradient_accumulation_steps", "max_train_steps", "seed")


def add_check_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("dir", help="Dataset folder: the parent of the <repeats>_<name> folders")
    parser.add_argument("--json", action="store_true", help="Print the report as JSON")
    parser.add_argument("--kind", choices=KINDS, default="character",
                        help="What the LoRA is for; sets the image and step targets")
    add_arguments(parser, DatasetConfig, only=CHECK_DATASET_FIELDS)
    add_arguments(parser, TrainingConfig, only=CHECK_TRAINING_FIELDS)
    add_arguments(parser, PrepConfig, only=("max_aspect",))


def report_options_from_args(args: argparse.Namespace) -> ReportOptions:
    """The report of the run these options describe (its steps counted as the trainer takes them)."""
    run = TrainConfig(dataset=from_namespace(DatasetConfig, args), training=from_namespace(TrainingConfig, args))
    options = ReportOptions.for_run(run, kind=args.kind)
    options.max_aspect = from_namespace(PrepConfig, args).max_aspect
    return options


def run_check(args: argparse.Namespace) -> int:
    """Print the dataset report. Exit 0 whatever it finds (it is advice); 2 if the folder cannot be read."""
    try:
        options = report_options_from_args(args)
        report = build_report(args.dir, options)
    except LoraError as err:
        return _fail(err)
    if args.json:   # file names that are not UTF-8 stay valid JSON as \udcXX escapes
        text = json.dumps(report.to_dict(), ensure_ascii=False, indent=1)
        print(text if shown(text) == text else json.dumps(report.to_dict(), ensure_ascii=True, indent=1))
    else:           # and print as \xNN in the text report instead of stopping it
        print(shown(format_report(report)))
    return 0


def add_prep_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("src", help="Folder of images (a dataset folder or any folder)")
    parser.add_argument("dst", nargs="?", default=None, help="Folder for the fixed copies (same layout)")
    add_arguments(parser, PrepConfig)


def run_prep(args: argparse.Namespace) -> int:
    try:
        cfg = from_namespace(PrepConfig, args)
        if cfg.in_place and args.dst is not None:   # which one the user meant is a guess; originals are at stake
            raise DatasetError("Both a destination folder and --in-place were given", where=str(args.dst),
                               fix="Give either the DST folder for fixed copies or --in-place, not both")
        result = prep_folder(args.src, args.dst, cfg)
    except LoraError as err:
        return _fail(err)
    print(f"{len(result.written)} images written, {len(result.copied)} copied unchanged, "
          f"{result.flattened} flattened, {result.upscaled} upscaled, {len(result.skipped)} skipped")
    for path, why in result.skipped:
        print(f"  skipped {shown(path)}: {why}")
    if result.renamed:
        print(f"{len(result.renamed)} outputs renamed so that no two images share a name (and a caption):")
    for source, output in result.renamed:
        print(f"  {shown(source)} -> {shown(output.name)}")
    return 0


def add_import_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("sources", nargs="+", help="Image/caption files, folders or zips")
    parser.add_argument("--root", required=True, help="Datasets root folder")
    parser.add_argument("--name", required=True, help="Dataset name (a folder under the root)")
    parser.add_argument("--concept", default="", help="Concept name for images not in a <repeats>_<name> folder")
    parser.add_argument("--repeats", type=int, default=10, help="Repeats for that concept folder")
    parser.add_argument("--reg", action="store_true", help="These are regularization images")
    add_arguments(parser, DatasetConfig, only=("caption_extension",))


def run_import(args: argparse.Namespace) -> int:
    try:
        result = import_dataset(args.sources, args.root, args.name, args.concept, args.repeats, args.reg,
                                from_namespace(DatasetConfig, args).caption_extension)
    except LoraError as err:
        return _fail(err)
    print(f"{len(result.imported)} images imported into {shown(result.train_dir)}")
    for source, why in result.skipped:
        print(f"  skipped {source}: {why}")
    return 0
