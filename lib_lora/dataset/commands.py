"""CLI entry functions for `check`, `prep` and `import` (lib_lora/cli.py wires them).

Each `add_*_args(parser)` adds options to an argparse subparser; each `run_*`
takes the parsed namespace and returns an exit code. Errors the user can fix
are printed as one line (what, where, what to do), never as a traceback.
"""
from __future__ import annotations

import argparse
import json
import sys

from ..config import PrepConfig
from ..errors import DatasetError, LoraError
from ..safe_paths import shown
from .balance import KINDS
from .importer import import_dataset
from .prep import run_prep as prep_folder
from .report import ReportOptions, build_report
from .report_text import format_report


def _fail(err: LoraError) -> int:
    print(f"error: {shown(str(err))}", file=sys.stderr)
    return 2


def add_check_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("dir", help="Dataset folder: the parent of the <repeats>_<name> folders")
    parser.add_argument("--json", action="store_true", help="Print the report as JSON")
    parser.add_argument("--kind", choices=KINDS, default="character",
                        help="What the LoRA is for; sets the image and step targets")
    parser.add_argument("--trigger", default="", help="Trigger word expected first in every caption")
    parser.add_argument("--caption-extension", default=".txt", help="Extension of caption files")
    parser.add_argument("--resolution", type=int, default=512, help="Training size in pixels")
    parser.add_argument("--epochs", type=int, default=10, help="Planned epochs (for the step count)")
    parser.add_argument("--batch-size", type=int, default=2, help="Planned batch size (for the step count)")
    parser.add_argument("--max-aspect", type=float, default=2.0, help="Flag images longer than 1:this")


def run_check(args: argparse.Namespace) -> int:
    """Print the dataset report. Exit 0 whatever it finds (it is advice); 2 if the folder cannot be read."""
    options = ReportOptions(kind=args.kind, caption_extension=args.caption_extension, trigger_word=args.trigger,
                            resolution=args.resolution, epochs=args.epochs, batch_size=args.batch_size,
                            max_aspect=args.max_aspect)
    try:
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
    parser.add_argument("--crop", choices=("none", "centre", "focal", "split"), default="none",
                        help="none (bucketed later), centre square, focal (square on the subject), "
                             "split (oversized images into overlapping squares)")
    parser.add_argument("--resolution", type=int, default=512, help="Target size in pixels")
    parser.add_argument("--no-upscale", action="store_true", help="Do not upscale small images (else at most 2x)")
    parser.add_argument("--upscaler", default=PrepConfig().upscaler,
                        help="Upscaler for small images; only lanczos here (the WebUI's own upscalers, such as "
                             "ESRGAN, run when you preprocess from the Train LoRA tab inside the WebUI)")
    parser.add_argument("--no-flatten", action="store_true", help="Keep transparency")
    parser.add_argument("--no-dedupe", action="store_true", help="Keep exact and near duplicates")
    parser.add_argument("--in-place", action="store_true", help="Overwrite the originals (not advised)")
    parser.add_argument("--max-aspect", type=float, default=2.0, help="Split images longer than 1:this")
    parser.add_argument("--caption-extension", default=".txt", help="Extension of caption files")


def run_prep(args: argparse.Namespace) -> int:
    cfg = PrepConfig(crop=args.crop, resolution=args.resolution, upscale_small=not args.no_upscale,
                     flatten_alpha=not args.no_flatten, dedupe=not args.no_dedupe, in_place=args.in_place,
                     max_aspect=args.max_aspect, caption_extension=args.caption_extension, upscaler=args.upscaler)
    try:
        if args.in_place and args.dst is not None:   # which one the user meant is a guess; originals are at stake
            raise DatasetError("Both a destination folder and --in-place were given", where=str(args.dst),
                               fix="Give either the DST folder for fixed copies or --in-place, not both")
        from ..options import validate
        validate(cfg)
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
    parser.add_argument("--caption-extension", default=".txt", help="Extension of caption files")


def run_import(args: argparse.Namespace) -> int:
    try:
        result = import_dataset(args.sources, args.root, args.name, args.concept, args.repeats, args.reg,
                                args.caption_extension)
    except LoraError as err:
        return _fail(err)
    print(f"{len(result.imported)} images imported into {shown(result.train_dir)}")
    for source, why in result.skipped:
        print(f"  skipped {source}: {why}")
    return 0
