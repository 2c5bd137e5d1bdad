"""CLI entry functions for `tag` and `tags` (bulk edits); lib_lora/cli.py wires them.

`add_*_args(parser)` adds options to an argparse subparser, the tagging options
generated from TaggingConfig; `run_*` takes the parsed namespace and returns an
exit code. User-fixable errors print as one line.
"""
from __future__ import annotations

import argparse
import sys

from ..config import TaggingConfig
from ..dataset.tags import split_tags
from ..errors import LoraError
from ..options import add_arguments, from_namespace
from . import edits
from .run import run_tagging
from .snapshot import undo_last

EDIT_OPS = ("remove", "replace", "merge", "front", "add-trigger", "prune", "undo")


def _fail(err: LoraError) -> int:
    print(f"error: {err}", file=sys.stderr)
    return 2


def add_tag_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("dir", help="Folder of images (searched recursively)")
    add_arguments(parser, TaggingConfig)


def tagging_config_from_args(args: argparse.Namespace) -> TaggingConfig:
    """The options given; tags to exclude may come comma separated in one flag, as they are written."""
    cfg = from_namespace(TaggingConfig, args)
    cfg.exclude_tags = split_tags(",".join(cfg.exclude_tags))
    return cfg


def run_tag(args: argparse.Namespace) -> int:
    def progress(done: int, total: int, _path: str) -> None:
        print(f"\rtagged {done}/{total}", end="", file=sys.stderr, flush=True)
    try:
        cfg = tagging_config_from_args(args)
        result = run_tagging(args.dir, cfg, progress=progress)
    except LoraError as err:
        return _fail(err)
    print(file=sys.stderr)
    for name, provider in result.providers.items():
        print(f"{name}: running on {provider}")
    print(f"{result.written} captions written, {result.skipped} kept as they were, {len(result.failed)} failed"
          " (undo with `tags DIR undo`)")
    for path, why in result.failed:
        print(f"  failed {path}: {why}")
    return 0


def add_tags_edit_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("dir", help="Folder whose captions to edit (searched recursively)")
    parser.add_argument("op", choices=EDIT_OPS, help="remove TAGS | replace OLD NEW | merge TAGS PHRASE | "
                        "front TAGS | add-trigger WORD | prune PATTERNS [--min-count N] | undo")
    parser.add_argument("values", nargs="*", help="Comma-separated tags (quote them) and arguments of the edit")
    parser.add_argument("--min-count", type=int, default=0, help="prune: also drop tags used in fewer captions")
    add_arguments(parser, TaggingConfig, only=("caption_extension",))


def _edit_for(args: argparse.Namespace) -> edits.TagEdit:
    values = args.values
    need = {"replace": 2, "merge": 2, "add-trigger": 1, "remove": 1, "front": 1}.get(args.op, 0)
    if len(values) < need:
        raise LoraError(f"`tags {args.op}` needs {need} argument(s), got {len(values)}", where="command line",
                        fix='Example: tags DIR replace "old tag" "new tag"; tags DIR merge "a, b" "a and b"')
    tags = split_tags(",".join(values))
    if args.op == "remove":
        return edits.remove_tags(tags)
    if args.op == "replace":
        return edits.replace_tag(values[0], values[1])
    if args.op == "merge":
        return edits.merge_tags(split_tags(values[0]), values[1])
    if args.op == "front":
        return edits.move_to_front(tags)
    if args.op == "add-trigger":
        return edits.add_trigger(values[0])
    counts = edits.tag_counts(args.dir, args.caption_extension) if args.min_count else None
    return edits.prune_tags(tags, counts, args.min_count)


def run_tags_edit(args: argparse.Namespace) -> int:
    try:
        args.caption_extension = from_namespace(TaggingConfig, args).caption_extension   # given, or the default
        if args.op == "undo":
            print(f"{undo_last(args.dir)} caption files restored")
            return 0
        result = edits.apply_bulk_edit(args.dir, _edit_for(args), args.op, args.caption_extension)
    except LoraError as err:
        return _fail(err)
    print(f"{args.op}: {result.changed} of {result.total} captions changed (undo with `tags DIR undo`)")
    return 0
